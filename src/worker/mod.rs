//! The unprivileged worker's event loop. It owns the pipeline, as a chain of small stages:
//!
//! 1. [`walk`]: watch and list directories through the helper (start, new dirs, rescans);
//! 2. [`events`]: inotify bytes → [`crate::monitor::inotify::events`] → watch-tree upkeep and
//!    rules → [`Queues`] (aggregation, delays);
//! 3. [`passes`]: what is due → lists in sealed memfds / paths → `Exec` at the helper → exit
//!    codes, retries, `--threading`.
//!
//! This file holds the state and the event loop that drives the stages.
//!
//! Everything that needs privilege (listing directories, adding watches, stat, running the
//! handler) is a request to the helper; the worker holds no capability and opens no path.
#![forbid(unsafe_code)]

mod dump;
mod events;
mod passes;
mod switch;
mod walk;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cli::Threading;
use crate::config::{Config, Mode};
use crate::handler::rsynclist::{ListFlags, RsyncLists};
use crate::handler::shelllist;
use crate::monitor::inotify::{events, RawEvent};
use crate::monitor::tree::{NodeId, Tree, ROOT};
use crate::privsep::client::{path_cost, Client, ClientError, BATCH_BYTES};
use crate::privsep::policy::ExecPolicy;
use crate::privsep::protocol::{
    ApiEvent, CallArgs, ExecEnv, ExitStatus, HandlerRef, Kind, ListKind, RelPath, StatResult,
    Status, SyncType, WatchResult,
};
use crate::queue::{Batch, Delays, Item, QueueId, Queues};
use crate::rules::{self, ObjKind, Rules};
use crate::testhooks::TestHooks;

/// Exit status when the helper ended unexpectedly.
pub const EXIT_HELPER_GONE: i32 = 70;
/// Most paths per Walk/Stat batch (the byte budget usually binds first).
const MAX_BATCH_DIRS: usize = crate::privsep::protocol::MAX_BATCH;
/// The least time between two reads of inotify while a running handler keeps the next pass
/// waiting, with the kernel's default queue of [`DEFAULT_INOTIFY_QUEUE`] events: short enough
/// that the queue does not fill at any plausible rate (800,000 events a second), long enough to
/// read a burst in a few large gulps. A shorter queue gets a proportionally shorter gap.
const READ_GAP: Duration = Duration::from_millis(20);
/// fs.inotify.max_queued_events's default.
pub const DEFAULT_INOTIFY_QUEUE: u32 = 16_384;

/// [`READ_GAP`] for an inotify instance holding `queue` events.
fn read_gap(queue: u32) -> Duration {
    READ_GAP * queue.min(DEFAULT_INOTIFY_QUEUE) / DEFAULT_INOTIFY_QUEUE
}

/// Fds and facts the worker was handed by the spawn step.
pub struct WorkerSetup {
    pub cfg: Config,
    pub client: Client,
    pub inotify: OwnedFd,
    /// fs.inotify.max_queued_events when `inotify` was made: how many events it holds.
    pub inotify_queue: u32,
    pub helper: Pid,
    pub sigfd: SignalFd,
    /// Test-only switches (empty outside `test-hooks` builds), read before the sandbox closed.
    pub hooks: TestHooks,
    /// --status-file, opened by root before the sandbox; the worker rewrites it in place.
    pub status_file: Option<std::fs::File>,
    /// systemd notifications (Type=notify), connected before the sandbox.
    pub notify: Option<crate::notify::Notifier>,
    /// --socket: the control socket, bound and listening before the sandbox.
    pub control: Option<crate::control::Control>,
    /// The janitor's pipes: our write end (closing it says we are done) and the read end of
    /// its "done" pipe (EOF once the cgroups, lists and files are gone).
    pub janitor: Option<(OwnedFd, OwnedFd)>,
}

/// Blocks the signals the worker handles (with the --custom-signals ones, `custom`) and returns
/// a signalfd for them (before seccomp).
pub fn signal_fd(custom: &[i32]) -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for sig in crate::sys::ADMIN_SIGNALS
        .into_iter()
        .chain([Signal::SIGCHLD])
    {
        mask.add(sig);
    }
    let mask = crate::sys::sigset_with(mask, custom);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// One handler call of a pass: its sealed lists and per-call values, or (mode so) the events
/// for the shared object's clsyncapi_sync.
struct Call {
    lists: Vec<(ListKind, OwnedFd)>,
    args: CallArgs,
    so_events: Option<Vec<ApiEvent>>,
}

struct Running {
    job: u64,
    /// The current call's handler pid, the iteration the pass counts as, when the call
    /// started (unix seconds) and which try of the pass it is: for a dump's `threads/` files.
    pid: i32,
    iteration: u64,
    started: u64,
    tries: u64,
    batch: Batch,
    initial: bool,
    /// Calls of this pass still to run after the current one (argv-size splits, per-path calls).
    rest: VecDeque<Call>,
    /// -k: when the current call is killed; `kills` counts the signals sent.
    deadline: Option<Instant>,
    kills: u32,
    /// A --have-recursive-sync call of this directory (put back for a retry).
    recursive: Option<Vec<u8>>,
}

/// inotify bits clsync reports for nodes found by a walk.
const CREATED_DIR: u32 = libc::IN_CREATE | libc::IN_ISDIR;
const CREATED_FILE: u32 = libc::IN_CREATE;

/// What a walk does with the directories it finds.
#[derive(Clone, Copy, PartialEq, Eq)]
struct WalkMode {
    watch: bool,
    /// Queue for the exclude lines the rules produce.
    excludes: QueueId,
    /// Non-rsync modes: queue every node found, one by one, into this queue.
    nodes: Option<QueueId>,
    /// Compare with what the tree already holds and drop directories that are gone (rescan).
    prune: bool,
    /// -F: ignore the rules (the initial sync).
    full: bool,
}

pub struct Worker {
    cfg: Config,
    policy: ExecPolicy,
    /// simple mode: one handler call per raw event, in order, no aggregation.
    fifo: VecDeque<(Vec<u8>, u32)>,
    client: Client,
    inotify: OwnedFd,
    helper: Pid,
    sigfd: SignalFd,
    tree: Tree,
    queues: Queues,
    rules: Rules,
    status: Status,
    iteration: u64,
    next_job: u64,
    /// Passes whose handler is running (at most one unless --threading).
    running: Vec<Running>,
    /// When inotify was last read, and the least time to the next read while a handler keeps
    /// the next pass waiting (see [`READ_GAP`]).
    last_read: Instant,
    read_gap: Duration,
    /// --threading=safe: entries held back because a running pass has the same path (or a
    /// recursive ancestor); requeued when a pass ends.
    lockwait: Batch,
    tries: u64,
    retry_at: Option<Instant>,
    initial_done: bool,
    quitting: bool,
    /// The last read of pending events before exiting was done.
    drained: bool,
    /// SIGQUIT/SIGALRM with a --pre-exit-hook: run it once the current sync is done.
    preexit_pending: bool,
    status_file: Option<std::fs::File>,
    janitor: Option<(OwnedFd, OwnedFd)>,
    notify: Option<crate::notify::Notifier>,
    control: Option<crate::control::Control>,
    /// The last finished sync (exit code, unix time) and how many failed, for `status`.
    last_sync: Option<(i32, u64)>,
    failures: u64,
    /// --modification-signature: the last digest per path.
    signatures: HashMap<Vec<u8>, u64>,
    /// st_dev of the watch dir (--one-file-system).
    root_dev: u64,
    /// -X: mount points found by walks; their content is excluded from every rsync call.
    mount_points: std::collections::HashSet<Vec<u8>>,
    resync: bool,
    reload: bool,
    /// Signal 29: a dump into --dump-dir is due.
    dump_pending: bool,
    exit_code: Option<i32>,
    buf: Vec<u8>,
    hooks: TestHooks,
    /// Whether excluded paths are used by any list (see [`Worker::exclude`]).
    keep_excludes: bool,
    /// --have-recursive-sync: directories (relative; the root is empty) waiting for their
    /// `initialsync` call, which runs before any other pass, without delay.
    recursive: VecDeque<Vec<u8>>,
    /// Every configuration the daemon may switch to (index = the helper's policy index: 0 the
    /// start configuration, then the --custom-signals blocks); `cfg` is the one in force.
    blocks: Vec<Config>,
    /// --custom-signals: signal number → block index.
    custom_signals: Vec<(i32, usize)>,
    /// A block switch asked for (index, what asked), done once no handler runs.
    pending_block: Option<(usize, String)>,
}

impl Worker {
    pub fn new(s: WorkerSetup) -> Worker {
        let delays = if s.cfg.exit_on_no_events {
            Delays {
                sync: Duration::ZERO,
                collect: Duration::ZERO,
                bigfile: Duration::ZERO,
            }
        } else {
            Delays {
                sync: Duration::from_secs(s.cfg.delay_sync),
                collect: Duration::from_secs(s.cfg.delay_collect),
                bigfile: Duration::from_secs(s.cfg.delay_bigfile),
            }
        };
        let policy = ExecPolicy::from_config(&s.cfg);
        let custom_signals = s.cfg.custom_signals.clone();
        let blocks: Vec<Config> = std::iter::once(&s.cfg)
            .chain(s.cfg.alternates.iter())
            .map(|c| Config {
                alternates: Vec::new(),
                ..c.clone()
            })
            .collect();
        let keep_excludes = s.cfg.mode.is_rsync() || policy.lists().contains(&ListKind::Exclude);
        Worker {
            blocks,
            custom_signals,
            pending_block: None,
            keep_excludes,
            recursive: VecDeque::new(),
            rules: s.cfg.rules.clone(),
            policy,
            fifo: VecDeque::new(),
            cfg: s.cfg,
            client: s.client,
            inotify: s.inotify,
            helper: s.helper,
            sigfd: s.sigfd,
            tree: Tree::new(),
            queues: Queues::new(delays),
            status: Status::Initsync,
            iteration: 0,
            next_job: 1,
            running: Vec::new(),
            last_read: Instant::now(),
            read_gap: read_gap(s.inotify_queue),
            lockwait: Batch::default(),
            tries: 0,
            retry_at: None,
            initial_done: false,
            quitting: false,
            drained: false,
            preexit_pending: false,
            status_file: s.status_file,
            janitor: s.janitor,
            notify: s.notify,
            control: s.control,
            last_sync: None,
            failures: 0,
            signatures: HashMap::new(),
            root_dev: 0,
            mount_points: Default::default(),
            resync: false,
            reload: false,
            dump_pending: false,
            exit_code: None,
            // inotify needs room for at least one event with a maximal name.
            buf: vec![0u8; 256 * 1024],
            hooks: s.hooks,
        }
    }

    /// Runs until the daemon should exit; returns the exit code.
    pub fn run(mut self) -> i32 {
        let code = match self.main() {
            // The exit hook runs on every normal end (clsync skips it after a failed sync).
            Ok(0) if self.cfg.exit_hook.is_some() => {
                self.set_status(Status::Terminating);
                match self.run_hook(HandlerRef::ExitHook) {
                    Ok(()) => 0,
                    Err(e) => {
                        crate::error!("exit hook: {e}");
                        EXIT_HELPER_GONE
                    }
                }
            }
            Ok(code) => code,
            Err(ClientError::Refused(r)) => {
                crate::error!("the helper refused a request and ended the session: {r}");
                EXIT_HELPER_GONE
            }
            Err(e) => {
                crate::error!("{e}");
                self.helper_status();
                EXIT_HELPER_GONE
            }
        };
        self.finish();
        code
    }

    /// What the control socket reports.
    fn snapshot(&self) -> crate::control::Snapshot {
        crate::control::Snapshot {
            status: self.status.word().to_string(),
            label: self.cfg.label.clone(),
            config_block: self.cfg.block.clone(),
            queued: usize::from(!self.pending_empty()),
            running: self.running.len(),
            watched: self.tree.watched(),
            iteration: self.iteration,
            last_sync: self.last_sync,
            failures: self.failures,
            settings: self.settings(),
        }
    }

    /// Serves the readable control fds (`0`: the listener, `i`: connection `i - 1`), from the
    /// highest index down, as serving may remove a connection.
    fn serve_control(&mut self, mut ready: Vec<usize>) -> Result<(), ClientError> {
        let snap = self.snapshot();
        // Out of `self` while it is served: a `dump` needs the worker (and its helper channel).
        let Some(mut c) = self.control.take() else {
            return Ok(());
        };
        ready.sort_unstable();
        let mut die = false;
        let mut fatal = None;
        let mut on_ask = |num: u64, ask: crate::control::Ask| match ask {
            crate::control::Ask::Dump(dir) => {
                let r = match self.socket_dump(dir) {
                    Ok(r) => r,
                    Err(e) => {
                        fatal.get_or_insert(e);
                        crate::control::DumpResult::Failed {
                            dir: dir.unwrap_or_default().to_string(),
                            errno: libc::EIO,
                        }
                    }
                };
                crate::control::dump_reply(num, &r)
            }
            crate::control::Ask::Set(setting) => {
                crate::control::set_reply(num, &self.socket_set(setting))
            }
        };
        for &i in ready.iter().rev().filter(|&&i| i > 0) {
            if c.serve(i - 1, &snap, &mut on_ask) == crate::control::Action::Die {
                die = true;
            }
        }
        if ready.first() == Some(&0) {
            c.accept();
        }
        self.control = Some(c);
        if let Some(e) = fatal {
            return Err(e);
        }
        if die {
            crate::info!("control socket: die");
            self.quitting = true;
            self.set_status(Status::Terminating);
        }
        Ok(())
    }

    /// Writes the state word to --status-file (in place: the worker cannot create files).
    fn set_status(&mut self, st: Status) {
        self.status = st;
        if let Some(n) = &self.notify {
            n.send(&format!("STATUS={}", st.word()));
        }
        if let Some(f) = self.status_file.as_mut() {
            use std::io::{Seek, SeekFrom};
            let word = st.word().as_bytes();
            let ok = f.seek(SeekFrom::Start(0)).is_ok()
                && f.write_all(word).is_ok()
                && f.set_len(word.len() as u64).is_ok();
            if !ok {
                crate::warning!("cannot update the status file");
            }
        }
    }

    /// Runs a hook (`[hook, label]`, as the handler's user) and waits for it; its exit code
    /// is only logged, as clsync ignores it.
    fn run_hook(&mut self, which: HandlerRef) -> Result<(), ClientError> {
        let job = self.next_job;
        self.next_job += 1;
        let env = ExecEnv {
            status: self.status,
            iteration: self.iteration,
        };
        let args = CallArgs {
            sync_type: SyncType::Sync,
            event_mask: None,
            paths: vec![],
        };
        self.client
            .exec_handler(which, job, Vec::new(), env, args)?;
        loop {
            if let Some((_, st)) = self
                .client
                .take_exits()
                .into_iter()
                .find(|(j, _)| *j == job)
            {
                crate::debug!(1, "{which:?} ended: {st:?}");
                return Ok(());
            }
            self.client.pump()?;
        }
    }

    /// Orderly end: asks the helper to end its handlers and clean up, and waits (bounded) for it
    /// to exit, so that no handler, list or cgroup is left when this process exits.
    fn finish(&mut self) {
        if let Some(n) = &self.notify {
            n.send("STOPPING=1");
        }
        let mut ended = false;
        if self.client.shutdown().is_ok() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !ended {
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = left.as_millis().min(5000) as u16;
                let mut fds = [PollFd::new(self.client.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(0) => break,
                    Ok(_) => ended = self.client.pump().is_err(), // EOF: the helper is done
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
        }
        let flags = if ended {
            None
        } else {
            Some(WaitPidFlag::WNOHANG)
        };
        let _ = waitpid(self.helper, flags);
        // Let the janitor go (it also needs the helper gone) and wait until it has removed the
        // cgroups, the lists and the pid/status files (bounded).
        if let Some((write, done)) = self.janitor.take() {
            drop(write);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut b = [0u8; 1];
            loop {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(5000) as u16;
                let mut fds = [PollFd::new(done.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(left)) {
                    Ok(0) => break,
                    Ok(_) => match nix::unistd::read(&done, &mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => continue,
                    },
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
        }
    }

    fn helper_status(&self) {
        match waitpid(self.helper, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => {
                crate::error!("the privileged helper exited with status {c}")
            }
            Ok(WaitStatus::Signaled(_, s, _)) => {
                crate::error!("the privileged helper was killed by {s}")
            }
            _ => {}
        }
    }

    fn main(&mut self) -> Result<i32, ClientError> {
        self.hooks.before_handshake(&self.client);
        self.client.handshake()?;
        self.set_status(Status::Initsync);
        let started = Instant::now();
        if self.cfg.one_file_system {
            if let Some(StatResult::Found { dev, .. }) =
                self.client.stat(vec![RelPath::root()])?.first()
            {
                self.root_dev = *dev;
            }
        }
        let per_node = self.per_node();
        let initial = !self.cfg.skip_initialsync;
        // --have-recursive-sync: the walk only watches; one recursive call syncs the tree.
        let recursive = self.cfg.have_recursive_sync;
        let mode = WalkMode {
            watch: !self.cfg.only_initialsync,
            excludes: QueueId::Instant,
            nodes: (per_node && initial && !recursive).then_some(QueueId::Instant),
            prune: false,
            full: self.cfg.full_initialsync,
        };
        if recursive && initial {
            self.recursive.push_back(Vec::new());
        }
        if mode.nodes.is_some() && self.sync_allowed(b"", ObjKind::Dir) {
            self.enqueue(QueueId::Instant, Vec::new(), Item::new(CREATED_DIR, false));
        }
        self.walk(vec![ROOT], mode)?;
        crate::info!(
            "watching {} directories ({} entries walked in {:.3}s)",
            self.tree.watched(),
            self.tree.len(),
            started.elapsed().as_secs_f64()
        );
        if !initial {
            self.queues = Queues::new(self.delays());
            self.mark_ready();
        } else if !per_node {
            // One recursive entry for the whole tree; the walk collected the excludes.
            self.enqueue(QueueId::Instant, Vec::new(), Item::new(CREATED_DIR, true));
        } else if self.pending_empty() {
            // Nothing the rules let us sync: the initial sync is trivially done.
            self.mark_ready();
        }
        loop {
            // Handler exits may have arrived while we waited for another reply (a walk, a
            // stat): handle them before deciding whether to sleep.
            for (job, status) in self.client.take_exits() {
                self.on_exit(job, status)?;
            }
            if let Some(code) = self.exit_code {
                return Ok(code);
            }
            if self.pending_block.is_some() && self.running.is_empty() {
                self.apply_pending_block()?;
            }
            if self.preexit_pending && self.running.is_empty() {
                self.preexit_pending = false;
                self.run_hook(HandlerRef::PreExitHook)?;
            }
            let now = Instant::now();
            if self.can_start() {
                let ignore = self.quitting || self.cfg.exit_on_no_events;
                let due = self.next_pass(now, ignore);
                if due.is_some_and(|d| d <= now) && self.start_pass(now, ignore)? {
                    continue;
                }
            }
            let idle = self.running.is_empty() && self.pending_empty() && self.initial_done;
            if idle && self.quitting && !self.drained {
                // Before leaving, take what the kernel still holds for us: nothing is lost on
                // the way out (clsync does this only with --sync-on-quit).
                self.drained = true;
                self.read_events()?;
                continue;
            }
            if idle && (self.quitting || self.cfg.only_initialsync) {
                return Ok(0);
            }
            // A running handler past its -k deadline is killed (TERM, then KILL).
            let mut overdue = Vec::new();
            for run in self.running.iter_mut() {
                if run.deadline.is_some_and(|d| d <= now) {
                    run.kills += 1;
                    run.deadline = Some(now + Duration::from_secs(2));
                    overdue.push(run.job);
                }
            }
            for job in overdue {
                crate::warning!(
                    "sync handler (job {job}) exceeded -k {}s: killing it",
                    self.cfg.timeout_sync
                );
                self.client.kill(job)?;
            }
            let until = |d: Instant| {
                let ms = d
                    .saturating_duration_since(now)
                    .as_millis()
                    .min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms.max(0)).unwrap_or(PollTimeout::MAX)
            };
            if let Some(n) = self.notify.as_mut() {
                n.ping(now);
            }
            // While a handler runs and no other pass may start, what new events bring waits
            // for that handler anyway: inotify is read at most every READ_GAP then, not at every
            // event (a burst of 50,000 files cost ~28,000 wake-ups of the worker), and at once
            // when the handler ends.
            let hold_events = (!self.running.is_empty() && !self.can_start())
                .then_some(self.last_read + self.read_gap)
                .filter(|&t| t > now);
            let deadline = self
                .running
                .iter()
                .filter_map(|r| r.deadline)
                .chain(self.notify.as_ref().and_then(|n| n.next_ping()))
                .chain(hold_events)
                .min();
            let next = if self.can_start() {
                self.next_pass(now, self.quitting || self.cfg.exit_on_no_events)
            } else {
                None
            };
            let timeout = match (deadline, next) {
                (Some(a), Some(b)) => until(a.min(b)),
                (Some(d), None) | (None, Some(d)) => until(d),
                _ if self.cfg.exit_on_no_events && self.initial_done && self.running.is_empty() => {
                    PollTimeout::ZERO
                }
                _ => PollTimeout::NONE,
            };
            let (ino, chan, sig, ctl) = {
                let mut fds = vec![
                    PollFd::new(
                        self.inotify.as_fd(),
                        if hold_events.is_some() {
                            PollFlags::empty()
                        } else {
                            PollFlags::POLLIN
                        },
                    ),
                    PollFd::new(self.client.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                ];
                if let Some(c) = &self.control {
                    fds.extend(
                        c.fds()
                            .into_iter()
                            .map(|f| PollFd::new(f, PollFlags::POLLIN)),
                    );
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        crate::error!("poll: {e}");
                        return Ok(1);
                    }
                }
                let r = |f: &PollFd| f.revents().map(|e| !e.is_empty()).unwrap_or(false);
                // Control fds: index 0 is the listener, then the connections.
                let ctl: Vec<usize> = fds[3..]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| r(f))
                    .map(|(i, _)| i)
                    .collect();
                (r(&fds[0]), r(&fds[1]), r(&fds[2]), ctl)
            };
            if !ctl.is_empty() {
                self.serve_control(ctl)?;
            }
            if sig {
                self.on_signals();
                if std::mem::take(&mut self.resync) {
                    self.full_resync()?;
                }
                if std::mem::take(&mut self.reload) {
                    self.reload_rules()?;
                }
                if std::mem::take(&mut self.dump_pending) {
                    self.dump("signal 29")?;
                }
            }
            if chan {
                self.client.pump()?;
            }
            if ino {
                self.read_events()?;
            } else if self.cfg.exit_on_no_events
                && self.initial_done
                && self.running.is_empty()
                && !sig
                && !chan
                && self.pending_empty()
            {
                // --exit-on-no-events: the first poll that finds nothing ends the daemon.
                crate::info!("no events left: exiting (--exit-on-no-events)");
                if self.cfg.pre_exit_hook.is_some() {
                    self.set_status(Status::Preexit);
                    self.run_hook(HandlerRef::PreExitHook)?;
                }
                return Ok(0);
            }
        }
    }

    /// When the next pass may start (None: nothing pending), retry back-off included.
    fn next_pass(&self, now: Instant, ignore_delays: bool) -> Option<Instant> {
        let due = if self.fifo.is_empty() && self.recursive.is_empty() {
            self.queues.next_pass(now, ignore_delays)?
        } else {
            now
        };
        Some(self.retry_at.map_or(due, |r| due.max(r)))
    }

    /// Queues the whole tree again (SIGUSR2, queue overflow): rescans it, watching what is new
    /// and forgetting what is gone; then one recursive entry (rsync modes) or every node.
    fn full_resync(&mut self) -> Result<(), ClientError> {
        let per_node = self.per_node();
        let recursive = self.cfg.have_recursive_sync;
        let nodes = (per_node && !recursive).then_some(QueueId::Instant);
        if recursive {
            self.recursive.push_back(Vec::new());
        }
        if nodes.is_some() && self.sync_allowed(b"", ObjKind::Dir) {
            self.enqueue(QueueId::Instant, Vec::new(), Item::new(CREATED_DIR, false));
        }
        let mode = WalkMode {
            watch: true,
            excludes: QueueId::Instant,
            nodes,
            prune: true,
            full: false,
        };
        self.walk(vec![ROOT], mode)?;
        if !per_node {
            self.enqueue(QueueId::Instant, Vec::new(), Item::new(CREATED_DIR, true));
        }
        Ok(())
    }

    /// SIGHUP: the helper reads the rules file again; a file that does not parse is rejected
    /// with its error and the rules in force stay.
    fn reload_rules(&mut self) -> Result<(), ClientError> {
        let Some(path) = self.cfg.rules_file.clone() else {
            crate::info!("SIGHUP: no rules file to reload");
            return Ok(());
        };
        match self.client.read_rules()? {
            Err(errno) => crate::error!(
                "SIGHUP: cannot read the rules file {}: {}; keeping the current rules",
                path.display(),
                Errno::from_raw(errno)
            ),
            Ok(text) => match Rules::parse_with(&text, self.cfg.rules_options) {
                Ok(r) => {
                    crate::info!(
                        "SIGHUP: rules reloaded from {} ({} rules)",
                        path.display(),
                        r.len()
                    );
                    self.rules = r;
                }
                Err(e) => crate::error!(
                    "SIGHUP: rules file {}: {e}; keeping the current rules",
                    path.display()
                ),
            },
        }
        Ok(())
    }

    /// Whether syncs list every node by itself (non-rsync modes and --rsync-prefer-include)
    /// rather than a directory recursively plus excludes.
    fn per_node(&self) -> bool {
        !self.cfg.mode.is_rsync() || self.cfg.prefer_include
    }

    /// Whether a file's event may be dropped while a directory above it is queued whole: only
    /// where lists name directories recursively, no rule could make a coarse line carry an
    /// excluded file, and no --modification-signature must see every event.
    fn skip_covered(&self) -> bool {
        !self.per_node() && self.rules.is_empty() && self.cfg.modification_signature == 0
    }

    fn pending_empty(&self) -> bool {
        self.queues.is_empty() && self.fifo.is_empty() && self.recursive.is_empty()
    }

    /// Puts a path to sync where the mode wants it: simple mode runs one call per event in
    /// order; the others aggregate in the queues.
    fn enqueue(&mut self, q: QueueId, path: Vec<u8>, item: Item) {
        if self.cfg.mode == Mode::Simple {
            self.fifo.push_back((path, item.mask));
        } else {
            self.queues.include(q, path, item, Instant::now());
        }
    }

    /// Remembers a path the rules refuse, for the lists that name such paths: rsync exclude
    /// lists, or a template with `%EXCLUDE-LIST-PATH%` (elsewhere, as in clsync, it is omitted).
    fn exclude(&mut self, q: QueueId, path: Vec<u8>) {
        if self.keep_excludes {
            self.queues.exclude(q, path, Instant::now());
        }
    }

    /// Whether the rules let `path` be synced.
    fn sync_allowed(&self, path: &[u8], kind: ObjKind) -> bool {
        self.rules.is_empty() || self.rules.perm(path, kind, rules::SYNC) & rules::SYNC != 0
    }

    fn delays(&self) -> Delays {
        Delays {
            sync: Duration::from_secs(self.cfg.delay_sync),
            collect: Duration::from_secs(self.cfg.delay_collect),
            bigfile: Duration::from_secs(self.cfg.delay_bigfile),
        }
    }

    fn on_signals(&mut self) {
        while let Ok(Some(si)) = self.sigfd.read_signal() {
            let signo = si.ssi_signo as i32;
            if let Some(&(_, index)) = self.custom_signals.iter().find(|(s, _)| *s == signo) {
                self.request_block(index, format!("signal {signo}"));
                continue;
            }
            let Ok(sig) = Signal::try_from(signo) else {
                continue;
            };
            match sig {
                Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT | Signal::SIGALRM => {
                    if !self.quitting {
                        crate::info!("{sig}: syncing what is queued, then exiting");
                    }
                    self.quitting = true;
                    // QUIT and ALRM leave through clsync's "preexit" (the pre-exit hook).
                    if matches!(sig, Signal::SIGQUIT | Signal::SIGALRM) {
                        self.set_status(Status::Preexit);
                        self.preexit_pending = self.cfg.pre_exit_hook.is_some();
                    } else {
                        self.set_status(Status::Terminating);
                    }
                }
                Signal::SIGCHLD => {
                    if let Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) =
                        waitpid(self.helper, Some(WaitPidFlag::WNOHANG))
                    {
                        crate::error!("the privileged helper ended unexpectedly ({st:?})");
                        self.exit_code.get_or_insert(EXIT_HELPER_GONE);
                    }
                }
                Signal::SIGUSR2 => {
                    crate::info!("SIGUSR2: full re-sync queued");
                    self.resync = true;
                }
                Signal::SIGHUP => self.reload = true,
                // clsync: USR1 reaps finished sync threads and 16 only wakes the main loop; here
                // children are reaped as they end and every signal wakes the loop anyway.
                Signal::SIGUSR1 | Signal::SIGSTKFLT => {
                    crate::debug!(1, "{sig}: nothing to do (children are reaped as they end)")
                }
                // clsync's SIGUSR_DUMP: a dump of the queues into --dump-dir.
                Signal::SIGIO => self.dump_pending = true,
                other => crate::debug!(1, "{other} ignored"),
            }
        }
    }

    fn mark_ready(&mut self) {
        self.initial_done = true;
        self.set_status(Status::Running);
        crate::info!(
            "ready: initial sync done, {} directories watched",
            self.tree.watched()
        );
        if let Some(n) = &self.notify {
            n.send(&format!(
                "READY=1\nMAINPID={}\nSTATUS=running: {} directories watched",
                std::process::id(),
                self.tree.watched()
            ));
        }
        self.hooks.after_ready(&mut self.client, &self.inotify);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_inotify_queue_is_read_proportionally_sooner() {
        assert_eq!(read_gap(DEFAULT_INOTIFY_QUEUE), READ_GAP);
        assert_eq!(
            read_gap(1 << 20),
            READ_GAP,
            "a longer queue waits no longer"
        );
        assert_eq!(read_gap(1024), Duration::from_micros(1250));
        assert_eq!(read_gap(0), Duration::ZERO);
    }
}
