//! `--chroot`, `--pivot-root`, `--mountpoints`: the daemon's own mount namespace and root.
//!
//! Done once, in the process root started, after the configuration is resolved and the host's
//! syslog and systemd sockets are connected, and before anything else is opened or forked: the
//! helper, the worker and the handlers then all live below the new root. Everything happens in
//! a new mount namespace whose mounts are made recursively private first, so no mount, unmount
//! or pivot here reaches the host; the namespace disappears with the daemon's last process and
//! the host's mount table is as it was. Needs CAP_SYS_ADMIN and CAP_SYS_CHROOT, which the root
//! process has before any capability is dropped; nothing later needs them for this.
//!
//! Differences from clsync 0.4.5, each keeping the option's meaning:
//! - `auto`/`auto-ro` bind-mount DIR onto itself (in the private namespace) instead of onto
//!   `/dev/shm/clsync-rootfs`, and pivot with `pivot_root(".", ".")` instead of into
//!   `DIR/old_root`: nothing is created in /dev/shm or DIR. `auto-ro` really is read-only
//!   (clsync passes MS_RDONLY to the bind itself, which the kernel ignores).
//! - `off` also binds DIR onto itself, so the new root is a mount point (the worker's own mount
//!   namespace needs that); it is still a plain chroot.
//! - `--mountpoints` never detaches `/`, `/proc` (the daemon reads /proc/self) nor the mounts
//!   DIR lives on.
//! - When `/proc` inside DIR holds no procfs, a fresh one is mounted there (in the private
//!   namespace); DIR must have a `/proc` directory.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::config::{PivotRoot, RootSwitch};

/// A failure of the switch: the exit code (the errno, as clsync exits) and what went wrong.
#[derive(Debug)]
pub struct RootError {
    pub code: i32,
    pub msg: String,
}

fn sys_err(what: impl Into<String>, e: Errno) -> RootError {
    RootError {
        code: e as i32,
        msg: format!("{}: {e}", what.into()),
    }
}

/// Leaves the host's mount namespace and applies `sw` (see the module documentation).
pub fn enter(sw: &RootSwitch) -> Result<(), RootError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| sys_err("unshare(CLONE_NEWNS)", e))?;
    super::namespaces::private_mounts().map_err(|e| {
        sys_err(
            "mount(\"/\", MS_REC|MS_PRIVATE) in the daemon's mount namespace",
            e,
        )
    })?;
    if let Some(keep) = &sw.mountpoints {
        detach_unlisted(keep, sw.chroot.as_deref())?;
    }
    if let Some(dir) = &sw.chroot {
        change_root(dir, sw.pivot)?;
        ensure_proc(dir)?;
    }
    Ok(())
}

/// The mount points of this namespace (as the calling process sees them), in mount order.
pub fn mount_points() -> Result<Vec<PathBuf>, RootError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| RootError {
        code: e.raw_os_error().unwrap_or(1),
        msg: format!("reading /proc/self/mountinfo: {e}"),
    })?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(super::cgroup::unescape(m)))
        .collect())
}

/// `--mountpoints`: `umount2(MNT_DETACH)` every mount point not listed, in mountinfo order (a
/// mount that went with an earlier one is skipped: EINVAL/ENOENT are ignored, as clsync does).
fn detach_unlisted(keep: &[PathBuf], chroot: Option<&Path>) -> Result<(), RootError> {
    let mut detached = 0usize;
    for mp in mount_points()? {
        let always = mp == Path::new("/")
            || mp == Path::new("/proc")
            || chroot.is_some_and(|d| d.starts_with(&mp));
        if always || keep.contains(&mp) {
            continue;
        }
        match umount2(&mp, MntFlags::MNT_DETACH) {
            Ok(()) => {
                detached += 1;
                crate::debug!(
                    1,
                    "--mountpoints: umount2(\"{}\", MNT_DETACH)",
                    mp.display()
                );
            }
            Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(e) => {
                return Err(sys_err(
                    format!("--mountpoints: umount2(\"{}\", MNT_DETACH)", mp.display()),
                    e,
                ))
            }
        }
    }
    crate::debug!(1, "--mountpoints: {detached} mounts detached");
    Ok(())
}

/// The per-mount flags of the mount holding `dir` that a bind remount must repeat.
fn mount_flags_of(dir: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(dir) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut m = MsFlags::empty();
    for (s, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(s) {
            m |= ms;
        }
    }
    m
}

fn change_root(dir: &Path, pivot: PivotRoot) -> Result<(), RootError> {
    let d = dir.display();
    if pivot == PivotRoot::Direct {
        if !mount_points()?.iter().any(|m| m == dir) {
            return Err(RootError {
                code: Errno::EINVAL as i32,
                msg: format!(
                    "--pivot-root=direct: --chroot {d} is not a mount point (pivot_root needs one; --pivot-root=auto bind-mounts it first)"
                ),
            });
        }
    } else {
        mount(
            Some(dir),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| sys_err(format!("--chroot: bind-mounting {d} onto itself"), e))?;
        if pivot == PivotRoot::AutoRo {
            let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
            mount(
                None::<&str>,
                dir,
                None::<&str>,
                flags | mount_flags_of(dir),
                None::<&str>,
            )
            .map_err(|e| sys_err(format!("--pivot-root=auto-ro: remounting {d} read-only"), e))?;
        }
    }
    nix::unistd::chdir(dir).map_err(|e| sys_err(format!("--chroot: chdir(\"{d}\")"), e))?;
    if pivot != PivotRoot::Off {
        // The old root is stacked on top of the new one, then detached: no put_old directory.
        nix::unistd::pivot_root(".", ".")
            .map_err(|e| sys_err(format!("--pivot-root: pivot_root into {d}"), e))?;
        umount2(".", MntFlags::MNT_DETACH)
            .map_err(|e| sys_err("--pivot-root: detaching the old root", e))?;
    }
    nix::unistd::chroot(".").map_err(|e| sys_err(format!("--chroot: chroot(\"{d}\")"), e))?;
    nix::unistd::chdir("/").map_err(|e| sys_err("--chroot: chdir(\"/\") in the new root", e))?;
    Ok(())
}

/// The daemon reads /proc/self (its fds, mountinfo, cgroups): mount a procfs on DIR's /proc
/// unless one is there.
fn ensure_proc(dir: &Path) -> Result<(), RootError> {
    if Path::new("/proc/self/fd").is_dir() {
        return Ok(());
    }
    if !Path::new("/proc").is_dir() {
        return Err(RootError {
            code: Errno::ENOENT as i32,
            msg: format!(
                "--chroot {}: {}/proc does not exist; the daemon needs /proc inside the new root (create the empty directory: a procfs is mounted there in the daemon's own mount namespace)",
                dir.display(),
                dir.display()
            ),
        });
    }
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| {
        sys_err(
            format!("--chroot {}: mounting procfs on /proc", dir.display()),
            e,
        )
    })
}

/// After the switch: the watch dir, the handler and the hooks must be where the configuration
/// resolved them on the host, now inside the new root.
pub fn check_inside(
    dir: &Path,
    watch_dir: &Path,
    handler: &Path,
    hooks: &[&Option<PathBuf>],
) -> Result<(), RootError> {
    let missing = |what: &str, p: &Path, e: String| {
        RootError {
        code: Errno::ENOENT as i32,
        msg: format!(
            "--chroot {}: the {what} {} is missing inside the new root ({}{}: {e}); the watch dir, the sync handler and /tmp must exist at the same absolute paths inside {}",
            dir.display(),
            p.display(),
            dir.display(),
            p.display(),
            dir.display()
        ),
    }
    };
    match std::fs::metadata(watch_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(missing("watch dir", watch_dir, "not a directory".into())),
        Err(e) => return Err(missing("watch dir", watch_dir, e.to_string())),
    }
    let programs = std::iter::once(("sync handler", handler)).chain(
        hooks
            .iter()
            .filter_map(|h| h.as_deref())
            .map(|h| ("hook", h)),
    );
    for (what, p) in programs {
        match std::fs::metadata(p) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(missing(what, p, "not a file".into())),
            Err(e) => return Err(missing(what, p, e.to_string())),
        }
    }
    Ok(())
}
