//! The worker's landlock domain: no filesystem access at all, no TCP bind/connect, no abstract
//! unix socket connections and no signals to processes outside the domain.
//!
//! The worker needs no filesystem: it works on inherited descriptors and memfds, the rules file
//! is read by the helper and sent over the socket. So every access right is handled and no rule
//! grants anything back.
//!
//! ABI choice: pinned to [`ABI::V7`]. The landlock crate (0.4.7 here) knows ABIs up to V9, but
//! V7 is what DESIGN.md targets and what the deployment kernels (6.15+, 6.18 on the test
//! machines) provide, so the ruleset is *fully* enforced there; pinning V8/V9 would request
//! V9's `ResolveUnix` right (pathname unix socket connect) which these kernels lack and would
//! turn the status into PartiallyEnforced without adding anything today (V8 adds no
//! filesystem right, only the all-threads flag, and the worker is single-threaded). The
//! seccomp filter covers the missing piece: the worker cannot create or connect sockets.
//! Raise the pin when the deployment kernels have V9 and the tests were run there.

use super::{Result, SandboxError};
use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetStatus,
    Scope, ABI,
};

/// The landlock ABI this code was written and tested for.
pub const PINNED_ABI: ABI = ABI::V7;

/// How much of the requested landlock restriction the kernel enforces. The caller logs it;
/// anything but `FullyEnforced` is a visible downgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LandlockStatus {
    /// Every handled right and scope of [`PINNED_ABI`] is enforced.
    FullyEnforced,
    /// The kernel supports an older ABI: some rights or scopes are not enforced.
    PartiallyEnforced,
    /// The kernel has no landlock (not built in, or not enabled with `lsm=`).
    NotEnforced,
}

impl std::fmt::Display for LandlockStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LandlockStatus::FullyEnforced => "fully enforced",
            LandlockStatus::PartiallyEnforced => {
                "partially enforced (the kernel's landlock ABI is older than the pinned one)"
            }
            LandlockStatus::NotEnforced => {
                "not enforced (landlock is not available in this kernel; enable it with lsm=...,landlock)"
            }
        })
    }
}

/// Restrict the calling process (the worker) with the landlock domain described above, best
/// effort: on an older kernel the status says what is missing. Also sets no_new_privs.
///
/// Call it single-threaded and after every file the worker needs is open.
pub fn restrict_worker() -> Result<LandlockStatus> {
    let err =
        |step: &str, e: landlock::RulesetError| SandboxError::Landlock(format!("{step}: {e}"));
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(PINNED_ABI))
        .map_err(|e| err("handling the filesystem rights", e))?
        // Defence in depth on top of the private network namespace and the seccomp filter:
        // no TCP bind or connect either (ABI V4 rights, within the pin).
        .handle_access(AccessNet::from_all(PINNED_ABI))
        .map_err(|e| err("handling the network rights", e))?
        .scope(Scope::AbstractUnixSocket)
        .map_err(|e| err("scoping abstract unix sockets", e))?
        .scope(Scope::Signal)
        .map_err(|e| err("scoping signals", e))?
        .create()
        .map_err(|e| err("landlock_create_ruleset", e))?
        .restrict_self()
        .map_err(|e| err("landlock_restrict_self", e))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::FullyEnforced,
        RulesetStatus::PartiallyEnforced => LandlockStatus::PartiallyEnforced,
        RulesetStatus::NotEnforced => LandlockStatus::NotEnforced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::testutil::*;
    use nix::errno::Errno;
    use std::ffi::CString;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn worker_landlock_is_fully_enforced_and_denies_files() {
        // A world-readable file outside any allowance.
        let path = std::env::temp_dir().join(format!("clsync-landlock-{}", std::process::id()));
        std::fs::write(&path, b"secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cpath = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let out = in_child(|fd| {
            // Without the layer the read works...
            let f = child_open(&cpath);
            if f < 0 {
                return 2;
            }
            // SAFETY: closing the descriptor just opened.
            unsafe { libc::close(f) };
            let st = match restrict_worker() {
                Ok(s) => s,
                Err(_) => return 3,
            };
            if st != LandlockStatus::FullyEnforced {
                return 4;
            }
            // ...with it, it fails with EACCES.
            if child_open(&cpath) >= 0 {
                return 5;
            }
            if Errno::last() != Errno::EACCES {
                let _ = child_write(fd, Errno::last().desc().as_bytes());
                return 6;
            }
            // Writing and creating are denied too.
            // SAFETY: a valid NUL-terminated path, integer flags.
            let w = unsafe {
                libc::open(
                    c"/tmp/clsync-ll-new".as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o600,
                )
            };
            if w >= 0 || Errno::last() != Errno::EACCES {
                return 7;
            }
            // Signal scope: the parent is outside the domain.
            if nix::sys::signal::kill(nix::unistd::getppid(), None) != Err(Errno::EPERM) {
                return 8;
            }
            0
        });
        let _ = std::fs::remove_file(&path);
        out.assert_exit(0);
    }

    #[test]
    fn abstract_unix_socket_outside_domain_is_refused() {
        use nix::sys::socket::{
            bind, connect, socket, AddressFamily, SockFlag, SockType, UnixAddr,
        };
        use std::os::fd::AsRawFd;
        let name = format!("clsync-ll-test-{}", std::process::id());
        let listener = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let addr = UnixAddr::new_abstract(name.as_bytes()).unwrap();
        bind(listener.as_raw_fd(), &addr).unwrap();
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(4).unwrap()).unwrap();
        let out = in_child(|_| {
            if !matches!(restrict_worker(), Ok(LandlockStatus::FullyEnforced)) {
                return 2;
            }
            let s = match socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::empty(),
                None,
            ) {
                Ok(s) => s,
                Err(_) => return 3,
            };
            match connect(s.as_raw_fd(), &addr) {
                Err(Errno::EPERM) => 0,
                Ok(()) => 4,
                Err(_) => 5,
            }
        });
        assert_eq!(exited(&out.status), Some(0), "{:?}", out.status);
    }
}
