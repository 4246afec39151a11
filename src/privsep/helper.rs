//! The privileged helper: a small state machine serving the worker's requests one at a time.
//!
//! States: `AwaitHello` → `Serving` → (`Shutdown` | EOF | refusal) → cleanup → exit.
//! Every request is checked before anything is done: paths must be clean and relative and are
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` from the
//! watch root's fd; an Exec must select the configured handler with exactly the configured lists,
//! each a sealed memfd. Anything unknown, unexpected or unpermitted is audited, refused, and ends
//! the session: the helper treats the worker as compromised, ends every handler and exits.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{
    fcntl, openat, openat2, AtFlags, FcntlArg, OFlag, OpenHow, ResolveFlag, SealFlag,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{unlinkat, ForkResult, Pid, UnlinkatFlags};

use crate::handler::template::path_arg;
use crate::privsep::policy::ExecPolicy;
use crate::privsep::protocol::{ApiEvent, DumpFile, SyncType, MAX_DUMP_THREADS};
use crate::privsep::protocol::{
    CallArgs, Channel, Chunk, Entry, ExecEnv, ExitStatus, HandlerRef, Kind, ListKind, ProtoError,
    RelPath, Reply, Request, StatResult, WatchResult, CHUNK_OVERHEAD, MAX_BATCH, MAX_DATAGRAM,
    VERSION,
};
use crate::privsep::soload::{self, CEvent, SharedObject, SoCall, SoMode, EVIF_RECURSIVELY};
use crate::sandbox::cgroup::DaemonCgroups;
use crate::sys;

/// The inotify mask the helper puts on every directory (clsync's, minus IN_DONT_FOLLOW, which
/// would watch the /proc/self/fd link itself, plus IN_ONLYDIR).
pub const WATCH_MASK: u32 = libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_MODIFY
    | libc::IN_ONLYDIR;

/// The helper's exit status when it ended the session because of a refused request.
pub const EXIT_REFUSED: i32 = 3;
/// Most handler jobs alive at once.
const MAX_JOBS: usize = 64;
/// Fixed PATH for handlers.
pub const HANDLER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The helper's private directory for list files.
pub struct ListsDir {
    pub fd: OwnedFd,
    pub path: PathBuf,
    /// Created by us (removed at exit) rather than the administrator's -L directory.
    pub ours: bool,
}

/// Everything the helper owns, opened by root before the fork.
pub struct HelperSetup {
    pub chan: Channel,
    pub worker: Pid,
    pub root: OwnedFd,
    pub inotify: OwnedFd,
    pub lists: ListsDir,
    pub cgroups: Option<DaemonCgroups>,
    /// The exec policy in force: one of `policies`, selected by the worker (SelectPolicy).
    pub policy: ExecPolicy,
    /// Every policy the administrator configured, frozen before the fork: index 0 is the start
    /// configuration, then one per --custom-signals block.
    pub policies: Vec<ExecPolicy>,
    pub helper_uid: u32,
    pub helper_gid: u32,
    /// The pipe the janitor waits on: its read end (given to the janitor) and the helper's write
    /// end (kept until the helper exits).
    pub janitor_read: Option<OwnedFd>,
    pub janitor_write: OwnedFd,
    /// The write end of the janitor's "done" pipe (handed to the janitor, closed here).
    pub janitor_done: Option<OwnedFd>,
    /// Set once the janitor runs.
    pub janitor: Option<Pid>,
    /// Files the janitor removes at the end (pid file, status file).
    pub remove_files: Vec<PathBuf>,
}

struct Job {
    pid: Pid,
    files: Vec<CString>,
    /// A Kill already sent SIGTERM; the next one sends SIGKILL.
    termed: bool,
}

struct Helper {
    s: HelperSetup,
    jobs: HashMap<u64, Job>,
    sigfd: SignalFd,
    /// Mode so: the parts of a SoSync call received so far (job, events).
    so_pending: Option<(u64, Vec<ApiEvent>)>,
}

/// Most events in one mode-so call, and most path bytes (the worker splits larger passes).
pub const MAX_SO_EVENTS: usize = 1 << 20;
pub const MAX_SO_BYTES: usize = 256 << 20;

#[derive(Debug)]
enum End {
    /// Orderly: Shutdown or the worker closed the channel.
    Done,
    /// A request was refused; the worker is treated as compromised.
    Refused(String),
    /// The worker's seccomp filter trapped a syscall.
    Violation(i32),
    /// SIGTERM (the worker's death signal, or the administrator).
    Terminated,
    Failed(String),
}

/// Drops to the helper's identity and capabilities and serves until the session ends. Never
/// returns.
pub fn run(mut setup: HelperSetup) -> ! {
    start_janitor(&mut setup);
    // The helper lives in the handlers group, so every handler it forks starts there: moving
    // each handler after its fork costs an RCU grace period (milliseconds) on every sync.
    if let Some(cg) = &setup.cgroups {
        if let Err(e) = cg.enter_handlers_self() {
            crate::warning!("helper: cannot join the handlers cgroup: {e}");
        }
    }
    let code = match prepare(&setup) {
        Ok(sigfd) => {
            let mut h = Helper {
                s: setup,
                jobs: HashMap::new(),
                sigfd,
                so_pending: None,
            };
            let end = h.serve();
            let worker_alive = matches!(end, End::Done | End::Refused(_) | End::Violation(_));
            let code = match &end {
                End::Done | End::Terminated => 0,
                End::Refused(_) => EXIT_REFUSED,
                End::Violation(_) => EXIT_REFUSED,
                End::Failed(_) => 1,
            };
            match &end {
                End::Done => crate::debug!(1, "helper: session ended"),
                End::Terminated => crate::debug!(1, "helper: terminated"),
                End::Refused(why) => {
                    crate::error!("helper: refused a request from the worker ({why}); ending the session")
                }
                End::Violation(nr) => crate::error!(
                    "helper: the worker's seccomp filter trapped syscall {nr} (violation); ending the session"
                ),
                End::Failed(why) => crate::error!("helper: {why}"),
            }
            h.cleanup(worker_alive);
            code
        }
        Err(e) => {
            crate::error!("helper: cannot drop privileges: {e}");
            1
        }
    };
    sys::exit_now(code)
}

/// Forks the janitor (still as root), hands it the cleanup of cgroups and the lists directory,
/// and keeps a disarmed copy of the cgroups for joining and killing handlers.
fn start_janitor(s: &mut HelperSetup) {
    let lists_dir = (s.lists.ours && !s.policy.keep_lists).then(|| s.lists.path.clone());
    let Some(wait) = s.janitor_read.take() else {
        return;
    };
    let done = s.janitor_done.take();
    match sys::fork() {
        Ok(ForkResult::Child) => {
            crate::privsep::janitor::run(crate::privsep::janitor::JanitorSetup {
                wait,
                cgroups: s.cgroups.take(),
                lists_dir,
                remove_files: std::mem::take(&mut s.remove_files),
                worker: s.worker,
                done,
            })
        }
        Ok(ForkResult::Parent { child }) => {
            s.janitor = Some(child);
            if let Some(cg) = s.cgroups.as_mut() {
                cg.disarm();
            }
        }
        Err(e) => {
            crate::warning!("cannot start the janitor ({e}): cgroups may outlive a killed daemon")
        }
    }
}

fn prepare(s: &HelperSetup) -> Result<SignalFd, String> {
    use crate::sandbox::{caps, seccomp};
    let mut keep: Vec<RawFd> = vec![
        s.chan.raw_fd(),
        s.root.as_raw_fd(),
        s.inotify.as_raw_fd(),
        s.lists.fd.as_raw_fd(),
        s.janitor_write.as_raw_fd(),
    ];
    keep.extend(crate::log::syslog_fd());
    keep.extend(s.cgroups.iter().flat_map(DaemonCgroups::fds));
    sys::close_all_except(&keep).map_err(|e| format!("closing inherited fds: {e}"))?;
    caps::helper_drop(s.helper_uid, s.helper_gid, &s.policy.caps).map_err(|e| e.to_string())?;
    caps::set_pdeathsig(Signal::SIGTERM).map_err(|e| e.to_string())?;
    if nix::unistd::getppid() != s.worker {
        return Err("the worker died before the helper was ready".into());
    }
    // SIGTERM/SIGCHLD arrive through a signalfd; the administrator's signals are the worker's to
    // act on (it sends Shutdown), so the helper blocks them too and ignores what it reads.
    let mut mask = SigSet::empty();
    for sig in crate::sys::ADMIN_SIGNALS
        .into_iter()
        .chain([Signal::SIGCHLD])
    {
        mask.add(sig);
    }
    mask.thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    seccomp::install_helper().map_err(|e| e.to_string())?;
    crate::log::audit(
        "helper-start",
        audit_fields![
            "pid" => sys::getpid(),
            "uid" => nix::unistd::getuid(),
            "gid" => nix::unistd::getgid(),
            "caps" => "dac_read_search,setuid,setgid,kill",
        ],
    );
    Ok(sigfd)
}

/// Resolves `path` beneath the watch root without following any symlink or magic link.
fn resolve(root: &OwnedFd, path: &RelPath, flags: OFlag) -> Result<OwnedFd, Errno> {
    path.validate().map_err(|_| Errno::EINVAL)?;
    let p: &[u8] = if path.is_root() {
        b"."
    } else {
        path.as_bytes()
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    loop {
        match openat2(root.as_fd(), p, how) {
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// Budget of one `Walked` datagram (the encoding's worst case is bounded by
/// [`Entry::wire_size`] and [`CHUNK_OVERHEAD`]).
const PACK_BUDGET: usize = MAX_DATAGRAM - 1024;

/// getdents64 buffer of a Walk: most directories are read in one call (plus the one that
/// finds the end).
const DIRENT_BUF: usize = 64 * 1024;

/// What a Walk asks for each directory (see [`Request::Walk`]).
#[derive(Clone, Copy)]
struct WalkHow {
    watch: bool,
    files: bool,
    stat: bool,
}

/// Chunks of a Walk waiting to go out in one datagram.
#[derive(Default)]
struct Packer {
    chunks: Vec<Chunk>,
    /// Bound of the encoded size of `chunks`.
    bytes: usize,
    /// Bound of the entries gathered for the current directory, not yet in a chunk.
    pending: usize,
    /// Per device: whether its file system keeps a directory's link count at 2 + its number of
    /// subdirectories, so a directory with 2 links has none.
    counts_subdirs: Vec<(u64, bool)>,
}

/// The directory a Walk is reading: its index, watch result (sent with its first chunk) and the
/// entries not yet in a chunk.
struct DirOut {
    idx: u32,
    wd: Option<WatchResult>,
    batch: Vec<Entry>,
}

/// File systems whose directory link count is exactly 2 + the number of subdirectories (as
/// `find` relies on for its leaf optimisation). Others (btrfs reports 1, overlayfs and network
/// file systems may not keep it) are always read.
const COUNTS_SUBDIRS: [nix::sys::statfs::FsType; 3] = [
    nix::sys::statfs::TMPFS_MAGIC,
    nix::sys::statfs::EXT4_SUPER_MAGIC, // also ext2 and ext3
    nix::sys::statfs::XFS_SUPER_MAGIC,
];

impl Packer {
    /// Whether the open directory `fd` has no subdirectory, by its link count, on a file
    /// system known to keep that count. Called after its watch is in place, so a
    /// subdirectory made later is seen by inotify; one made before has raised the count.
    fn is_leaf(&mut self, fd: &OwnedFd) -> bool {
        let Ok(st) = fstat(fd) else {
            return false;
        };
        if st.st_nlink != 2 {
            return false;
        }
        let known = self.counts_subdirs.iter().find(|(d, _)| *d == st.st_dev);
        match known {
            Some(&(_, c)) => c,
            None => {
                let c = nix::sys::statfs::fstatfs(fd)
                    .is_ok_and(|f| COUNTS_SUBDIRS.contains(&f.filesystem_type()));
                self.counts_subdirs.push((st.st_dev, c));
                c
            }
        }
    }

    fn push(&mut self, c: Chunk) {
        self.bytes += CHUNK_OVERHEAD + c.entries.iter().map(Entry::wire_size).sum::<usize>();
        self.chunks.push(c);
    }
}

fn kind_of(mode: u32) -> Kind {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

impl Helper {
    fn serve(&mut self) -> End {
        let mut hello = false;
        loop {
            let (chan_ready, sig_ready) = {
                let mut fds = [
                    PollFd::new(self.s_chan_fd(), PollFlags::POLLIN),
                    PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return End::Failed(format!("poll: {e}")),
                }
                let r = |f: &PollFd| f.revents().map(|e| !e.is_empty()).unwrap_or(false);
                (r(&fds[0]), r(&fds[1]))
            };
            if sig_ready {
                if let Some(end) = self.on_signals() {
                    return end;
                }
            }
            if !chan_ready {
                continue;
            }
            let (req, fds) = match self.s.chan.recv::<Request>() {
                Ok(m) => m,
                Err(ProtoError::Closed) => return End::Done,
                Err(e) => return self.refuse(&format!("{e}")),
            };
            if !hello {
                match req {
                    Request::Hello { version } if version == VERSION => {
                        hello = true;
                        if self.reply(&Reply::Hello { version: VERSION }).is_err() {
                            return End::Done;
                        }
                        continue;
                    }
                    Request::Hello { version } => {
                        return self
                            .refuse(&format!("protocol version {version}, expected {VERSION}"))
                    }
                    other => return self.refuse(&format!("{} before the handshake", name(&other))),
                }
            }
            if let Some((job, _)) = &self.so_pending {
                if !matches!(req, Request::SoSync { .. } | Request::Violation { .. }) {
                    let why = format!("{} between the parts of SoSync job {job}", name(&req));
                    return self.refuse(&why);
                }
            }
            match self.handle(req, fds) {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(why) => return self.refuse(&why),
            }
        }
    }

    fn s_chan_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.s.chan.as_fd()
    }

    fn reply(&self, r: &Reply) -> Result<(), ProtoError> {
        self.s.chan.send(r, &[])
    }

    fn refuse(&mut self, why: &str) -> End {
        crate::log::audit("refused", audit_fields!["reason" => why]);
        let _ = self.reply(&Reply::Refused {
            reason: why.to_string(),
        });
        End::Refused(why.to_string())
    }

    /// Ok(None): go on; Ok(Some(end)): orderly end; Err(why): refuse and end.
    fn handle(&mut self, req: Request, fds: Vec<OwnedFd>) -> Result<Option<End>, String> {
        match req {
            Request::Hello { .. } => Err("second handshake".into()),
            Request::Walk {
                dirs,
                watch,
                files,
                stat,
            } => {
                check_paths(&dirs)?;
                let mut out = Packer::default();
                let mut buf = vec![0u8; DIRENT_BUF];
                let how = WalkHow { watch, files, stat };
                for (i, d) in dirs.iter().enumerate() {
                    if let Some(end) = self.walk_dir(&mut out, &mut buf, i as u32, d, how)? {
                        return Ok(Some(end));
                    }
                }
                self.send(&Reply::Walked {
                    chunks: std::mem::take(&mut out.chunks),
                })
            }
            Request::Unwatch { wds } => {
                for wd in wds {
                    // EINVAL for a wd already gone is fine: the kernel drops watches of deleted dirs.
                    let _ = sys::inotify_rm_watch(&self.s.inotify, wd);
                }
                self.send(&Reply::Unwatched)
            }
            Request::Stat { paths } => {
                check_paths(&paths)?;
                let results = paths.iter().map(|p| self.stat(p)).collect();
                self.send(&Reply::Stats { results })
            }
            Request::Exec {
                job,
                handler: HandlerRef::Sync,
                lists,
                env,
                call,
            } => self.exec(job, &lists, fds, env, call),
            Request::Exec {
                job,
                handler,
                lists,
                env,
                call,
            } => {
                // A hook: `[hook, label]` exactly, no lists, no paths.
                let hook = match handler {
                    HandlerRef::PreExitHook => self.s.policy.pre_exit_hook.clone(),
                    _ => self.s.policy.exit_hook.clone(),
                };
                let Some(hook) = hook else {
                    return Err(format!("exec of {handler:?}, which is not configured"));
                };
                if !lists.is_empty() || !call.paths.is_empty() {
                    return Err(format!("exec of {handler:?} with lists or paths"));
                }
                self.admit(job)?;
                let label = CString::new(self.s.policy.label.clone()).unwrap_or_default();
                self.start(job, vec![hook, label], env, Vec::new())
            }
            Request::Kill { job } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    let sig = if j.termed {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    };
                    j.termed = true;
                    let _ = killpg(j.pid, sig);
                    crate::log::audit(
                        "kill",
                        audit_fields!["job" => job, "pid" => j.pid, "signal" => sig],
                    );
                }
                Ok(None)
            }
            Request::Standby => {
                let on = self
                    .s
                    .policy
                    .standby_file
                    .as_ref()
                    .is_some_and(|p| std::fs::symlink_metadata(p).is_ok());
                self.send(&Reply::Standby { on })
            }
            Request::ReadRules => {
                let (text, errno) = match &self.s.policy.rules_file {
                    None => (Vec::new(), 0),
                    Some(p) => match std::fs::read(p) {
                        Ok(t) if t.len() <= MAX_DATAGRAM - 64 => (t, 0),
                        Ok(_) => (Vec::new(), libc::EFBIG),
                        Err(e) => (Vec::new(), e.raw_os_error().unwrap_or(libc::EIO)),
                    },
                };
                self.send(&Reply::Rules { text, errno })
            }
            Request::Shutdown => Ok(Some(End::Done)),
            Request::Violation { syscall } => {
                crate::log::audit(
                    "violation",
                    audit_fields!["who" => "worker", "syscall" => syscall],
                );
                Ok(Some(End::Violation(syscall)))
            }
            Request::SoSync {
                job,
                env,
                events,
                more,
            } => self.so_sync(job, env, events, more),
            Request::Dump { files } => self.dump(&files, fds),
            Request::SelectPolicy { index } => self.select_policy(index),
        }
    }

    /// A --custom-signals switch: the policy at `index` among those frozen at start becomes the
    /// one every later request is checked against. Handlers already running are left alone
    /// (their list files, uid and cgroup do not depend on the selection, which never changes
    /// the identity, capabilities or lists directory: those are fixed at start for every block).
    fn select_policy(&mut self, index: u32) -> Result<Option<End>, String> {
        let Some(p) = self.s.policies.get(index as usize) else {
            return Err(format!(
                "SelectPolicy {index}: only {} policies were configured",
                self.s.policies.len()
            ));
        };
        self.s.policy = p.clone();
        crate::log::audit(
            "select-policy",
            audit_fields!["index" => index, "label" => self.s.policy.label.clone()],
        );
        Ok(None)
    }

    /// Signal 29 / the control socket's `dump`: checks the files against clsync's layout and
    /// every fd like a list, then writes them into the configured --dump-dir, which must not
    /// exist. A directory that cannot be made (EEXIST, EACCES, …) is answered with its errno,
    /// audited, and the session goes on: the administrator's state, not the worker's doing.
    fn dump(&mut self, files: &[DumpFile], fds: Vec<OwnedFd>) -> Result<Option<End>, String> {
        let Some(dir) = self.s.policy.dump_dir.clone() else {
            return Err(
                "a Dump, but dumps are off (no --dump-dir outside the watched tree)".into(),
            );
        };
        let names = dump_layout(files)?;
        let mut sizes = Vec::with_capacity(fds.len());
        for (fd, f) in fds.iter().zip(files) {
            sizes.push(sealed_size(fd, &format!("dump file {}:", f.describe()))?);
        }
        let total: u64 = sizes.iter().fold(0, |a, &b| a.saturating_add(b));
        if total > MAX_DUMP_BYTES {
            return Err(format!(
                "a Dump of {total} bytes (at most {MAX_DUMP_BYTES})"
            ));
        }
        let shown = dir.display().to_string();
        let errno = match write_dump(&dir, &names, &fds, &sizes) {
            Ok(()) => {
                crate::log::audit(
                    "dump",
                    audit_fields!["dir" => shown, "files" => names.len(), "bytes" => total],
                );
                0
            }
            Err((e, step)) => {
                crate::log::audit(
                    "dump-failed",
                    audit_fields!["dir" => shown, "errno" => format!("{e:?}"), "step" => step],
                );
                e as i32
            }
        };
        self.send(&Reply::Dumped { errno })
    }

    /// Mode so: collects the parts of a call, checks every event, and calls the shared object's
    /// clsyncapi_sync in a handler child.
    fn so_sync(
        &mut self,
        job: u64,
        env: ExecEnv,
        events: Vec<ApiEvent>,
        more: bool,
    ) -> Result<Option<End>, String> {
        let Some(so) = self
            .s
            .policy
            .shared_object
            .clone()
            .filter(|so| so.mode == SoMode::Sync)
        else {
            return Err("SoSync, but the configured handler is not a mode-so shared object".into());
        };
        for e in &events {
            e.path
                .validate()
                .map_err(|err| format!("{err}: {:?}", e.path))?;
        }
        let mut all = match self.so_pending.take() {
            Some((j, prev)) if j == job => prev,
            Some((j, _)) => {
                return Err(format!(
                    "SoSync of job {job} while job {j} is still being sent"
                ))
            }
            None => Vec::new(),
        };
        all.extend(events);
        let bytes: usize = all.iter().map(|e| e.path.as_bytes().len() + 1).sum();
        if all.len() > MAX_SO_EVENTS || bytes > MAX_SO_BYTES {
            return Err(format!(
                "a SoSync of {} events, {bytes} path bytes (at most {MAX_SO_EVENTS}, {MAX_SO_BYTES})",
                all.len()
            ));
        }
        if more {
            self.so_pending = Some((job, all));
            return Ok(None);
        }
        if all.iter().any(|e| e.recursive) && (!self.s.policy.have_recursive_sync || all.len() != 1)
        {
            return Err(
                "a recursive SoSync event without --have-recursive-sync, or not alone in its call"
                    .into(),
            );
        }
        self.admit(job)?;
        let watch_dir = self.s.policy.watch_dir.clone();
        let c: Vec<CEvent> = all
            .iter()
            .map(|e| {
                // A recursive (--have-recursive-sync) entry is absolute, as clsync passes it.
                let path = if e.recursive {
                    path_arg(e.path.as_bytes(), Some(&watch_dir))
                } else {
                    e.path.as_bytes().to_vec()
                };
                CEvent {
                    // Validated above: no NUL.
                    path: CString::new(path).unwrap_or_default(),
                    evmask: e.evmask,
                    flags: if e.recursive { EVIF_RECURSIVELY } else { 0 },
                    objtype_old: e.old.c_value(),
                    objtype_new: e.new.c_value(),
                }
            })
            .collect();
        let desc = format!("{}: clsyncapi_sync(n={})", so.path.display(), c.len());
        self.start_so(job, so, SoCall::Sync(c), env, Vec::new(), &desc)
    }

    fn send(&self, r: &Reply) -> Result<Option<End>, String> {
        match self.reply(r) {
            Ok(()) => Ok(None),
            Err(ProtoError::Closed) => Ok(Some(End::Done)),
            Err(e) => Ok(Some(End::Failed(format!("sending a reply: {e}")))),
        }
    }

    fn stat(&self, p: &RelPath) -> StatResult {
        match resolve(&self.s.root, p, OFlag::O_PATH).and_then(fstat) {
            Ok(st) => StatResult::Found {
                kind: kind_of(st.st_mode),
                size: st.st_size.max(0) as u64,
                dev: st.st_dev,
                sig: crate::handler::signature::digest(self.s.policy.signature, &st),
            },
            Err(e) => StatResult::Errno(e as i32),
        }
    }

    /// Watches (if asked) and lists one directory of a Walk through a single fd: opened beneath
    /// the root without following any link, watched through `/proc/self/fd/N` (so a directory
    /// swapped for a symlink is never followed), then read. Full datagrams go out as they fill.
    fn walk_dir(
        &self,
        out: &mut Packer,
        buf: &mut [u8],
        idx: u32,
        dir: &RelPath,
        how: WalkHow,
    ) -> Result<Option<End>, String> {
        let WalkHow { watch, files, stat } = how;
        let failed = |out: &mut Packer, e: Errno| {
            if watch {
                crate::log::audit(
                    "watch-failed",
                    audit_fields!["path" => lossy(dir), "errno" => format!("{e:?}")],
                );
            }
            out.push(Chunk {
                dir: idx,
                watch: watch.then_some(WatchResult::Errno(e as i32)),
                entries: Vec::new(),
                last: true,
                errno: e as i32,
            });
        };
        let fd = match resolve(&self.s.root, dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) => {
                failed(out, e);
                return self.flush_full(out);
            }
        };
        let mut wd = None;
        if watch {
            let link = proc_fd_path(fd.as_raw_fd());
            wd = Some(
                match sys::inotify_add_watch(&self.s.inotify, &link, WATCH_MASK) {
                    Ok(wd) => WatchResult::Wd(wd),
                    Err(e) => {
                        crate::log::audit(
                            "watch-failed",
                            audit_fields!["path" => lossy(dir), "errno" => format!("{e:?}")],
                        );
                        WatchResult::Errno(e as i32)
                    }
                },
            );
        }
        if !files && out.is_leaf(&fd) {
            // No subdirectory to list, and the watch is already in place for any made later.
            out.push(Chunk {
                dir: idx,
                watch: wd,
                entries: Vec::new(),
                last: true,
                errno: 0,
            });
            return self.flush_full(out);
        }
        // With `stat`, every entry is lstat'ed through the directory's fd.
        let mut w = DirOut {
            idx,
            wd,
            batch: Vec::new(),
        };
        // Names whose type getdents did not tell (file systems without d_type): lstat'ed
        // after the read.
        let mut untyped: Vec<Vec<u8>> = Vec::new();
        let mut errno = 0;
        'read: loop {
            let n = match sys::getdents64(fd.as_fd(), buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    errno = e as i32;
                    break;
                }
            };
            for ent in crate::privsep::dirents::parse(&buf[..n]) {
                let ent = match ent {
                    Ok(e) => e,
                    Err(why) => {
                        crate::warning!("helper: reading {}: {why}", lossy(dir));
                        errno = libc::EIO;
                        break 'read;
                    }
                };
                let name = ent.name;
                if name == b"." || name == b".." {
                    continue;
                }
                let Some(kind) = ent.kind else {
                    untyped.push(name.to_vec());
                    continue;
                };
                if !files && kind != Kind::Dir {
                    continue;
                }
                let (mut size, mut dev) = (0, 0);
                if stat {
                    match fstatat(&fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) => {
                            size = st.st_size.max(0) as u64;
                            dev = st.st_dev;
                        }
                        Err(_) => continue, // vanished meanwhile: its delete event follows
                    }
                }
                let e = Entry {
                    name: name.to_vec(),
                    kind,
                    size,
                    dev,
                };
                if let Some(end) = self.add_entry(out, &mut w, e)? {
                    return Ok(Some(end));
                }
            }
        }
        for name in untyped {
            let Ok(st) = fstatat(&fd, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue; // vanished meanwhile
            };
            let kind = kind_of(st.st_mode);
            if !files && kind != Kind::Dir {
                continue;
            }
            let e = Entry {
                name,
                kind,
                size: if stat { st.st_size.max(0) as u64 } else { 0 },
                dev: if stat { st.st_dev } else { 0 },
            };
            if let Some(end) = self.add_entry(out, &mut w, e)? {
                return Ok(Some(end));
            }
        }
        out.pending = 0;
        out.push(Chunk {
            dir: idx,
            watch: w.wd,
            entries: w.batch,
            last: true,
            errno,
        });
        self.flush_full(out)
    }

    /// Adds one entry of the directory being read, first sending the datagram if it is full.
    fn add_entry(&self, out: &mut Packer, w: &mut DirOut, e: Entry) -> Result<Option<End>, String> {
        if out.bytes + CHUNK_OVERHEAD * 2 + out.pending + e.wire_size() > PACK_BUDGET {
            // Close this datagram with what the directory has so far.
            out.push(Chunk {
                dir: w.idx,
                watch: w.wd.take(),
                entries: std::mem::take(&mut w.batch),
                last: false,
                errno: 0,
            });
            out.pending = 0;
            if let Some(end) = self.flush(out)? {
                return Ok(Some(end));
            }
        }
        out.pending += e.wire_size();
        w.batch.push(e);
        Ok(None)
    }

    /// Sends the packed chunks if another small chunk might not fit.
    fn flush_full(&self, out: &mut Packer) -> Result<Option<End>, String> {
        if out.bytes + CHUNK_OVERHEAD * 2 > PACK_BUDGET {
            return self.flush(out);
        }
        Ok(None)
    }

    fn flush(&self, out: &mut Packer) -> Result<Option<End>, String> {
        out.bytes = 0;
        self.send(&Reply::Walked {
            chunks: std::mem::take(&mut out.chunks),
        })
    }

    fn exec(
        &mut self,
        job: u64,
        lists: &[ListKind],
        fds: Vec<OwnedFd>,
        env: ExecEnv,
        call: CallArgs,
    ) -> Result<Option<End>, String> {
        if call.sync_type == SyncType::Initialsync {
            return self.exec_initial(job, lists, fds, env, call);
        }
        let want = self.s.policy.lists();
        if lists != want.as_slice() {
            return Err(format!(
                "exec with lists {lists:?}, the configured handler takes {want:?}"
            ));
        }
        let max = self.s.policy.max_paths();
        if call.paths.len() > max {
            return Err(format!(
                "exec with {} paths, the configured handler takes at most {max}",
                call.paths.len()
            ));
        }
        check_paths(&call.paths)?;
        self.admit(job)?;
        if let Some(fixer) = self.s.policy.fixer.clone() {
            if !fds.is_empty() {
                return Err("exec of the built-in fixer with list files".into());
            }
            return self.start_fixer(job, fixer, call.paths);
        }
        if self
            .s
            .policy
            .shared_object
            .as_ref()
            .is_some_and(|so| so.mode == SoMode::Sync)
        {
            return Err("Exec of the sync handler in mode so (it is called with SoSync)".into());
        }
        // Turn each sealed memfd into a file in our own directory.
        let mut files: Vec<CString> = Vec::new();
        let mut paths: HashMap<ListKind, CString> = HashMap::new();
        for (kind, fd) in lists.iter().zip(fds) {
            let name = format!(
                ".clsync-{}.{}.{}",
                if *kind == ListKind::Include {
                    "list"
                } else {
                    "exclist"
                },
                sys::getpid(),
                job
            );
            match self.materialize(&fd, &name) {
                Ok(()) => {}
                Err(e) => {
                    self.unlink_all(&files);
                    return Err(e);
                }
            }
            let full = self.s.lists.path.join(&name);
            let c = CString::new(full.as_os_str().as_bytes())
                .map_err(|_| "NUL in lists path".to_string())?;
            files.push(CString::new(name).unwrap_or_default());
            paths.insert(*kind, c);
        }
        if let Some(so) = self.s.policy.shared_object.clone() {
            // rsyncso: clsyncapi_rsync(inclist, exclist) gets the files just written (exclist
            // NULL with --rsync-prefer-include); they are unlinked after the call, unless -U.
            let Some(inclist) = paths.get(&ListKind::Include).cloned() else {
                self.unlink_all(&files);
                return Err("rsyncso exec without an include list".into());
            };
            let exclist = paths.get(&ListKind::Exclude).cloned();
            let desc = format!(
                "{}: clsyncapi_rsync({}, {})",
                so.path.display(),
                inclist.to_string_lossy(),
                exclist
                    .as_ref()
                    .map_or("NULL".into(), |e| e.to_string_lossy().into_owned())
            );
            return self.start_so(
                job,
                so,
                SoCall::Rsync { inclist, exclist },
                env,
                files,
                &desc,
            );
        }
        let p = &self.s.policy;
        let under = p.absolute_paths.then_some(p.watch_dir.as_slice());
        let path_args: Vec<Vec<u8>> = call
            .paths
            .iter()
            .map(|r| path_arg(r.as_bytes(), under))
            .collect();
        let list_path = |k: ListKind| {
            paths
                .get(&k)
                .map(|c| c.as_bytes().to_vec())
                .unwrap_or_default()
        };
        let rest = p
            .template
            .render(&list_path, call.sync_type, call.event_mask, &path_args);
        let argv = program_argv(&p.program, rest);
        self.start(job, argv, env, files)
    }

    /// Whether a new job may start: its id is not one still running (its record would be lost,
    /// and with it the kill and the exit report), and no more than [`MAX_JOBS`] run at once.
    /// Every path that starts a handler (hook, program, fixer, shared object) asks first.
    fn admit(&self, job: u64) -> Result<(), String> {
        if self.jobs.contains_key(&job) {
            return Err(format!("exec of job {job}, which is still running"));
        }
        if self.jobs.len() >= MAX_JOBS {
            return Err(format!("more than {MAX_JOBS} handlers at once"));
        }
        Ok(())
    }

    /// Forks and execs `argv` as a handler, audits it, records the job.
    fn start(
        &mut self,
        job: u64,
        argv: Vec<CString>,
        env: ExecEnv,
        files: Vec<CString>,
    ) -> Result<Option<End>, String> {
        let envp = handler_env(env);
        let pid = match self.spawn(&argv, &envp) {
            Ok(pid) => pid,
            Err(e) => {
                self.unlink_all(&files);
                return Ok(Some(End::Failed(format!(
                    "cannot start the sync handler: {e}"
                ))));
            }
        };
        let desc = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        self.started(job, pid, &desc, files)
    }

    /// A --have-recursive-sync call: the configured initial-sync template (clsync's `---`) with
    /// one directory, made absolute here (the worker sends it relative), no list files.
    fn exec_initial(
        &mut self,
        job: u64,
        lists: &[ListKind],
        fds: Vec<OwnedFd>,
        env: ExecEnv,
        call: CallArgs,
    ) -> Result<Option<End>, String> {
        let p = &self.s.policy;
        if !p.have_recursive_sync || p.shared_object.is_some() || p.fixer.is_some() {
            return Err(
                "an initialsync exec, but --have-recursive-sync is not configured for an executed handler"
                    .into(),
            );
        }
        if !lists.is_empty() || !fds.is_empty() {
            return Err("an initialsync exec with list files".into());
        }
        if call.paths.len() != 1 {
            return Err(format!(
                "an initialsync exec with {} paths (exactly one directory)",
                call.paths.len()
            ));
        }
        check_paths(&call.paths)?;
        self.admit(job)?;
        let path_args: Vec<Vec<u8>> = if p.initial_template.takes_paths() {
            vec![path_arg(call.paths[0].as_bytes(), Some(&p.watch_dir))]
        } else {
            vec![]
        };
        let rest = p.initial_template.render(
            &|_| Vec::new(),
            SyncType::Initialsync,
            call.event_mask,
            &path_args,
        );
        let argv = program_argv(&p.program, rest);
        self.start(job, argv, env, Vec::new())
    }

    /// Forks a handler child that loads the shared object and makes `call` (see
    /// [`crate::privsep::soload`]); it becomes the handler exactly as an exec'd one does.
    fn start_so(
        &mut self,
        job: u64,
        so: SharedObject,
        call: SoCall,
        env: ExecEnv,
        files: Vec<CString>,
        desc: &str,
    ) -> Result<Option<End>, String> {
        let envp = handler_env(env);
        let helper_pid = sys::getpid();
        let pid = match sys::fork() {
            Err(e) => {
                self.unlink_all(&files);
                return Ok(Some(End::Failed(format!(
                    "cannot start the sync handler: {e}"
                ))));
            }
            Ok(ForkResult::Child) => {
                let code = so_child(self, helper_pid, &so, &call, &envp);
                sys::exit_now(code)
            }
            Ok(ForkResult::Parent { child }) => child,
        };
        self.started(job, pid, desc, files)
    }

    /// Checks that `fd` is a memfd sealed against every change and copies it into `name`.
    fn materialize(&self, fd: &OwnedFd, name: &str) -> Result<(), String> {
        let size = sealed_size(fd, "a list")?;
        let mode = if self.s.policy.uid == self.s.helper_uid {
            0o600
        } else {
            0o640
        };
        let out = openat(
            &self.s.lists.fd,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| format!("creating list file {name}: {e}"))?;
        copy_sealed(fd, size, out).map_err(|e| format!("writing list file {name}: {e}"))
    }

    fn unlink_all(&self, files: &[CString]) {
        for f in files {
            let _ = unlinkat(&self.s.lists.fd, f.as_c_str(), UnlinkatFlags::NoRemoveDir);
        }
    }

    /// A handler (or the fixer) runs: audit it, remember the job, tell the worker.
    fn started(
        &mut self,
        job: u64,
        pid: Pid,
        desc: &str,
        files: Vec<CString>,
    ) -> Result<Option<End>, String> {
        crate::log::audit(
            "exec",
            audit_fields![
                "job" => job,
                "pid" => pid,
                "uid" => self.s.policy.uid,
                "gid" => self.s.policy.gid,
                "argv" => desc,
            ],
        );
        self.jobs.insert(
            job,
            Job {
                pid,
                files,
                termed: false,
            },
        );
        self.send(&Reply::Started {
            job,
            pid: pid.as_raw(),
        })
    }

    /// Runs the built-in fixer in a child: handler ids, the handler capabilities effective (no
    /// exec, so they must be), handlers cgroup, own process group, death signal.
    fn start_fixer(
        &mut self,
        job: u64,
        fixer: crate::handler::fixer::Fixer,
        paths: Vec<RelPath>,
    ) -> Result<Option<End>, String> {
        let helper_pid = sys::getpid();
        let pid = match sys::fork() {
            Err(e) => return Ok(Some(End::Failed(format!("cannot fork the fixer: {e}")))),
            Ok(ForkResult::Child) => {
                let code = fixer_child(self, helper_pid, &fixer, &paths);
                sys::exit_now(code)
            }
            Ok(ForkResult::Parent { child }) => child,
        };
        let desc = format!("builtin-fixer ({fixer}) on {} paths", paths.len());
        self.started(job, pid, &desc, Vec::new())
    }

    /// Forks the handler: own process group, handlers cgroup, handler ids, exactly the
    /// configured capabilities as ambient, death signal, fds 0-2 only, cwd = watch root, our env.
    fn spawn(&self, argv: &[CString], envp: &[CString]) -> Result<Pid, Errno> {
        let helper_pid = sys::getpid();
        match sys::fork()? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => {
                let code = child_setup(self, helper_pid, argv, envp);
                sys::exit_now(code)
            }
        }
    }

    fn on_signals(&mut self) -> Option<End> {
        let mut term = false;
        while let Ok(Some(si)) = self.sigfd.read_signal() {
            if si.ssi_signo == Signal::SIGTERM as u32 {
                term = true;
            }
        }
        if let Some(end) = self.reap() {
            return Some(end);
        }
        // SIGTERM is our parent-death signal. A SIGTERM while the worker lives (a signal to the
        // whole process group) is the worker's to act on: it flushes through us, then shuts
        // us down.
        (term && nix::unistd::getppid() != self.s.worker).then_some(End::Terminated)
    }

    /// Reaps finished handlers and reports them (unsolicited `Exited`).
    fn reap(&mut self) -> Option<End> {
        loop {
            let st = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return None,
                Ok(st) => st,
            };
            let (pid, status) = match st {
                WaitStatus::Exited(p, c) => (p, ExitStatus::Code(c)),
                WaitStatus::Signaled(p, s, _) => (p, ExitStatus::Signal(s as i32)),
                _ => continue,
            };
            let Some(job) = self
                .jobs
                .iter()
                .find(|(_, j)| j.pid == pid)
                .map(|(k, _)| *k)
            else {
                continue;
            };
            if let Some(j) = self.jobs.remove(&job) {
                if !self.s.policy.keep_lists {
                    self.unlink_all(&j.files);
                }
            }
            crate::log::audit(
                "exited",
                audit_fields!["job" => job, "pid" => pid, "status" => format!("{status:?}")],
            );
            if let Err(ProtoError::Closed) = self.reply(&Reply::Exited { job, status }) {
                return Some(End::Done);
            }
        }
    }

    /// Ends every handler (TERM, then KILL after a grace second), removes lists, cgroups and our
    /// lists directory. Runs on every way out.
    fn cleanup(&mut self, worker_alive: bool) {
        for j in self.jobs.values() {
            let _ = killpg(j.pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.jobs.is_empty() && Instant::now() < deadline {
            let pids: Vec<(u64, Pid)> = self.jobs.iter().map(|(k, j)| (*k, j.pid)).collect();
            for (k, pid) in pids {
                if let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
                    waitpid(pid, Some(WaitPidFlag::WNOHANG))
                {
                    if let Some(j) = self.jobs.remove(&k) {
                        if !self.s.policy.keep_lists {
                            self.unlink_all(&j.files);
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for j in self.jobs.values() {
            let _ = killpg(j.pid, Signal::SIGKILL);
            let _ = waitpid(j.pid, None);
            if !self.s.policy.keep_lists {
                self.unlink_all(&j.files);
            }
        }
        self.jobs.clear();
        if let Some(cg) = &self.s.cgroups {
            // Out of the handlers group first (we live there, see run()), then end what is left.
            let me = sys::getpid().as_raw().to_string();
            for parent in cg.parent_paths() {
                let _ = std::fs::write(parent.join("cgroup.procs"), &me);
            }
            if let Err(e) = cg.kill_all_handlers() {
                crate::warning!("{e}");
            }
            // So that the daemon's cgroups can go before the worker exits, the worker goes back
            // to the group it started in (as uid 0 the helper may move it there).
            if worker_alive {
                for parent in cg.parent_paths() {
                    let procs = parent.join("cgroup.procs");
                    if let Err(e) = std::fs::write(&procs, self.s.worker.as_raw().to_string()) {
                        crate::debug!(1, "moving the worker back to {}: {e}", procs.display());
                    }
                }
            }
        }
        // The janitor removes the cgroups and our lists directory: tell it now (one byte; it
        // also acts on EOF), and wait for it so that everything is gone when we exit.
        let _ = nix::unistd::write(&self.s.janitor_write, b"x");
        if let Some(j) = self.s.janitor {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                match waitpid(j, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
                    _ => break,
                }
            }
        }
    }
}

/// What a handler child becomes between fork and exec (or the fixer's work): default signals,
/// its own process group (it is in the handlers cgroup already: the helper lives there), cwd =
/// the watch root, only the fds in `keep`
/// (and 0-2), the handler's ids, exactly the handler's capabilities (ambient, and with
/// `effective` also effective, for the fixer that does not exec), and a death signal after
/// the uid change. `Err(126)` if any step fails.
fn enter_handler(h: &Helper, helper_pid: Pid, keep: &[RawFd], effective: bool) -> Result<(), i32> {
    use crate::sandbox::caps;
    let p = &h.s.policy;
    sys::reset_signals_for_exec();
    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)).map_err(|_| 126)?;
    nix::unistd::fchdir(&h.s.root).map_err(|_| 126)?;
    if keep.is_empty() {
        sys::close_from(3).map_err(|_| 126)?;
    } else {
        sys::close_all_except(keep).map_err(|_| 126)?;
    }
    crate::sandbox::identity::drop_to(p.uid, p.gid).map_err(|e| {
        crate::error!("handler: cannot switch to uid {} gid {}: {e}", p.uid, p.gid);
        126
    })?;
    caps::handler_child_caps(&p.caps).map_err(|e| {
        crate::error!("handler: cannot set its capabilities: {e}");
        126
    })?;
    if effective {
        let eff: ::caps::CapsHashSet = p.caps.iter().copied().collect();
        ::caps::set(None, ::caps::CapSet::Effective, &eff).map_err(|e| {
            crate::error!("fixer: cannot raise its capabilities: {e}");
            126
        })?;
    }
    if caps::set_pdeathsig(Signal::SIGTERM).is_err() || nix::unistd::getppid() != helper_pid {
        return Err(126);
    }
    Ok(())
}

fn child_setup(h: &Helper, helper_pid: Pid, argv: &[CString], envp: &[CString]) -> i32 {
    if let Err(code) = enter_handler(h, helper_pid, &[], false) {
        return code;
    }
    let program = argv
        .first()
        .cloned()
        .unwrap_or_else(|| h.s.policy.program.clone());
    let e = nix::unistd::execve(&program, argv, envp)
        .err()
        .unwrap_or(Errno::EINVAL);
    crate::error!("cannot execute the sync handler {program:?}: {e}");
    if e == Errno::ENOENT {
        2
    } else {
        127
    }
}

/// The configured program followed by its rendered arguments. No argument can hold a NUL: paths
/// were validated and the templates came from a C argv.
fn program_argv(program: &CString, rest: Vec<Vec<u8>>) -> Vec<CString> {
    std::iter::once(program.clone())
        .chain(rest.into_iter().filter_map(|a| CString::new(a).ok()))
        .collect()
}

/// The environment every handler gets: a fixed PATH and clsync's CLSYNC_* variables.
fn handler_env(env: ExecEnv) -> Vec<CString> {
    [
        format!("PATH={HANDLER_PATH}"),
        format!("CLSYNC_STATUS={}", env.status.word()),
        format!("CLSYNC_ITERATION={}", env.iteration),
    ]
    .into_iter()
    .filter_map(|s| CString::new(s).ok())
    .collect()
}

/// A shared-object handler child: the handler's identity and capabilities (effective, as no
/// exec raises the ambient ones), its environment, then the load and the call.
fn so_child(
    h: &Helper,
    helper_pid: Pid,
    so: &SharedObject,
    call: &SoCall,
    envp: &[CString],
) -> i32 {
    let keep: Vec<RawFd> = crate::log::syslog_fd().into_iter().collect();
    if let Err(code) = enter_handler(h, helper_pid, &keep, true) {
        return code;
    }
    // The environment an exec'd handler would get, and nothing of the helper's. This child is
    // single-threaded, so changing the environment is sound.
    let old: Vec<std::ffi::OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in old {
        std::env::remove_var(k);
    }
    for kv in envp {
        if let Some((k, v)) = kv.to_str().ok().and_then(|s| s.split_once('=')) {
            std::env::set_var(k, v);
        }
    }
    soload::run(so, call)
}

fn fixer_child(
    h: &Helper,
    helper_pid: Pid,
    fixer: &crate::handler::fixer::Fixer,
    paths: &[RelPath],
) -> i32 {
    let mut keep = vec![h.s.root.as_raw_fd()];
    keep.extend(crate::log::syslog_fd());
    if let Err(code) = enter_handler(h, helper_pid, &keep, true) {
        return code;
    }
    crate::privsep::fixer::run(&h.s.root, fixer, paths)
}

/// The size of `fd` if it is a memfd sealed against every change (write, grow, shrink, more
/// seals): what the worker sends can no longer change once the helper checked it. Anything
/// else (a regular file, a pipe, an unsealed or partly sealed memfd) is a refusal.
/// `what` names the fd in the refusal ("a list", "a dump file").
fn sealed_size(fd: &OwnedFd, what: &str) -> Result<u64, String> {
    let need = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_SEAL;
    let seals = fcntl(fd, FcntlArg::F_GET_SEALS)
        .map_err(|e| format!("{what} fd is not a sealable memfd (F_GET_SEALS: {e})"))?;
    if !SealFlag::from_bits_truncate(seals).contains(need) {
        return Err(format!(
            "{what} memfd is not fully sealed (seals {seals:#x})"
        ));
    }
    let st = fstat(fd).map_err(|e| format!("fstat of {what} fd: {e}"))?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(format!("{what} fd is not a regular memfd"));
    }
    Ok(st.st_size.max(0) as u64)
}

/// Copies the first `size` bytes of the sealed memfd `fd` into `out`.
fn copy_sealed(fd: &OwnedFd, size: u64, out: OwnedFd) -> Result<(), Errno> {
    let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let src = std::fs::File::from(fd.try_clone().map_err(io)?);
    let dst = std::fs::File::from(out);
    let mut off = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while off < size {
        let n = src.read_at(&mut buf, off).map_err(io)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], off).map_err(io)?;
        off += n as u64;
    }
    Ok(())
}

fn check_paths(paths: &[RelPath]) -> Result<(), String> {
    if paths.len() > MAX_BATCH {
        return Err(format!(
            "a batch of {} paths (at most {MAX_BATCH})",
            paths.len()
        ));
    }
    for p in paths {
        p.validate().map_err(|e| format!("{e}: {p:?}"))?;
    }
    Ok(())
}

fn proc_fd_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

fn lossy(p: &RelPath) -> String {
    String::from_utf8_lossy(p.as_bytes()).into_owned()
}

fn name(r: &Request) -> &'static str {
    match r {
        Request::Hello { .. } => "Hello",
        Request::Walk { .. } => "Walk",
        Request::Unwatch { .. } => "Unwatch",
        Request::Stat { .. } => "Stat",
        Request::Exec { .. } => "Exec",
        Request::Kill { .. } => "Kill",
        Request::ReadRules => "ReadRules",
        Request::Standby => "Standby",
        Request::Shutdown => "Shutdown",
        Request::Violation { .. } => "Violation",
        Request::SoSync { .. } => "SoSync",
        Request::Dump { .. } => "Dump",
        Request::SelectPolicy { .. } => "SelectPolicy",
    }
}

/// Most bytes one dump may write: the worker's memfds are charged to its memory cgroup, and
/// this bounds what it can make the helper put on the administrator's disk.
pub const MAX_DUMP_BYTES: u64 = 1 << 30;

/// Where a dump file goes: the dump directory itself, `queue/` or `threads/`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DumpSub {
    Root,
    Queue,
    Threads,
}

/// Checks a Dump's files against clsync's layout (`instance`, `queue/0` … `queue/3`, then
/// distinct `threads/ITER-NUM-PID`, at most [`MAX_DUMP_THREADS`]) and names them: every name is
/// made here from typed numbers, none comes from the worker.
fn dump_layout(files: &[DumpFile]) -> Result<Vec<(DumpSub, String)>, String> {
    let allowed = "a dump is instance, queue/0 … queue/3, then threads/ITERATION-NUM-PID";
    if files.len() < 5 {
        return Err(format!("a Dump of {} files ({allowed})", files.len()));
    }
    if files.len() > 5 + MAX_DUMP_THREADS {
        return Err(format!(
            "a Dump of {} files (at most {})",
            files.len(),
            5 + MAX_DUMP_THREADS
        ));
    }
    let mut out: Vec<(DumpSub, String)> = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let fits = match (i, f) {
            (0, DumpFile::Instance) => true,
            (1..=4, DumpFile::Queue(n)) => usize::from(*n) == i - 1,
            (5.., DumpFile::Thread { .. }) => f.name().is_some(),
            _ => false,
        };
        if !fits {
            return Err(format!(
                "dump file {} is not allowed at position {i} ({allowed})",
                f.describe()
            ));
        }
        let name = f.name().unwrap_or_default();
        let entry = match name.split_once('/') {
            Some(("queue", leaf)) => (DumpSub::Queue, leaf.to_string()),
            Some(("threads", leaf)) => (DumpSub::Threads, leaf.to_string()),
            _ => (DumpSub::Root, name),
        };
        if out.contains(&entry) {
            return Err(format!("dump file {} twice", f.describe()));
        }
        out.push(entry);
    }
    Ok(out)
}

/// Creates the dump directory (mode 0750; it must not exist: mkdir never follows a symlink
/// there) and its `queue` and `threads` subdirectories, and writes each file (mode 0640)
/// with `openat` from its directory's fd, `O_CREAT | O_EXCL | O_NOFOLLOW`. The error names the
/// step that failed.
fn write_dump(
    dir: &std::path::Path,
    names: &[(DumpSub, String)],
    fds: &[OwnedFd],
    sizes: &[u64],
) -> Result<(), (Errno, String)> {
    let dir_mode = Mode::from_bits_truncate(0o750);
    let file_mode = Mode::from_bits_truncate(0o640);
    let at = |step: &str| {
        let step = step.to_string();
        move |e: Errno| (e, step)
    };
    nix::unistd::mkdir(dir, dir_mode).map_err(at("mkdir"))?;
    let open_dir = |parent: Option<&OwnedFd>, name: &str| -> Result<OwnedFd, Errno> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match parent {
            None => nix::fcntl::open(dir, flags, Mode::empty())?,
            Some(p) => openat(p, name, flags, Mode::empty())?,
        };
        // Exactly 0750, whatever the umask.
        nix::sys::stat::fchmod(&fd, dir_mode)?;
        Ok(fd)
    };
    let root = open_dir(None, "").map_err(at("open"))?;
    let mut subs = Vec::new();
    for sub in ["queue", "threads"] {
        nix::sys::stat::mkdirat(&root, sub, dir_mode).map_err(at(&format!("mkdir {sub}")))?;
        subs.push(open_dir(Some(&root), sub).map_err(at(&format!("open {sub}")))?);
    }
    for (((sub, leaf), fd), &size) in names.iter().zip(fds).zip(sizes) {
        let parent = match sub {
            DumpSub::Root => &root,
            DumpSub::Queue => &subs[0],
            DumpSub::Threads => &subs[1],
        };
        let out = openat(
            parent,
            leaf.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            file_mode,
        )
        .map_err(at(&format!("create {leaf}")))?;
        nix::sys::stat::fchmod(&out, file_mode).map_err(at(&format!("chmod {leaf}")))?;
        copy_sealed(fd, size, out).map_err(at(&format!("write {leaf}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn base() -> Vec<DumpFile> {
        vec![
            DumpFile::Instance,
            DumpFile::Queue(0),
            DumpFile::Queue(1),
            DumpFile::Queue(2),
            DumpFile::Queue(3),
        ]
    }

    fn thread(num: u64) -> DumpFile {
        DumpFile::Thread {
            iteration: 4,
            num,
            pid: 100 + num as i32,
        }
    }

    #[test]
    fn dump_layout_is_clsyncs_and_nothing_else() {
        let mut ok = base();
        ok.extend([thread(1), thread(2)]);
        let names = dump_layout(&ok).unwrap();
        assert_eq!(names[0], (DumpSub::Root, "instance".to_string()));
        assert_eq!(names[4], (DumpSub::Queue, "3".to_string()));
        assert_eq!(names[6], (DumpSub::Threads, "4-2-102".to_string()));
        let refused = |files: Vec<DumpFile>, why: &str| {
            let e = dump_layout(&files).unwrap_err();
            assert!(e.contains(why), "{files:?}: {e}");
        };
        refused(base()[..4].to_vec(), "a Dump of 4 files");
        let mut q4 = base();
        q4[4] = DumpFile::Queue(4);
        refused(q4, "dump file queue/4 is not allowed");
        let mut swapped = base();
        swapped.swap(1, 2);
        refused(swapped, "dump file queue/1 is not allowed at position 1");
        let mut twice = base();
        twice.extend([thread(1), thread(1)]);
        refused(twice, "threads/4-1-101 twice");
        let mut no_pid = base();
        no_pid.push(DumpFile::Thread {
            iteration: 1,
            num: 1,
            pid: 0,
        });
        refused(no_pid, "threads/1-1-0 is not allowed");
        let mut queue_late = base();
        queue_late.push(DumpFile::Queue(0));
        refused(queue_late, "queue/0 is not allowed at position 5");
        let mut many = base();
        many.extend((0..=MAX_DUMP_THREADS as u64).map(thread));
        refused(many, "at most");
    }

    fn memfd(text: &[u8]) -> OwnedFd {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create("t", MFdFlags::MFD_ALLOW_SEALING).unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(text).unwrap();
        let fd = OwnedFd::from(f);
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_SEAL,
            ),
        )
        .unwrap();
        fd
    }

    #[test]
    fn a_dump_is_written_once_with_its_modes_and_never_over_something() {
        let top = std::env::temp_dir().join(format!("clsync-rs-dump-unit.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        std::fs::create_dir(&top).unwrap();
        let dir = top.join("d");
        let mut files = base();
        files.push(thread(7));
        let names = dump_layout(&files).unwrap();
        let texts: Vec<Vec<u8>> = (0..files.len())
            .map(|i| format!("content {i}\n").into_bytes())
            .collect();
        let fds: Vec<OwnedFd> = texts.iter().map(|t| memfd(t)).collect();
        let sizes: Vec<u64> = fds.iter().map(|f| sealed_size(f, "t").unwrap()).collect();
        write_dump(&dir, &names, &fds, &sizes).unwrap();
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        for d in ["", "queue", "threads"] {
            assert_eq!(mode(&dir.join(d)), 0o750, "{d}");
        }
        assert_eq!(std::fs::read(dir.join("instance")).unwrap(), texts[0]);
        assert_eq!(std::fs::read(dir.join("queue/3")).unwrap(), texts[4]);
        assert_eq!(
            std::fs::read(dir.join("threads/4-7-107")).unwrap(),
            texts[5]
        );
        assert_eq!(mode(&dir.join("queue/0")), 0o640);
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(std::fs::metadata(dir.join("queue/0")).unwrap().uid(), me);
        // A second dump into the same place: EEXIST, nothing touched.
        let e = write_dump(&dir, &names, &fds, &sizes).unwrap_err();
        assert_eq!(e.0, Errno::EEXIST);
        // A symlink where the dump dir would go is not followed.
        let elsewhere = top.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = top.join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert_eq!(
            write_dump(&link, &names, &fds, &sizes).unwrap_err().0,
            Errno::EEXIST
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // An unsealed memfd is refused by name.
        let loose =
            nix::sys::memfd::memfd_create("t", nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING)
                .unwrap();
        let e = sealed_size(&loose, "dump file queue/0:").unwrap_err();
        assert!(
            e.contains("dump file queue/0: memfd is not fully sealed"),
            "{e}"
        );
        std::fs::remove_dir_all(&top).unwrap();
    }
}
