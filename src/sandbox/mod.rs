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

pub mod caps;
pub mod cgroup;
pub mod identity;
pub mod landlock;
pub mod namespaces;
pub mod seccomp;

#[cfg(test)]
mod testutil;

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
    /// A failed syscall, with `errno` taken from the current thread's errno.
    pub(crate) fn last(step: impl Into<String>) -> Self {
        SandboxError::Syscall {
            step: step.into(),
            errno: Errno::last(),
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
