//! Socket set-up shared by everything that accepts tracker connections (the gateway and the
//! simulator's ceiling server), so that both are measured with the same listener.
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};

/// Accept backlog of a device listener. Fleets reconnect all at once after a network or gateway
/// outage; with `TcpListener::bind`'s backlog of 128 the excess SYNs are dropped and those
/// devices retry only after a one-second SYN timeout. The kernel caps it at net.core.somaxconn.
pub const DEVICE_BACKLOG: u32 = 8192;

/// Binds a device listener on `addr` (port 0 picks a free port) with [`DEVICE_BACKLOG`].
pub fn bind_device_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Restarting the gateway must not wait for old connections in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(DEVICE_BACKLOG)
}

/// Reads what the socket has into `buf`, without waiting: `WouldBlock` when nothing is there.
///
/// Goes through `AsyncRead::poll_read`, which, unlike `try_read_buf`, clears the socket's
/// readiness after a short read. With `try_read_buf` every frame cost a second `recvfrom` that
/// only returned `EAGAIN`. The gateway and the ceiling server both read this way, so that the
/// benchmark compares them with the same I/O. When nothing is there the no-op waker takes the
/// socket's reader slot for a moment; a connection loop polls `poll_read_ready` (or waits on
/// `readable`) with its own waker before it sleeps.
pub fn read_available(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match tokio_util::io::poll_read_buf(std::pin::Pin::new(stream), &mut cx, buf) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
    }
}
