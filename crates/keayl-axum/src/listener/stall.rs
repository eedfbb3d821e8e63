//! Noticing a client that stopped reading, from the TCP window it
//! advertises.
//!
//! A server cannot see whether a client reads until the kernel buffers on
//! both sides are full: for an SSE stream of one small event a second that
//! takes about an hour and a half. The client's advertised receive window
//! shows it much sooner: data the client has not read keeps it below its
//! widest, and a client that has read everything advertises its widest
//! again. (The window may still grow a little while nothing is read, as
//! the client's kernel raises its threshold; that raises the widest too.)
//! A connection whose window stayed below its widest at every look for the
//! whole stall timeout has a client that did not catch up once while data
//! waited for it.

use std::os::fd::RawFd;
use std::time::Duration;

/// The client's advertised receive window in bytes (Linux `TCP_INFO`),
/// `None` where the kernel does not say.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn peer_window(fd: RawFd) -> Option<u32> {
    // SAFETY: `info` is a plain C struct the kernel fills up to `len`
    // bytes; `fd` is an open TCP socket owned by the caller for the call.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        let needed = std::mem::offset_of!(libc::tcp_info, tcpi_snd_wnd) + 4;
        (rc == 0 && len as usize >= needed).then_some(info.tcpi_snd_wnd)
    }
}

#[cfg(not(target_os = "linux"))]
fn peer_window(_fd: RawFd) -> Option<u32> {
    None
}

/// Watches one connection's window.
#[derive(Debug)]
pub(crate) struct StallWatch {
    widest: u32,
    /// Checks in a row with the window below its widest.
    stalled_checks: u32,
    limit: u32,
}

impl StallWatch {
    /// How often the window is looked at.
    pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

    pub(crate) fn new(timeout: Duration) -> Self {
        let limit = timeout.as_secs_f64() / Self::INTERVAL.as_secs_f64();
        StallWatch {
            widest: 0,
            stalled_checks: 0,
            limit: (limit.ceil() as u32).max(1),
        }
    }

    /// Record one look at `window`; whether the client is now stalled.
    pub(crate) fn observe(&mut self, window: u32) -> bool {
        if window >= self.widest {
            self.widest = window;
            self.stalled_checks = 0;
        } else {
            self.stalled_checks += 1;
        }
        self.stalled_checks >= self.limit
    }
}

/// Completes once the client on `fd` has read nothing for `timeout` while
/// data waited for it; never where the window cannot be read.
///
/// `fd` must stay open while the future runs (the caller drops the future
/// before the socket).
pub(crate) async fn stalled(fd: RawFd, timeout: Duration) {
    let mut watch = StallWatch::new(timeout);
    let mut tick = tokio::time::interval(StallWatch::INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match peer_window(fd) {
            Some(window) if watch.observe(window) => return,
            Some(_) => {}
            None => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_that_only_shrinks_is_a_stall() {
        let mut w = StallWatch::new(Duration::from_secs(3));
        assert!(!w.observe(65_000));
        assert!(!w.observe(64_000));
        assert!(!w.observe(63_000));
        assert!(w.observe(63_000), "three checks below the widest");
    }

    #[test]
    fn only_catching_up_resets() {
        let mut w = StallWatch::new(Duration::from_secs(3));
        for window in [65_000, 60_000, 55_000, 65_000, 60_000, 58_000, 70_000] {
            assert!(!w.observe(window), "{window}");
        }
        // Growth below the widest is not catching up.
        assert!(!w.observe(60_000));
        assert!(!w.observe(62_000));
        assert!(w.observe(64_000));
        // An idle connection keeps its widest window: never a stall.
        let mut idle = StallWatch::new(Duration::from_secs(1));
        for _ in 0..10 {
            assert!(!idle.observe(65_000));
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_client_that_reads_nothing_shrinks_its_window() {
        use std::os::fd::AsRawFd;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let fd = server.as_raw_fd();
        let mut watch = StallWatch::new(Duration::from_secs(10));
        assert!(!watch.observe(peer_window(fd).expect("TCP_INFO on Linux")));
        let mut seen = Vec::new();
        for _ in 0..60 {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), server.write_all(&[b'x'; 2000]))
                    .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            seen.push(peer_window(fd).unwrap());
        }
        // After the first writes, the window never comes back to its
        // widest: ten looks in a row below it are a stall.
        let stalled = seen[seen.len() - 10..]
            .iter()
            .map(|w| watch.observe(*w))
            .last();
        assert_eq!(stalled, Some(true), "windows {seen:?}");
        drop(client);
    }
}
