//! Test builds only (cargo feature `test-hooks`): plays a compromised worker. After the daemon is
//! ready, the worker sends one forged request named by `CLSYNC_TEST_FORGE`; the integration tests
//! check that the real helper refuses it, audits it and ends the session.
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::privsep::protocol::{
    encode, CallArgs, Channel, ExecEnv, HandlerRef, ListKind, ProtoError, RelPath, Request, Status,
    SyncType, MAX_DATAGRAM, VERSION,
};
use crate::privsep::protocol::{ApiEvent, DumpFile, ObjType, MAX_FDS};

fn memfd(sealed: bool) -> Option<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let fd = memfd_create(
        "forged",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .ok()?;
    let mut f = std::fs::File::from(fd);
    f.write_all(b"/***\n").ok()?;
    let fd = OwnedFd::from(f);
    if sealed {
        let s = SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_SEAL;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(s)).ok()?;
    }
    Some(fd)
}

fn exec(lists: Vec<ListKind>) -> Request {
    exec_as(HandlerRef::Sync, lists, |_| ())
}

/// Sends a well-formed Exec of the rsync template as job `job`, with its two sealed lists.
fn send_exec(chan: &Channel, job: u64) -> Result<(), ProtoError> {
    let (Some(a), Some(b)) = (memfd(true), memfd(true)) else {
        return Err(ProtoError::Io(nix::errno::Errno::EMFILE));
    };
    let mut r = exec(vec![ListKind::Exclude, ListKind::Include]);
    if let Request::Exec { job: j, .. } = &mut r {
        *j = job;
    }
    chan.send(&r, &[a.as_raw_fd(), b.as_raw_fd()])
}

/// An Exec of `handler` with `lists`, its call's values changed by `edit`.
fn exec_as(handler: HandlerRef, lists: Vec<ListKind>, edit: impl FnOnce(&mut CallArgs)) -> Request {
    let mut call = CallArgs {
        sync_type: SyncType::Rsynclist,
        event_mask: None,
        paths: vec![],
    };
    edit(&mut call);
    Request::Exec {
        job: 999,
        handler,
        lists,
        call,
        env: ExecEnv {
            status: Status::Running,
            iteration: 1,
        },
    }
}

fn so_sync(path: &[u8], recursive: bool, more: bool) -> Request {
    Request::SoSync {
        job: 999,
        env: ExecEnv {
            status: Status::Running,
            iteration: 1,
        },
        events: vec![ApiEvent {
            path: RelPath(path.to_vec()),
            evmask: 2,
            recursive,
            old: ObjType::File,
            new: ObjType::File,
        }],
        more,
    }
}

/// clsync's dump layout with `threads` thread files after it.
fn dump_files(threads: usize) -> Vec<DumpFile> {
    let mut f = vec![DumpFile::Instance];
    f.extend((0..4).map(DumpFile::Queue));
    f.extend((0..threads as u64).map(|num| DumpFile::Thread {
        iteration: 1,
        num,
        pid: 1,
    }));
    f
}

/// Sends a Dump declaring `files` with `fds` memfds (the first unsealed when `!sealed`).
fn dump(chan: &Channel, files: Vec<DumpFile>, fds: usize, sealed: bool) -> Result<(), ProtoError> {
    let mut owned = Vec::new();
    for i in 0..fds {
        match memfd(sealed || i > 0) {
            Some(fd) => owned.push(fd),
            None => return Ok(()),
        }
    }
    let raw: Vec<_> = owned.iter().map(|f| f.as_raw_fd()).collect();
    // Bypasses Channel::send's own check of the fd count.
    encode(&Request::Dump { files }).and_then(|b| chan.send_raw(&b, &raw))
}

/// Sends the forged request `kind`; unknown kinds are reported and do nothing.
pub fn send(kind: &str, chan: &Channel, prepared: &[OwnedFd]) {
    crate::warning!("test hook: sending forged request {kind}");
    let both = vec![ListKind::Exclude, ListKind::Include];
    let r = match kind {
        "hello-again" => chan.send(&Request::Hello { version: VERSION }, &[]),
        "version" => chan.send(
            &Request::Hello {
                version: VERSION + 1,
            },
            &[],
        ),
        // Files the worker could not have opened: root prepared them (see TestHooks).
        "exec-regular-file" | "exec-pipe" => match prepared {
            [a, b, ..] => chan.send(&exec(both), &[a.as_raw_fd(), b.as_raw_fd()]),
            _ => return,
        },
        "watch-dotdot" => chan.send(
            &Request::Walk {
                dirs: vec![RelPath(b"../..".to_vec())],
                watch: true,
                files: false,
                stat: false,
            },
            &[],
        ),
        "watch-absolute" => chan.send(
            &Request::Walk {
                dirs: vec![RelPath(b"/etc".to_vec())],
                watch: true,
                files: false,
                stat: false,
            },
            &[],
        ),
        "scan-dotdot" => chan.send(
            &Request::Walk {
                dirs: vec![RelPath(b"a/../../x".to_vec())],
                watch: false,
                files: true,
                stat: true,
            },
            &[],
        ),
        "exec-hook-unconfigured" => chan.send(&exec_as(HandlerRef::ExitHook, vec![], |_| ()), &[]),
        // rsyncdirect takes no paths at all.
        "exec-paths-to-rsync" => match (memfd(true), memfd(true)) {
            (Some(a), Some(b)) => chan.send(
                &exec_as(HandlerRef::Sync, both, |c| {
                    c.paths = vec![RelPath(b"x".to_vec())]
                }),
                &[a.as_raw_fd(), b.as_raw_fd()],
            ),
            _ => return,
        },
        // For a template with %INCLUDE-LIST% (direct mode): a path escaping the tree.
        "exec-path-dotdot" => chan.send(
            &exec_as(HandlerRef::Sync, vec![], |c| {
                c.paths = vec![RelPath(b"../../etc/shadow".to_vec())]
            }),
            &[],
        ),
        "exec-missing-list" => match memfd(true) {
            Some(fd) => chan.send(&exec(vec![ListKind::Include]), &[fd.as_raw_fd()]),
            None => return,
        },
        // Valid Execs, but a job id still running, or one handler more than the helper runs at
        // once (the test's handler sleeps while the daemon is running).
        "exec-job-twice" => (0..2).try_for_each(|_| send_exec(chan, 999)),
        "exec-too-many" => (0..65).try_for_each(|i| send_exec(chan, 1000 + i)),
        "exec-unsealed" => match (memfd(false), memfd(false)) {
            (Some(a), Some(b)) => chan.send(&exec(both), &[a.as_raw_fd(), b.as_raw_fd()]),
            _ => return,
        },
        "exec-undeclared-fd" => match memfd(true) {
            Some(fd) => {
                encode(&Request::Kill { job: 1 }).and_then(|b| chan.send_raw(&b, &[fd.as_raw_fd()]))
            }
            None => return,
        },
        // Mode so: a path that leaves the tree, a recursive (absolute) entry the configuration
        // does not allow, a part of a call followed by another request.
        "so-dotdot" => chan.send(&so_sync(b"a/../../etc", false, false), &[]),
        "so-recursive" => chan.send(&so_sync(b"", true, false), &[]),
        "so-interleaved" => chan
            .send(&so_sync(b"a", false, true), &[])
            .and_then(|()| chan.send(&Request::Kill { job: 1 }, &[])),
        // A recursive (--have-recursive-sync) call where none is configured.
        "exec-initialsync" => chan.send(
            &exec_as(HandlerRef::Sync, vec![], |c| {
                c.sync_type = SyncType::Initialsync;
                c.paths = vec![RelPath::root()];
            }),
            &[],
        ),
        // Dumps: an unsealed memfd, more fds than the files declared, one file (and fd) more
        // than a dump may have (the receive buffer, rounded up to 8 bytes, still takes it, so
        // the helper's own limit answers), far more fds than any message may carry (the
        // control data is cut, MSG_CTRUNC: the kernel closes the rest, the receive fails), a file the layout does not have
        // (queue/4 where queue/3 goes).
        "dump-unsealed" => dump(chan, dump_files(0), 5, false),
        "dump-undeclared-fd" => dump(chan, dump_files(0), 6, true),
        "dump-too-many-files" => dump(chan, dump_files(MAX_FDS - 4), MAX_FDS + 1, true),
        "dump-too-many-fds" => dump(chan, dump_files(MAX_FDS - 4), 2 * MAX_FDS, true),
        "dump-bad-name" => {
            let mut files = dump_files(0);
            files[4] = DumpFile::Queue(4);
            dump(chan, files, 5, true)
        }
        // A policy index the administrator did not configure (no --custom-signals block).
        "select-policy-out-of-range" => chan.send(&Request::SelectPolicy { index: 1 }, &[]),
        "garbage" => chan.send_raw(&[0xff, 0xfe, 0xfd, 0x00, 0x42], &[]),
        "oversized" => chan.send_raw(&vec![1u8; MAX_DATAGRAM + 4096], &[]),
        other => {
            crate::error!("test hook: unknown forged request {other}");
            return;
        }
    };
    if let Err(e) = r {
        crate::error!("test hook: sending the forged request failed: {e}");
    }
}
