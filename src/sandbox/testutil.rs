//! Test helpers: run a sandbox layer in a forked child and look at the real outcome.
//!
//! Tests run in parallel threads of one process, so a layer is only ever applied in a child.
//! The child runs a closure that performs syscalls only and returns an exit code; anything it
//! wants the parent to see it writes to a pipe. The parent reaps the child first and reads the
//! pipe afterwards (non-blocking), so a sibling test's child that inherited our pipe's write end
//! by a concurrent fork can never make us wait.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// What a child left behind.
pub(crate) struct ChildOutcome {
    pub status: WaitStatus,
    pub output: Vec<u8>,
}

impl ChildOutcome {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// Asserts that the child exited with `code`, showing its status and output otherwise.
    #[track_caller]
    pub fn assert_exit(&self, code: i32) {
        assert_eq!(
            exited(&self.status),
            Some(code),
            "{:?} {}",
            self.status,
            self.text()
        );
    }
}

/// Runs `step` in a child that first dropped to `uid`:`uid` (so it holds no privilege), asserts
/// that the step failed, and returns its error's text (for "the error names the step and the
/// errno" tests).
#[track_caller]
pub(crate) fn unprivileged_error<E: std::fmt::Display>(
    uid: u32,
    step: impl FnOnce() -> Result<(), E>,
) -> String {
    let out = in_child(|fd| {
        if crate::sandbox::identity::drop_to(uid, uid).is_err() {
            return 2;
        }
        match step() {
            Ok(()) => 3,
            Err(e) => {
                let _ = child_write(fd, e.to_string().as_bytes());
                0
            }
        }
    });
    out.assert_exit(0);
    out.text()
}

/// Fork, run `f(pipe_write_fd)` in the child and `_exit` with its return value.
pub(crate) fn in_child<F: FnOnce(RawFd) -> i32>(f: F) -> ChildOutcome {
    let (rd, wr): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2");
    // SAFETY: the child only runs `f`, which by contract makes syscalls and returns, then
    // leaves with `_exit` (no atexit handlers, no unwinding into the test harness).
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(rd);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(wr.as_raw_fd())))
                .unwrap_or(101);
            // SAFETY: terminating the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let status = waitpid(child, None).expect("waitpid");
            let mut output = Vec::new();
            let _ = nix::fcntl::fcntl(
                &rd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            let mut buf = [0u8; 4096];
            while let Ok(n) = nix::unistd::read(&rd, &mut buf) {
                if n == 0 {
                    break;
                }
                output.extend_from_slice(&buf[..n]);
            }
            ChildOutcome { status, output }
        }
    }
}

/// In a child: write all of `data` to `fd` (raw syscalls only).
pub(crate) fn child_write(fd: RawFd, data: &[u8]) -> bool {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: the pointer and length describe the live slice `data[off..]`.
        let n = unsafe { libc::write(fd, data[off..].as_ptr().cast(), data.len() - off) };
        if n <= 0 {
            return false;
        }
        off += n as usize;
    }
    true
}

/// In a child: copy an already open file descriptor's content to `out` (stack buffer only).
pub(crate) fn child_copy_fd(src: RawFd, out: RawFd) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is a live, writable stack buffer of the given length.
        let n = unsafe { libc::read(src, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return false;
        }
        if n == 0 {
            return true;
        }
        if !child_write(out, &buf[..n as usize]) {
            return false;
        }
    }
}

/// In a child: open `path` read-only; -1 on error.
pub(crate) fn child_open(path: &CStr) -> RawFd {
    // SAFETY: `path` is a valid NUL-terminated string.
    unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
}

/// In a child: send the current `/proc/self/status` to `out`.
pub(crate) fn child_send_status(out: RawFd) -> bool {
    let fd = child_open(c"/proc/self/status");
    if fd < 0 {
        return false;
    }
    let ok = child_copy_fd(fd, out);
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    ok
}

/// The value of `Field:` in a `/proc/<pid>/status` text, whitespace-trimmed.
pub(crate) fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim())
    })
}

/// A capability mask as `/proc/<pid>/status` prints it.
pub(crate) fn cap_hex(caps: &[::caps::Capability]) -> String {
    let mask = caps.iter().fold(0u64, |m, c| m | c.bitmask());
    format!("{mask:016x}")
}

/// The signal that ended the child, if any.
pub(crate) fn signaled(s: &WaitStatus) -> Option<nix::sys::signal::Signal> {
    match s {
        WaitStatus::Signaled(_, sig, _) => Some(*sig),
        _ => None,
    }
}

/// The child's exit code, if it exited.
pub(crate) fn exited(s: &WaitStatus) -> Option<i32> {
    match s {
        WaitStatus::Exited(_, c) => Some(*c),
        _ => None,
    }
}
