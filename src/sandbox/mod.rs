//! The syscall layer that confines the worker and the helper.
//!
//! Each submodule is one layer and can be applied (and tested) by itself:
//! - [`identity`]: resolve `--uid`/`--gid` style specs, drop to an unprivileged identity;
//! - [`caps`]: securebits, bounding/effective/permitted/inheritable/ambient capability sets;
//! - [`namespaces`]: the worker's private network, IPC, mount and UTS namespaces;
//! - [`landlock`]: the worker's empty filesystem allowance plus signal/abstract-socket scopes;
//! - [`seccomp`]: the worker allowlist and the helper denylist (policies in `policy/`);
//! - [`cgroup`]: `<group>/worker` and `<group>/handlers` with pids and memory limits.
//!
//! Every fallible step returns [`SandboxError`], whose message names the step and the errno so
//! an administrator can act on it. No function in this layer panics on an error path.
//!
//! The order the callers apply the layers in (each step needs what the previous ones left):
//! - worker (single-threaded, still root): [`namespaces::unshare_worker`], the root parent moves
//!   it with [`cgroup::DaemonCgroups::add_worker`], [`caps::worker_drop_bounding`],
//!   [`identity::drop_to`], [`caps::worker_clear_all`], [`caps::set_no_new_privs`],
//!   [`caps::set_not_dumpable`], [`landlock::restrict_worker`] (log its status),
//!   [`seccomp::install_sigsys_reporter`], [`seccomp::install_worker`] last;
//! - helper (full root): [`caps::helper_drop`], then [`caps::set_pdeathsig`] and a `getppid()`
//!   check, then [`seccomp::install_helper`] (inherited by every handler);
//! - handler child of the helper, between fork and exec: `setpgid`,
//!   [`cgroup::DaemonCgroups::enter_handlers_self`] (as the privileged uid), [`identity::drop_to`]
//!   (the handler's ids), [`caps::handler_child_caps`] (drops the helper's effective set, so it
//!   is the last privileged step), [`caps::set_pdeathsig`], exec.

pub mod caps;
pub mod cgroup;
pub mod identity;
pub mod landlock;
pub mod namespaces;
pub mod rootfs;
pub mod seccomp;

#[cfg(test)]
mod testutil;

/// One step of the worker's sandbox that can be left out (see [`WorkerLayers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// [`namespaces::unshare_worker`]: its own network, IPC, mount and UTS namespaces.
    Netns,
    /// [`cgroup::DaemonCgroups::add_worker`]: the worker cgroup's pids and memory limits.
    Cgroup,
    /// [`caps::worker_drop_bounding`]: an empty capability bounding set.
    Bounding,
    /// [`caps::worker_clear_sets`]: empty effective, permitted, inheritable and ambient sets.
    CapSets,
    /// [`identity::drop_to`] `--uid`/`--gid`.
    Identity,
    /// [`caps::set_no_new_privs`].
    Nnp,
    /// [`landlock::restrict_worker`].
    Landlock,
    /// [`seccomp::install_worker`]: the allowlist.
    Seccomp,
}

impl Layer {
    pub const ALL: [Layer; 8] = [
        Layer::Netns,
        Layer::Cgroup,
        Layer::Bounding,
        Layer::CapSets,
        Layer::Identity,
        Layer::Nnp,
        Layer::Landlock,
        Layer::Seccomp,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Which layers of the worker's sandbox are applied, decided once at start (before the fork)
/// from `--splitting` and, in test builds only, the test hooks; then read by every step of the
/// worker's confinement and by its audit line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerLayers {
    off: u8,
}

impl Default for WorkerLayers {
    fn default() -> Self {
        WorkerLayers::all()
    }
}

impl WorkerLayers {
    /// Every layer on: the default sandbox.
    pub fn all() -> WorkerLayers {
        WorkerLayers { off: 0 }
    }

    /// The layers `--splitting` asks for. `off` keeps only the identity change and the empty
    /// capability sets (clsync without splitting drops to --uid/--gid too; the helper still does
    /// every privileged action, and the worker must not hold a capability that could do it):
    /// no seccomp, landlock, namespaces, worker cgroup, no_new_privs, and the bounding set
    /// is left as is. `thread` and `process` are the whole sandbox.
    pub fn for_splitting(s: crate::config::Splitting) -> WorkerLayers {
        let mut l = WorkerLayers::all();
        if s.effective() == crate::config::Splitting::Off {
            for x in [
                Layer::Netns,
                Layer::Cgroup,
                Layer::Bounding,
                Layer::Nnp,
                Layer::Landlock,
                Layer::Seccomp,
            ] {
                l.switch_off(x);
            }
        }
        l
    }

    pub fn switch_off(&mut self, layer: Layer) {
        self.off |= layer.bit();
    }

    pub fn on(&self, layer: Layer) -> bool {
        self.off & layer.bit() == 0
    }

    /// The layers left out, in [`Layer::ALL`] order.
    pub fn off_layers(&self) -> Vec<Layer> {
        Layer::ALL.into_iter().filter(|l| !self.on(*l)).collect()
    }
}

use nix::errno::Errno;
use std::fmt;
use std::path::PathBuf;

/// Result alias of the sandbox layer.
pub type Result<T> = std::result::Result<T, SandboxError>;

/// Everything that can go wrong while confining a process.
#[derive(Debug)]
pub enum SandboxError {
    /// A system call failed. `step` says what was being done (with its arguments).
    Syscall { step: String, errno: Errno },
    /// A system call on a path failed.
    Path {
        step: &'static str,
        path: PathBuf,
        errno: Errno,
    },
    /// A user name that the system does not know.
    UnknownUser(String),
    /// A group name that the system does not know.
    UnknownGroup(String),
    /// A capability name that is not a Linux capability.
    UnknownCapability(String),
    /// A step succeeded but its effect could not be confirmed.
    Verify { step: &'static str, detail: String },
    /// The landlock ruleset could not be built or enforced.
    Landlock(String),
    /// A seccomp policy could not be compiled or installed.
    Seccomp(String),
    /// A cgroup could not be set up, used or removed.
    Cgroup(String),
}

impl SandboxError {
    /// A failed syscall, with `errno` taken from the current thread's errno *before* the step
    /// description is built (building it allocates, and the allocator may change errno).
    pub(crate) fn last_os(step: impl FnOnce() -> String) -> Self {
        let errno = Errno::last();
        SandboxError::Syscall {
            step: step(),
            errno,
        }
    }

    pub(crate) fn sys(step: impl Into<String>, errno: Errno) -> Self {
        SandboxError::Syscall {
            step: step.into(),
            errno,
        }
    }

    pub(crate) fn path(step: &'static str, path: impl Into<PathBuf>, e: &std::io::Error) -> Self {
        SandboxError::Path {
            step,
            path: path.into(),
            errno: io_errno(e),
        }
    }
}

/// The errno inside an `io::Error` (EIO if it carries none, which std only does for its own
/// synthetic errors such as a short write).
pub(crate) fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SandboxError::Syscall { step, errno } => {
                write!(f, "sandbox: {step} failed: {errno}")?;
                if *errno == Errno::EPERM {
                    write!(f, " (this step needs root or the matching capability)")?;
                }
                Ok(())
            }
            SandboxError::Path { step, path, errno } => {
                write!(f, "sandbox: {step} {} failed: {errno}", path.display())
            }
            SandboxError::UnknownUser(u) => write!(
                f,
                "unknown user '{u}' (give a name from the passwd database or a decimal uid)"
            ),
            SandboxError::UnknownGroup(g) => write!(
                f,
                "unknown group '{g}' (give a name from the group database or a decimal gid)"
            ),
            SandboxError::UnknownCapability(c) => write!(
                f,
                "unknown capability '{c}' (expected names like CAP_CHOWN or chown, see capabilities(7))"
            ),
            SandboxError::Verify { step, detail } => {
                write!(f, "sandbox: {step} did not take effect: {detail}")
            }
            SandboxError::Landlock(m) => write!(f, "sandbox: landlock: {m}"),
            SandboxError::Seccomp(m) => write!(f, "sandbox: seccomp: {m}"),
            SandboxError::Cgroup(m) => write!(f, "sandbox: cgroup: {m}"),
        }
    }
}

impl std::error::Error for SandboxError {}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn report(nr: i32, buf: &mut [u8; 64]) -> usize {
        buf[..4].copy_from_slice(&nr.to_le_bytes());
        4
    }

    /// The worker's whole sequence, in the order the daemon applies it, checked from inside:
    /// ids, every capability set empty, no_new_privs, seccomp filter mode, own network
    /// namespace, landlock enforced, and a forbidden syscall reported and fatal.
    #[test]
    fn worker_sequence_end_to_end() {
        use std::os::fd::AsRawFd;
        let (a, b) = crate::privsep::protocol::socket_pair().unwrap();
        let host_net = nix::fcntl::readlink("/proc/self/ns/net").unwrap();
        let host_net = host_net.as_encoded_bytes();
        let filter = seccomp::worker_filter(1).unwrap();
        let out = in_child(|fd| {
            if namespaces::unshare_worker().is_err() {
                return 2;
            }
            if caps::worker_drop_bounding().is_err() {
                return 3;
            }
            if identity::drop_to(64800, 64801).is_err() {
                return 4;
            }
            if caps::worker_clear_all().is_err() || caps::set_no_new_privs().is_err() {
                return 5;
            }
            if caps::set_not_dumpable().is_err() {
                return 6;
            }
            // Opened before landlock; /proc/<pid>/status is generated at the first read.
            let status = child_open(c"/proc/self/status");
            let mut net = [0u8; 64];
            // SAFETY: a NUL-terminated path and a live stack buffer of the given length.
            let n = unsafe {
                libc::readlink(c"/proc/self/ns/net".as_ptr(), net.as_mut_ptr().cast(), 64)
            };
            if status < 0 || n <= 0 || &net[..n as usize] == host_net {
                return 7;
            }
            if !matches!(
                landlock::restrict_worker(),
                Ok(landlock::LandlockStatus::FullyEnforced)
            ) {
                return 8;
            }
            if seccomp::install_sigsys_reporter(b.as_raw_fd(), report).is_err() {
                return 9;
            }
            if seccomp::apply(&filter).is_err() {
                return 10;
            }
            if !child_copy_fd(status, fd) {
                return 11;
            }
            // SAFETY: socket() with integer arguments; expected to trap.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            12
        });
        out.assert_exit(seccomp::EXIT_SECCOMP_VIOLATION);
        let s = out.text();
        assert_eq!(
            status_field(&s, "Uid"),
            Some("64800\t64800\t64800\t64800"),
            "{s}"
        );
        assert_eq!(status_field(&s, "Gid"), Some("64801\t64801\t64801\t64801"));
        assert_eq!(status_field(&s, "Groups"), Some(""));
        for f in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(status_field(&s, f), Some("0000000000000000"), "{f}");
        }
        assert_eq!(status_field(&s, "NoNewPrivs"), Some("1"));
        assert_eq!(status_field(&s, "Seccomp"), Some("2"));
        drop(b);
        let mut buf = [0u8; 8];
        let n = nix::sys::socket::recv(
            a.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        )
        .unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]),
            libc::SYS_socket as i32
        );
    }

    #[test]
    fn splitting_decides_the_worker_layers() {
        use crate::config::Splitting;
        for s in [Splitting::Process, Splitting::Thread] {
            let l = WorkerLayers::for_splitting(s);
            assert_eq!(l, WorkerLayers::all(), "{s:?}");
            assert!(Layer::ALL.iter().all(|x| l.on(*x)));
            assert!(l.off_layers().is_empty());
        }
        let off = WorkerLayers::for_splitting(Splitting::Off);
        assert_eq!(
            off.off_layers(),
            vec![
                Layer::Netns,
                Layer::Cgroup,
                Layer::Bounding,
                Layer::Nnp,
                Layer::Landlock,
                Layer::Seccomp
            ]
        );
        // Still dropped: the identity and every capability set but the bounding one.
        assert!(off.on(Layer::Identity) && off.on(Layer::CapSets));
        let mut l = WorkerLayers::all();
        l.switch_off(Layer::Seccomp);
        l.switch_off(Layer::Seccomp);
        assert_eq!(l.off_layers(), vec![Layer::Seccomp]);
    }

    #[test]
    fn error_messages_name_step_and_errno() {
        let e = SandboxError::sys("setresuid(1, 1, 1)", Errno::EPERM);
        assert_eq!(
            e.to_string(),
            "sandbox: setresuid(1, 1, 1) failed: EPERM: Operation not permitted \
             (this step needs root or the matching capability)"
        );
        let e = SandboxError::path(
            "creating cgroup",
            "/sys/fs/cgroup/x",
            &std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(
            e.to_string(),
            "sandbox: creating cgroup /sys/fs/cgroup/x failed: EACCES: Permission denied"
        );
    }
}
