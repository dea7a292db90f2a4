//! Socket set-up shared by everything that accepts tracker connections (the gateway and the
//! simulator's ceiling server), so that both are measured with the same listener.
use std::net::SocketAddr;

use tokio::net::TcpListener;

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
