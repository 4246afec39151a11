//! The worker's own namespaces: no network (only a fresh loopback), no shared IPC, its own
//! mount table and hostname.

use super::{Result, SandboxError};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The namespaces the worker leaves: network, System V IPC / POSIX mqueues, mounts, UTS.
pub const WORKER_NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNET
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWUTS);

/// `unshare(CLONE_NEWNET)` for the whole daemon (--detach-network=everywhere): called in the
/// process root started, before the helper is forked, so the helper and the handlers it starts
/// have only a loopback interface that is down.
pub fn unshare_network() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| SandboxError::sys("unshare(CLONE_NEWNET) for --detach-network=everywhere", e))
}

/// `unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWNS | CLONE_NEWUTS)`, then make the whole
/// mount tree recursively private in the new mount namespace so nothing the worker (or a bug)
/// does to mounts can propagate back to the host, and host mount events do not reach it.
///
/// Needs CAP_SYS_ADMIN (call it while still root) and a single-threaded process (CLONE_NEWNS
/// cannot be unshared while the filesystem context is shared with other threads: EINVAL).
/// Every socket the worker needs must be opened before this call.
pub fn unshare_worker() -> Result<()> {
    unshare(WORKER_NAMESPACES).map_err(|e| {
        SandboxError::sys(
            "unshare(CLONE_NEWNET|CLONE_NEWIPC|CLONE_NEWNS|CLONE_NEWUTS)",
            e,
        )
    })?;
    private_mounts().map_err(|e| {
        SandboxError::sys(
            "mount(\"/\", MS_REC|MS_PRIVATE) in the new mount namespace",
            e,
        )
    })
}

/// In a new mount namespace: makes every mount recursively private, so nothing done to mounts
/// here propagates to the host and the host's mount events do not come in.
pub fn private_mounts() -> nix::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::testutil::*;
    use std::ffi::CStr;

    const NS: [&CStr; 4] = [
        c"/proc/self/ns/net",
        c"/proc/self/ns/ipc",
        c"/proc/self/ns/mnt",
        c"/proc/self/ns/uts",
    ];

    /// In a child: write the targets of the four namespace links, one per line.
    fn child_send_ns(fd: i32) -> bool {
        for p in NS {
            let mut buf = [0u8; 128];
            // SAFETY: `p` is NUL-terminated and `buf` is a live stack buffer of that length.
            let n = unsafe { libc::readlink(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 || !child_write(fd, &buf[..n as usize]) || !child_write(fd, b"\n") {
                return false;
            }
        }
        true
    }

    #[test]
    fn worker_gets_own_namespaces_and_private_mounts() {
        let before = in_child(|fd| if child_send_ns(fd) { 0 } else { 1 });
        assert_eq!(exited(&before.status), Some(0));
        let out = in_child(|fd| {
            if let Err(e) = unshare_worker() {
                let _ = child_write(fd, e.to_string().as_bytes());
                return 2;
            }
            if !child_send_ns(fd) {
                return 3;
            }
            // Changing the hostname is now invisible to the host.
            if nix::unistd::sethostname("clsync-worker-test").is_err() {
                return 4;
            }
            let mi = child_open(c"/proc/self/mountinfo");
            if mi < 0 || !child_copy_fd(mi, fd) {
                return 5;
            }
            0
        });
        out.assert_exit(0);
        let text = out.text();
        let (ns_lines, mountinfo) = text.split_at(
            text.match_indices('\n')
                .nth(3)
                .map(|(i, _)| i + 1)
                .unwrap_or(text.len()),
        );
        let before_text = before.text();
        let old: Vec<&str> = before_text.lines().collect();
        let new: Vec<&str> = ns_lines.lines().collect();
        assert_eq!(new.len(), 4, "{text}");
        for (o, n) in old.iter().zip(&new) {
            assert_ne!(o, n, "namespace not changed");
        }
        assert!(!mountinfo.is_empty());
        for l in mountinfo.lines() {
            assert!(!l.contains("shared:"), "mount still shared: {l}");
        }
        assert_ne!(
            nix::unistd::gethostname().unwrap().to_string_lossy(),
            "clsync-worker-test"
        );
    }

    #[test]
    fn unshare_needs_root() {
        let msg = unprivileged_error(64600, unshare_worker);
        assert!(msg.contains("unshare(CLONE_NEWNET"), "{msg}");
        assert!(msg.contains("EPERM"), "{msg}");
    }
}
