//! Executes the built-in ownership/mode fixer ([`crate::handler::fixer`]) in a child of the
//! helper that runs as the sync handler's user with the handler's capabilities as its effective
//! set. Every path is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` and `O_PATH | O_NOFOLLOW` and changed through that fd only:
//! `fchownat(fd, "", AT_EMPTY_PATH)` (on a symlink that changes the link itself, as `chown -h`)
//! and `chmod` of `/proc/self/fd/N` (never on a symlink). Files with more than one hard link are
//! skipped, and `--from` is checked on the open fd right before the change.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmodat, fstat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};

use crate::handler::fixer::Fixer;
use crate::privsep::protocol::RelPath;

/// Applies `fixer` to every path; returns the exit status (0, or 1 if a change failed).
pub fn run(root: &OwnedFd, fixer: &Fixer, paths: &[RelPath]) -> i32 {
    let mut status = 0;
    for p in paths {
        if let Err(e) = fix_one(root, fixer, p) {
            crate::log::audit(
                "fix-failed",
                crate::audit_fields!["path" => lossy(p), "errno" => format!("{e:?}")],
            );
            status = 1;
        }
    }
    status
}

fn lossy(p: &RelPath) -> String {
    String::from_utf8_lossy(p.as_bytes()).into_owned()
}

fn fix_one(root: &OwnedFd, fixer: &Fixer, p: &RelPath) -> Result<(), Errno> {
    if p.validate().is_err() {
        return Err(Errno::EINVAL);
    }
    let path: &[u8] = if p.is_root() { b"." } else { p.as_bytes() };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = match openat2(root.as_fd(), path, how) {
        Ok(fd) => fd,
        // Gone since the event: nothing to fix.
        Err(Errno::ENOENT) => return Ok(()),
        // A symlinked directory on the way: never followed.
        Err(Errno::ELOOP | Errno::EXDEV) => {
            crate::log::audit(
                "fix-skipped",
                crate::audit_fields!["path" => lossy(p), "reason" => "symlink on the path"],
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let st = fstat(&fd)?;
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let is_dir = fmt == SFlag::S_IFDIR;
    let is_link = fmt == SFlag::S_IFLNK;
    if !is_dir && st.st_nlink > 1 {
        crate::log::audit(
            "fix-skipped",
            crate::audit_fields!["path" => lossy(p), "reason" => "hard links", "nlink" => st.st_nlink],
        );
        return Ok(());
    }
    match fixer {
        Fixer::Own { to, from } => {
            if from.uid.is_some_and(|u| u != st.st_uid) || from.gid.is_some_and(|g| g != st.st_gid)
            {
                return Ok(());
            }
            let uid = to.uid.filter(|&u| u != st.st_uid);
            let gid = to.gid.filter(|&g| g != st.st_gid);
            if uid.is_none() && gid.is_none() {
                return Ok(());
            }
            fchownat(
                &fd,
                "",
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::AT_EMPTY_PATH,
            )?;
            crate::log::audit(
                "fix",
                crate::audit_fields![
                    "op" => "chown",
                    "path" => lossy(p),
                    "uid" => uid.unwrap_or(st.st_uid),
                    "gid" => gid.unwrap_or(st.st_gid),
                ],
            );
        }
        Fixer::Mode(spec) => {
            if is_link {
                return Ok(()); // Linux symlinks have no mode of their own
            }
            let old = st.st_mode & 0o7777;
            let new = spec.apply(old, is_dir);
            if new == old {
                return Ok(());
            }
            // The magic link names exactly the inode we opened (not a path a tenant controls).
            let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
            fchmodat(
                nix::fcntl::AT_FDCWD,
                proc.as_str(),
                Mode::from_bits_truncate(new),
                FchmodatFlags::FollowSymlink,
            )?;
            crate::log::audit(
                "fix",
                crate::audit_fields!["op" => "chmod", "path" => lossy(p), "mode" => format!("{new:04o}")],
            );
        }
    }
    Ok(())
}
