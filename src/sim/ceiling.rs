//! The "ceiling" server: the least a JT808 platform must do per frame — find it, unescape it,
//! verify the check code, parse the header and body, answer — and nothing else (no sessions,
//! no auth check, no store). Benchmarks run the simulator against it to measure what the
//! simulator, the kernel and the codec allow on this machine, so the gateway's throughput can
//! be stated as a ratio of that ceiling.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, BytesMut};
use liengate_protocols::jt808::{
    encode_frame, parse_packet, BcdTime, DecodeOptions, Header, Split, Splitter, DEFAULT_MAX_FRAME,
    MAX_LOGICAL_FRAME,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::frames::{
    MSG_PLATFORM_RESPONSE, MSG_REGISTER, MSG_REGISTER_REPLY, MSG_SERVER_TIME, MSG_TERMINAL_RESPONSE,
};

/// Query server time (2019), answered with 0x8004.
const MSG_QUERY_TIME: u16 = 0x0004;
/// Bytes buffered per connection; frames are at most `DEFAULT_MAX_FRAME` (about 2 KB).
const MAX_READ_BUFFER: usize = 64 * 1024;
/// General-response results (JT/T 808-2013 §8.2).
const RESULT_OK: u8 = 0;
const RESULT_MESSAGE_ERROR: u8 = 2;

/// Counters of the ceiling server.
#[derive(Debug, Default)]
pub struct CeilingStats {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub frames: AtomicU64,
    pub rejected: AtomicU64,
}

/// Serves until `stop` is cancelled. At most `max_connections` connections are served at once;
/// connections beyond that are closed right after accept.
pub async fn serve(
    listener: TcpListener,
    max_connections: usize,
    stop: CancellationToken,
    stats: Arc<CeilingStats>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // Running out of descriptors must not end the server; the peer retries.
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return Ok(()),
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let stats = stats.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = connection(stream, &stats) => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, %err, "connection ended");
                    }
                }
                _ = stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}

async fn connection(mut stream: TcpStream, stats: &CeilingStats) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    // Buffers exist only while bytes are waiting, so an idle connection costs little more than
    // its task: the same shape a gateway needs to keep idle connections cheap.
    let mut rbuf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut splitter = Splitter::new(DEFAULT_MAX_FRAME);
    let mut platform_serial: u16 = 0;
    loop {
        stream.readable().await?;
        if rbuf.capacity() == 0 {
            rbuf.reserve(4096);
        }
        match crate::net::read_available(&mut stream, &mut rbuf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                if rbuf.is_empty() {
                    rbuf = BytesMut::new();
                }
                continue;
            }
            Err(err) => return Err(err),
        }
        loop {
            match splitter.next(&rbuf) {
                Split::Frame { frame, consumed } => {
                    answer(&rbuf[frame], &mut platform_serial, &mut out, stats);
                    rbuf.advance(consumed);
                }
                Split::Incomplete { consumed } => {
                    rbuf.advance(consumed);
                    break;
                }
                Split::Invalid { consumed, .. } => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    rbuf.advance(consumed);
                }
            }
        }
        if rbuf.len() > MAX_READ_BUFFER {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "read buffer bound exceeded",
            ));
        }
        if rbuf.is_empty() {
            rbuf = BytesMut::new();
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            // Answers are a few dozen bytes: keeping that small allocation is cheaper than
            // allocating again for every message.
            out.clear();
        }
    }
}

/// Appends the answer to one frame to `out` (nothing for a terminal's own 0x0001).
fn answer(wire: &[u8], platform_serial: &mut u16, out: &mut BytesMut, stats: &CeilingStats) {
    // On the stack for this call only, not kept per connection.
    let mut scratch = [0u8; MAX_LOGICAL_FRAME];
    let scratch = &mut scratch;
    let opts = DecodeOptions {
        skip_checksum: false,
        max_frame: DEFAULT_MAX_FRAME,
    };
    let (header, result) = match parse_packet(wire, scratch, &opts) {
        Ok(packet) => {
            let result = if packet.message().is_ok() {
                RESULT_OK
            } else {
                RESULT_MESSAGE_ERROR
            };
            (packet.header, result)
        }
        Err(err) => match err.header {
            Some(header) => (header, RESULT_MESSAGE_ERROR),
            None => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
    };
    if result != RESULT_OK {
        stats.rejected.fetch_add(1, Ordering::Relaxed);
    }
    stats.frames.fetch_add(1, Ordering::Relaxed);
    let mut body = [0u8; 32];
    let mut body_len = 5;
    let reply_id = match header.message_id {
        MSG_TERMINAL_RESPONSE => return,
        MSG_REGISTER if result == RESULT_OK => {
            // The code only has to be stable per terminal; the ceiling never checks it.
            let code = auth_code(&header);
            (&mut body[..2]).put_u16(header.serial);
            body[2] = RESULT_OK;
            body[3..3 + code.len()].copy_from_slice(&code);
            body_len = 3 + code.len();
            MSG_REGISTER_REPLY
        }
        MSG_QUERY_TIME if result == RESULT_OK => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            body[..6].copy_from_slice(&BcdTime::from_unix(now).0);
            body_len = 6;
            MSG_SERVER_TIME
        }
        _ => {
            (&mut body[..2]).put_u16(header.serial);
            (&mut body[2..4]).put_u16(header.message_id);
            body[4] = result;
            MSG_PLATFORM_RESPONSE
        }
    };
    let mut reply = Header::new(reply_id, header.terminal, *platform_serial, header.version);
    reply.protocol_version = header.protocol_version;
    *platform_serial = platform_serial.wrapping_add(1);
    encode_frame(&reply, &body[..body_len], out);
}

/// An 8-character code derived from the terminal id (FNV-1a), so no per-terminal state is kept.
fn auth_code(header: &Header) -> [u8; 8] {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in header.terminal.bytes() {
        hash = (hash ^ b as u32).wrapping_mul(0x0100_0193);
    }
    let hex = b"0123456789ABCDEF";
    let mut code = [0u8; 8];
    for (i, c) in code.iter_mut().enumerate() {
        *c = hex[((hash >> (28 - 4 * i)) & 0xf) as usize];
    }
    code
}

/// Binds `addr` like the gateway binds its device listener, and returns the listener and its
/// bound address (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = crate::net::bind_device_listener(addr)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
