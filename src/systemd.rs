//! sd_notify: READY=1, WATCHDOG=1, STATUS=, STOPPING=1 to systemd's socket. A no-op when
//! NOTIFY_SOCKET is unset (not under systemd, or Type= is not notify). Never fails the caller.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(socket) = UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        abstract_send(&socket, name, state)
    } else {
        socket.send_to(state.as_bytes(), std::path::Path::new(&path)).map(|_| ())
    };
    if let Err(e) = sent {
        log::debug!("sd_notify {state:?}: {e}");
    }
}

#[cfg(target_os = "linux")]
fn abstract_send(socket: &UnixDatagram, name: &[u8], state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(state.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn abstract_send(_: &UnixDatagram, _: &[u8], _: &str) -> std::io::Result<()> {
    Ok(())
}

/// How often to send WATCHDOG=1: half of WatchdogSec, or `None` when no watchdog is set.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    #[test]
    fn notify_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test alone reads or writes NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        super::notify("READY=1");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    }
}
