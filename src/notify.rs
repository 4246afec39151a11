//! systemd's notification protocol (Type=notify): `READY=1` once the initial sync is done and
//! every directory is watched, `STATUS=…` when the state changes, `STOPPING=1` at the end, and
//! `WATCHDOG=1` every half WATCHDOG_USEC when the unit sets one.
//!
//! The socket is connected by root before the fork, because the worker cannot connect later
//! (seccomp denies connect; landlock scopes abstract sockets, so only a pathname NOTIFY_SOCKET
//! works, which is what systemd uses). Sending on it is the worker's only use of it.
#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

pub struct Notifier {
    sock: UnixDatagram,
    watchdog: Option<Duration>,
    next_ping: Option<Instant>,
}

impl Notifier {
    /// Connects to $NOTIFY_SOCKET (if set and a pathname) and removes the variable from the
    /// environment. None when systemd did not ask for notifications.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        std::env::remove_var("NOTIFY_SOCKET");
        let p = std::path::PathBuf::from(&path);
        if !p.is_absolute() {
            crate::warning!(
                "NOTIFY_SOCKET={}: only a pathname socket can be used (the sandboxed worker cannot reach an abstract one); no notifications",
                p.display()
            );
            return None;
        }
        let sock = UnixDatagram::unbound().and_then(|s| s.connect(&p).map(|()| s));
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                crate::warning!("NOTIFY_SOCKET={}: {e}; no notifications", p.display());
                return None;
            }
        };
        // WATCHDOG_PID, when set, names the process that must ping: us (the main pid).
        let for_us =
            std::env::var("WATCHDOG_PID").map_or(true, |p| p == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        std::env::remove_var("WATCHDOG_USEC");
        std::env::remove_var("WATCHDOG_PID");
        Some(Notifier {
            sock,
            watchdog,
            next_ping: watchdog.map(|w| Instant::now() + w),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    pub fn send(&self, msg: &str) {
        if let Err(e) = self.sock.send(msg.as_bytes()) {
            crate::debug!(1, "sd_notify {msg:?}: {e}");
        }
    }

    /// When the next watchdog ping is due (for the event loop's timeout).
    pub fn next_ping(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Sends WATCHDOG=1 if it is due.
    pub fn ping(&mut self, now: Instant) {
        if let (Some(w), Some(at)) = (self.watchdog, self.next_ping) {
            if now >= at {
                self.send("WATCHDOG=1");
                self.next_ping = Some(now + w);
            }
        }
    }
}
