//! One terminal's TCP connection: connect (optionally from a chosen source address), read and
//! decode what the platform sends, write framed messages.
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use liengate_protocols::jt808::{
    decode_frame, DecodeOptions, Message, Split, Splitter, DEFAULT_MAX_FRAME, MAX_LOGICAL_FRAME,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;
use tokio::time::Instant;

use super::frames::{Identity, MSG_PLATFORM_RESPONSE, MSG_REGISTER_REPLY, MSG_SERVER_TIME};
use super::stats::ErrorKind;

/// Bytes a terminal buffers from the platform before it gives up on the stream. The platform
/// only sends short answers, so anything near this is a broken or hostile peer.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// What the platform sent, owned and reduced to what a terminal checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 0x8001 platform general response.
    General {
        reply_serial: u16,
        reply_id: u16,
        result: u8,
    },
    /// 0x8100 register response.
    Register {
        reply_serial: u16,
        result: u8,
        code: Vec<u8>,
    },
    /// 0x8004 server time (terminals here never ask for it).
    ServerTime,
    /// A platform request (e.g. 0x8103 set parameters) that the terminal answers with 0x0001.
    Request { id: u16, serial: u16 },
    /// A frame that breaks the protocol; counted with this kind.
    Wrong(ErrorKind),
}

/// The connection of one terminal.
pub struct Link {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    rbuf: BytesMut,
    splitter: Splitter,
    scratch: Box<[u8; MAX_LOGICAL_FRAME]>,
    answers: VecDeque<Answer>,
    /// Outgoing bytes collected until the next `flush`.
    pub out: BytesMut,
}

impl Link {
    /// Connects to `target`, binding to `source` first when given so that connections can be
    /// spread over several loopback addresses (each has its own ephemeral port range).
    pub async fn connect(
        target: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> std::io::Result<Link> {
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = tokio::time::timeout(timeout, socket.connect(target))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        Ok(Link {
            rd,
            wr,
            rbuf: BytesMut::with_capacity(1024),
            splitter: Splitter::new(DEFAULT_MAX_FRAME),
            scratch: Box::new([0u8; MAX_LOGICAL_FRAME]),
            answers: VecDeque::new(),
            out: BytesMut::with_capacity(256),
        })
    }

    /// Writes everything collected in `out`.
    pub async fn flush(&mut self) -> Result<(), ErrorKind> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.wr.write_all(&self.out).await;
        self.out.clear();
        result.map_err(|_| ErrorKind::Disconnected)
    }

    /// Takes the next decoded answer, if one is waiting.
    pub fn next_answer(&mut self) -> Option<Answer> {
        self.answers.pop_front()
    }

    /// Reads once from the socket and decodes every whole frame. Cancel-safe: bytes already
    /// read stay in the buffer.
    pub async fn read_some(&mut self, me: &Identity) -> Result<(), ErrorKind> {
        let n = self
            .rd
            .read_buf(&mut self.rbuf)
            .await
            .map_err(|_| ErrorKind::Disconnected)?;
        if n == 0 {
            return Err(ErrorKind::Disconnected);
        }
        self.decode_buffered(me);
        if self.rbuf.len() > MAX_READ_BUFFER {
            return Err(ErrorKind::BadFrame);
        }
        Ok(())
    }

    /// Waits for the next answer until `deadline`.
    pub async fn answer_until(
        &mut self,
        me: &Identity,
        deadline: Instant,
    ) -> Result<Answer, ErrorKind> {
        loop {
            if let Some(answer) = self.next_answer() {
                return Ok(answer);
            }
            match tokio::time::timeout_at(deadline, self.read_some(me)).await {
                Ok(result) => result?,
                Err(_) => return Err(ErrorKind::Timeout),
            }
        }
    }

    fn decode_buffered(&mut self, me: &Identity) {
        loop {
            match self.splitter.next(&self.rbuf) {
                Split::Frame { frame, consumed } => {
                    let answer = decode_answer(&self.rbuf[frame], &mut self.scratch, me);
                    self.answers.push_back(answer);
                    self.rbuf.advance(consumed);
                }
                Split::Incomplete { consumed } => {
                    self.rbuf.advance(consumed);
                    break;
                }
                Split::Invalid { consumed, .. } => {
                    self.answers.push_back(Answer::Wrong(ErrorKind::BadFrame));
                    self.rbuf.advance(consumed);
                }
            }
        }
    }
}

/// Decodes one platform frame and checks it is addressed to this terminal in its version.
pub fn decode_answer(wire: &[u8], scratch: &mut [u8; MAX_LOGICAL_FRAME], me: &Identity) -> Answer {
    let opts = DecodeOptions {
        skip_checksum: false,
        max_frame: DEFAULT_MAX_FRAME,
    };
    let (packet, message) = match decode_frame(wire, scratch, &opts) {
        Ok(decoded) => decoded,
        Err(_) => return Answer::Wrong(ErrorKind::BadFrame),
    };
    if packet.header.terminal != me.terminal || packet.header.version != me.version {
        return Answer::Wrong(ErrorKind::WrongHeader);
    }
    match message {
        Message::PlatformResponse(r) => Answer::General {
            reply_serial: r.reply_serial,
            reply_id: r.reply_id,
            result: r.result,
        },
        Message::RegisterReply(r) => Answer::Register {
            reply_serial: r.reply_serial,
            result: r.result,
            code: r.auth_code.to_vec(),
        },
        Message::ServerTime(_) => Answer::ServerTime,
        _ => {
            let id = packet.header.message_id;
            if id == MSG_PLATFORM_RESPONSE
                || id == MSG_REGISTER_REPLY
                || id == MSG_SERVER_TIME
                || id < 0x8000
            {
                // A known answer id whose body did not decode as such, or an uplink id sent downlink.
                Answer::Wrong(ErrorKind::UnexpectedMessage)
            } else {
                Answer::Request {
                    id,
                    serial: packet.header.serial,
                }
            }
        }
    }
}
