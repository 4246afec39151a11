//! The unprivileged worker's event loop. It owns the pipeline, as a chain of small stages:
//!
//! inotify bytes → [`monitor::inotify::events`] → [`Worker::on_event`] (watch tree upkeep, rules)
//! → [`Queues`] (aggregation, delays) → [`Worker::start_pass`] (rsync lists in sealed memfds)
//! → `Exec` at the helper → [`Worker::on_exit`] (exit codes, retries).
//!
//! Everything that needs privilege (listing directories, adding watches, stat, running the
//! handler) is a request to the helper; the worker holds no capability and opens no path.
#![forbid(unsafe_code)]

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
    CallArgs, ExecEnv, ExitStatus, HandlerRef, Kind, ListKind, RelPath, StatResult, Status,
    SyncType, WatchResult,
};
use crate::queue::{Batch, Delays, Item, QueueId, Queues};
use crate::rules::{self, ObjKind, Rules};
use crate::testhooks::TestHooks;

/// Exit status when the helper ended unexpectedly.
pub const EXIT_HELPER_GONE: i32 = 70;
/// Most paths per Watch/Scan/Stat batch (the byte budget usually binds first).
const MAX_BATCH_DIRS: usize = crate::privsep::protocol::MAX_BATCH;

/// Fds and facts the worker was handed by the spawn step.
pub struct WorkerSetup {
    pub cfg: Config,
    pub client: Client,
    pub inotify: OwnedFd,
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

/// Blocks the signals the worker handles and returns a signalfd for them (before seccomp).
pub fn signal_fd() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGALRM,
    ] {
        mask.add(sig);
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// One handler call of a pass: its sealed lists and per-call values.
struct Call {
    lists: Vec<(ListKind, OwnedFd)>,
    args: CallArgs,
}

struct Running {
    job: u64,
    batch: Batch,
    initial: bool,
    /// Calls of this pass still to run after the current one (argv-size splits, per-path calls).
    rest: VecDeque<Call>,
    /// -k: when the current call is killed; `kills` counts the signals sent.
    deadline: Option<Instant>,
    kills: u32,
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
    exit_code: Option<i32>,
    buf: Vec<u8>,
    hooks: TestHooks,
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
        Worker {
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
            config_block: "default".into(),
            queued: usize::from(!self.pending_empty()),
            running: self.running.len(),
            watched: self.tree.watched(),
            iteration: self.iteration,
            last_sync: self.last_sync,
            failures: self.failures,
        }
    }

    /// Serves the readable control fds (`0`: the listener, `i`: connection `i - 1`), from the
    /// highest index down, as serving may remove a connection.
    fn serve_control(&mut self, mut ready: Vec<usize>) {
        let snap = self.snapshot();
        let Some(c) = self.control.as_mut() else {
            return;
        };
        ready.sort_unstable();
        let mut die = false;
        for &i in ready.iter().rev().filter(|&&i| i > 0) {
            if c.serve(i - 1, &snap) == crate::control::Action::Die {
                die = true;
            }
        }
        if ready.first() == Some(&0) {
            c.accept();
        }
        if die {
            crate::info!("control socket: die");
            self.quitting = true;
            self.set_status(Status::Terminating);
        }
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
        let mode = WalkMode {
            watch: !self.cfg.only_initialsync,
            excludes: QueueId::Instant,
            nodes: (per_node && initial).then_some(QueueId::Instant),
            prune: false,
            full: self.cfg.full_initialsync,
        };
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
            let deadline = self
                .running
                .iter()
                .filter_map(|r| r.deadline)
                .chain(self.notify.as_ref().and_then(|n| n.next_ping()))
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
                    PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
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
                self.serve_control(ctl);
            }
            if sig {
                self.on_signals();
                if std::mem::take(&mut self.resync) {
                    self.full_resync()?;
                }
                if std::mem::take(&mut self.reload) {
                    self.reload_rules()?;
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
        let due = if self.fifo.is_empty() {
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
        let nodes = per_node.then_some(QueueId::Instant);
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
            Ok(text) => match Rules::parse(&text) {
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

    fn pending_empty(&self) -> bool {
        self.queues.is_empty() && self.fifo.is_empty()
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

    fn exclude(&mut self, q: QueueId, path: Vec<u8>) {
        if self.cfg.mode != Mode::Simple {
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
            let Ok(sig) = Signal::try_from(si.ssi_signo as i32) else {
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
        self.hooks.after_ready(&self.client, &self.inotify);
    }

    // ---- stage 1: walking (initial, new directories, rescans) ----

    /// Watches and lists the directories in `start` and everything below them that the rules
    /// let us walk, in batches: one Watch and one Scan request per batch of directories.
    fn walk(&mut self, start: Vec<NodeId>, mode: WalkMode) -> Result<(), ClientError> {
        let need_files = (!self.rules.is_empty() && !mode.full) || mode.nodes.is_some();
        let one_fs = self.cfg.one_file_system;
        let mut todo: VecDeque<NodeId> = start.into();
        while !todo.is_empty() {
            let mut ids = Vec::new();
            let mut paths = Vec::new();
            let mut cost = 0;
            while let Some(&id) = todo.front() {
                if !self.tree.exists(id) {
                    todo.pop_front();
                    continue;
                }
                let p = self.tree.path(id);
                cost += path_cost(&p);
                if !ids.is_empty() && (cost > BATCH_BYTES || ids.len() >= MAX_BATCH_DIRS) {
                    break;
                }
                todo.pop_front();
                ids.push(id);
                paths.push(p);
            }
            if mode.watch {
                let results = self.client.watch(paths.clone())?;
                for (i, r) in results.into_iter().enumerate() {
                    match r {
                        WatchResult::Wd(wd) => {
                            crate::debug!(3, "watch {:?} = wd {wd}", paths[i]);
                            self.tree.set_wd(ids[i], wd);
                        }
                        WatchResult::Errno(e) => self.watch_failed(ids[i], &paths[i], e),
                    }
                }
            }
            let mut found: Vec<(usize, Vec<crate::privsep::protocol::Entry>)> = Vec::new();
            self.client
                .scan(paths.clone(), need_files, one_fs, |i, entries, errno| {
                    if errno != 0 && errno != libc::ENOENT && errno != libc::ENOTDIR {
                        crate::warning!("cannot list {:?}: {}", paths[i], Errno::from_raw(errno));
                    }
                    found.push((i, entries));
                })?;
            let mut seen: HashMap<usize, Vec<Vec<u8>>> = HashMap::new();
            for (i, entries) in found {
                let id = ids[i];
                for e in entries {
                    let rel = || paths[i].join(&e.name);
                    if e.kind == Kind::Dir {
                        let mut perm = if self.rules.is_empty() || mode.full {
                            rules::ALL
                        } else {
                            self.rules.perm(
                                rel().as_bytes(),
                                ObjKind::Dir,
                                rules::WALK | rules::SYNC,
                            )
                        };
                        if one_fs && e.dev != self.root_dev {
                            // A mount point: listed, never entered (-X: its content excluded).
                            perm &= !rules::WALK;
                            if self.cfg.exclude_mount_points {
                                self.mount_points.insert(rel().0);
                            }
                        }
                        if perm & rules::SYNC == 0 {
                            self.exclude(mode.excludes, rel().0);
                        } else if let Some(q) = mode.nodes {
                            self.enqueue(q, rel().0, Item::new(CREATED_DIR, false));
                        }
                        if perm & rules::WALK != 0 {
                            if mode.prune {
                                seen.entry(i).or_default().push(e.name.clone());
                            }
                            let known = self.tree.child(id, &e.name);
                            if let Some(child) = known.or_else(|| self.tree.add(id, &e.name)) {
                                todo.push_back(child);
                            }
                        }
                    } else if need_files {
                        // As in clsync's initial walk, every non-directory counts as a file.
                        let path = rel().0;
                        if !mode.full && !self.sync_allowed(&path, ObjKind::File) {
                            self.exclude(mode.excludes, path);
                        } else if let Some(q) = mode.nodes {
                            self.enqueue(q, path, Item::new(CREATED_FILE, false));
                        }
                    }
                }
            }
            if mode.prune {
                for (i, &id) in ids.iter().enumerate() {
                    let names = seen.remove(&i).unwrap_or_default();
                    for child in self.tree.children(id) {
                        let gone = {
                            let p = self.tree.path(child);
                            let name = p
                                .as_bytes()
                                .rsplit(|&b| b == b'/')
                                .next()
                                .unwrap_or(b"")
                                .to_vec();
                            !names.contains(&name)
                        };
                        if gone {
                            let wds = self.tree.remove(child);
                            self.client.unwatch(wds)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn watch_failed(&mut self, id: NodeId, path: &RelPath, errno: i32) {
        let e = Errno::from_raw(errno);
        match e {
            // Gone or replaced meanwhile: its delete/move event is on the way.
            Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV => {
                if id != ROOT {
                    self.tree.remove(id);
                }
            }
            Errno::ENOSPC => crate::error!(
                "cannot watch {path:?}: the inotify watch limit is reached (raise fs.inotify.max_user_watches); changes below it are not seen until a rescan"
            ),
            e => crate::error!("cannot watch {path:?}: {e}"),
        }
    }

    // ---- stage 2: events ----

    fn read_events(&mut self) -> Result<(), ClientError> {
        let mut overflow = false;
        let mut new_dirs: Vec<NodeId> = Vec::new();
        let mut to_stat: Vec<(RelPath, u32)> = Vec::new();
        let mut moves: HashMap<u32, (NodeId, bool)> = HashMap::new();
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let n = match nix::unistd::read(&self.inotify, &mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    crate::error!("reading inotify events: {e}");
                    break;
                }
            };
            if n == 0 {
                break;
            }
            for ev in events(&buf[..n]) {
                if ev.has(libc::IN_Q_OVERFLOW) {
                    overflow = true;
                    continue;
                }
                self.on_event(&ev, &mut new_dirs, &mut to_stat, &mut moves);
            }
        }
        self.buf = buf;
        // A directory moved away whose other half never came was moved out of the tree.
        for (_, (id, _)) in moves {
            if self.tree.exists(id) {
                let wds = self.tree.remove(id);
                self.client.unwatch(wds)?;
            }
        }
        self.classify_files(to_stat)?;
        if !new_dirs.is_empty() {
            // New directories are watched, then listed: what was created in them before the
            // watch existed is synced too (recursively in the rsync modes, node by node in the
            // others).
            let nodes = self.per_node().then_some(QueueId::Normal);
            let mode = WalkMode {
                watch: true,
                excludes: QueueId::Normal,
                nodes,
                prune: false,
                full: false,
            };
            self.walk(new_dirs, mode)?;
        }
        if overflow {
            crate::warning!(
                "inotify queue overflow: rescanning the whole tree and syncing what differs"
            );
            self.full_resync()?;
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        ev: &RawEvent<'_>,
        new_dirs: &mut Vec<NodeId>,
        to_stat: &mut Vec<(RelPath, u32)>,
        moves: &mut HashMap<u32, (NodeId, bool)>,
    ) {
        let Some(node) = self.tree.by_wd(ev.wd) else {
            crate::debug!(3, "event on unknown wd {}: mask {:#x}", ev.wd, ev.mask);
            return;
        };
        crate::debug!(
            3,
            "event wd {} mask {:#x} {:?}",
            ev.wd,
            ev.mask,
            String::from_utf8_lossy(ev.name)
        );
        if ev.has(libc::IN_IGNORED) {
            self.tree.forget_wd(ev.wd);
            return;
        }
        // The bits clsync passes on (%EVENT-MASK%, shell list lines).
        let mask = ev.mask & !(libc::IN_IGNORED | libc::IN_Q_OVERFLOW | libc::IN_UNMOUNT);
        let rsync = self.cfg.mode.is_rsync();
        if ev.name.is_empty() {
            if node == ROOT && ev.has(libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) {
                crate::error!("the watch dir was deleted or moved away: exiting");
                self.exit_code.get_or_insert(1);
            } else if ev.has(libc::IN_ATTRIB) {
                self.enqueue(
                    QueueId::Normal,
                    self.tree.path(node).0,
                    Item::new(mask, false),
                );
            }
            return;
        }
        let path = self.tree.child_path(node, ev.name);
        if ev.is_dir() {
            let perm = if self.rules.is_empty() {
                rules::ALL
            } else {
                self.rules.perm(path.as_bytes(), ObjKind::Dir, rules::ALL)
            };
            // In the rsync modes a directory that goes is synced recursively (so rsync deletes
            // its whole content at the destination), and so is one that appears, unless every
            // node is listed by itself (the other modes, --rsync-prefer-include).
            let gone = Item::new(mask, rsync);
            let whole = Item::new(mask, !self.per_node());
            if ev.has(libc::IN_MOVED_FROM) {
                // Until its pair arrives, the old name is gone.
                self.enqueue(QueueId::Normal, path.0.clone(), gone);
                if let Some(child) = self.tree.child(node, ev.name) {
                    moves.insert(ev.cookie, (child, true));
                }
            } else if ev.has(libc::IN_MOVED_TO) && moves.contains_key(&ev.cookie) {
                let (child, _) = moves.remove(&ev.cookie).unwrap_or((ROOT, false));
                let dropped = self.tree.rename(child, node, ev.name);
                if !dropped.is_empty() {
                    let _ = self.client.unwatch(dropped);
                }
                if perm & rules::SYNC != 0 {
                    self.enqueue(QueueId::Normal, path.0, whole);
                    if self.per_node() {
                        new_dirs.push(child);
                    }
                } else {
                    self.exclude(QueueId::Normal, path.0);
                }
            } else if ev.has(libc::IN_CREATE | libc::IN_MOVED_TO) {
                if perm & rules::SYNC != 0 {
                    self.enqueue(QueueId::Normal, path.0, whole);
                } else {
                    self.exclude(QueueId::Normal, path.0);
                }
                if perm & (rules::MONITOR | rules::WALK) != 0 {
                    if let Some(child) = self.tree.add(node, ev.name) {
                        new_dirs.push(child);
                    }
                }
            } else if ev.has(libc::IN_DELETE) {
                if let Some(child) = self.tree.child(node, ev.name) {
                    // The kernel drops the watches itself (IN_IGNORED follows).
                    let _ = self.tree.remove(child);
                }
                self.enqueue(QueueId::Normal, path.0, whole);
            } else if ev.has(libc::IN_ATTRIB) && perm & rules::SYNC != 0 {
                self.enqueue(QueueId::Normal, path.0, Item::new(mask, false));
            }
            return;
        }
        if ev.has(libc::IN_DELETE | libc::IN_MOVED_FROM) {
            // Gone: no type to check; a deleted path is always synced so the copy follows.
            if !self.signatures.is_empty() {
                self.signatures.remove(&path.0);
            }
            self.enqueue(QueueId::Normal, path.0, Item::new(mask, false));
        } else {
            to_stat.push((path, mask));
        }
    }

    /// Sorts changed files into the ordinary or the big-file queue by size, after the rules.
    /// (simple mode keeps every event, in order; the others merge a path's events.)
    fn classify_files(&mut self, mut paths: Vec<(RelPath, u32)>) -> Result<(), ClientError> {
        if self.cfg.mode != Mode::Simple {
            let mut at: HashMap<RelPath, usize> = HashMap::new();
            let mut merged: Vec<(RelPath, u32)> = Vec::with_capacity(paths.len());
            for (p, m) in paths {
                match at.get(&p) {
                    Some(&i) => merged[i].1 |= m,
                    None => {
                        at.insert(p.clone(), merged.len());
                        merged.push((p, m));
                    }
                }
            }
            paths = merged;
        }
        if self.cfg.cancel_mon_stat {
            // --cancel-syscalls=mon_stat: no stat; every object is a file of size 0.
            for (p, mask) in paths {
                if self.sync_allowed(p.as_bytes(), ObjKind::File) {
                    self.enqueue(QueueId::Normal, p.0, Item::new(mask, false));
                }
            }
            return Ok(());
        }
        while !paths.is_empty() {
            let mut cost = 0;
            let mut take = 0;
            for (p, _) in &paths {
                cost += path_cost(p);
                // Both the request and the reply (≤ 12 bytes per result) must fit a datagram.
                if take > 0 && (cost > BATCH_BYTES || take >= MAX_BATCH_DIRS) {
                    break;
                }
                take += 1;
            }
            let rest = paths.split_off(take);
            let results = self
                .client
                .stat(paths.iter().map(|(p, _)| p.clone()).collect())?;
            for ((p, mask), r) in paths.into_iter().zip(results) {
                let (kind, size) = match r {
                    StatResult::Found {
                        kind, size, sig, ..
                    } => {
                        // --modification-signature: a path whose selected fields did not change
                        // since it was last queued is skipped (the first event always syncs).
                        if sig != 0 && self.signatures.insert(p.0.clone(), sig) == Some(sig) {
                            continue;
                        }
                        (kind, size)
                    }
                    // Vanished since the event: sync it anyway (the copy must lose it too).
                    StatResult::Errno(_) => {
                        self.signatures.remove(&p.0);
                        (Kind::File, 0)
                    }
                };
                let okind = match kind {
                    Kind::File => ObjKind::File,
                    Kind::Dir => ObjKind::Dir,
                    _ => ObjKind::Other,
                };
                if !self.sync_allowed(p.as_bytes(), okind) {
                    continue;
                }
                let q = if size > self.cfg.threshold_bigfile {
                    QueueId::Big
                } else {
                    QueueId::Normal
                };
                self.enqueue(q, p.0, Item::new(mask, false));
            }
            paths = rest;
        }
        Ok(())
    }

    // ---- stage 3: sync passes ----

    /// Starts a sync pass with what is due; false if nothing was.
    fn start_pass(&mut self, now: Instant, ignore_delays: bool) -> Result<bool, ClientError> {
        let batch = if self.fifo.is_empty() {
            self.queues.take_due(now, ignore_delays)
        } else {
            // simple mode: one call per raw event; the initial sync's calls form one pass.
            let n = if self.initial_done {
                1
            } else {
                self.fifo.len()
            };
            let includes = self
                .fifo
                .drain(..n)
                .map(|(p, m)| (p, Item::new(m, false)))
                .collect();
            Batch {
                includes,
                excludes: vec![],
            }
        };
        let batch = self.hold_conflicts(batch);
        if batch.is_empty() {
            return Ok(false);
        }
        // --standby-file: while it exists, syncs wait (checked by the helper, which may look
        // outside the tree at the administrator's path; the worker cannot).
        if self.cfg.standby_file.is_some() && self.client.standby()? {
            if self.status != Status::HoldOn {
                crate::info!("standby file present: holding syncs");
            }
            self.set_status(Status::HoldOn);
            batch.requeue(&mut self.queues, now);
            self.retry_at = Some(now + Duration::from_secs(1));
            return Ok(false);
        }
        if self.status == Status::HoldOn {
            self.set_status(if self.initial_done {
                Status::Running
            } else {
                Status::Initsync
            });
            self.retry_at = None;
        }
        let initial = !self.initial_done;
        let mut calls: VecDeque<Call> = self.build_calls(&batch).map_err(|e| {
            crate::error!("cannot build a list file: {e}");
            ClientError::Unexpected("list building failed")
        })?;
        self.iteration += 1;
        let Some(first) = calls.pop_front() else {
            return Ok(false);
        };
        let job = self.exec(first)?;
        let deadline = self.deadline();
        self.running.push(Running {
            job,
            batch,
            initial,
            rest: calls,
            deadline,
            kills: 0,
        });
        Ok(true)
    }

    /// Whether another pass may start now: one at a time without --threading; with `safe` the
    /// initial sync runs alone; with `full` anything goes (up to MAX_PARALLEL).
    fn can_start(&self) -> bool {
        const MAX_PARALLEL: usize = 16;
        match self.cfg.threading {
            Threading::Off => self.running.is_empty(),
            Threading::Safe => {
                self.running.is_empty() || (self.initial_done && self.running.len() < MAX_PARALLEL)
            }
            Threading::Full => self.running.len() < MAX_PARALLEL,
        }
    }

    /// --threading=safe: never two syncs of the same path at once. Entries whose path, or a
    /// recursive ancestor, is in a running pass (or that are recursive over a running path) wait
    /// in `lockwait` until a pass ends.
    fn hold_conflicts(&mut self, batch: Batch) -> Batch {
        if self.cfg.threading != Threading::Safe || self.running.is_empty() {
            return batch;
        }
        let busy: std::collections::HashSet<&[u8]> = self
            .running
            .iter()
            .flat_map(|r| r.batch.includes.iter().map(|(p, _)| p.as_slice()))
            .collect();
        let rec: std::collections::HashSet<&[u8]> = self
            .running
            .iter()
            .flat_map(|r| {
                r.batch
                    .includes
                    .iter()
                    .filter(|(_, it)| it.recursive)
                    .map(|(p, _)| p.as_slice())
            })
            .collect();
        let under = |p: &[u8], root: &[u8]| {
            root.is_empty() || (p.starts_with(root) && p.get(root.len()) == Some(&b'/'))
        };
        let conflicts = |p: &[u8], it: &Item| {
            if busy.contains(p) || rec.contains(&b""[..]) {
                return true;
            }
            let mut end = p.len();
            while let Some(i) = p[..end].iter().rposition(|&b| b == b'/') {
                if rec.contains(&p[..i]) {
                    return true;
                }
                end = i;
            }
            it.recursive && busy.iter().any(|b| under(b, p))
        };
        let mut ok = Batch::default();
        let mut held = Batch::default();
        for (p, it) in batch.includes {
            if conflicts(&p, &it) {
                held.includes.push((p, it));
            } else {
                ok.includes.push((p, it));
            }
        }
        if !held.includes.is_empty() {
            // Excludes go with whichever part carries includes.
            held.excludes = batch.excludes.clone();
            crate::debug!(
                2,
                "threading=safe: {} paths wait for a running sync",
                held.includes.len()
            );
        }
        ok.excludes = batch.excludes;
        self.lockwait.includes.extend(held.includes);
        self.lockwait.excludes.extend(held.excludes);
        ok
    }

    fn deadline(&self) -> Option<Instant> {
        (self.cfg.timeout_sync > 0)
            .then(|| Instant::now() + Duration::from_secs(self.cfg.timeout_sync))
    }

    fn exec(&mut self, call: Call) -> Result<u64, ClientError> {
        let job = self.next_job;
        self.next_job += 1;
        let env = ExecEnv {
            status: self.status,
            iteration: self.iteration,
        };
        crate::debug!(
            1,
            "sync job {job}: {} paths, {:?}",
            call.args.paths.len(),
            call.args.sync_type
        );
        self.client.exec(job, call.lists, env, call.args)?;
        Ok(job)
    }

    /// Turns a batch into handler calls, as the mode and the template want them: rsync lists;
    /// shell lists; paths in argv (split at clsync's 256 arguments); or one call per path.
    fn build_calls(&self, batch: &Batch) -> std::io::Result<VecDeque<Call>> {
        let want = self.policy.lists();
        let mut calls = VecDeque::new();
        if self.cfg.mode.is_rsync() {
            // --rsync-inclimit: a list that reached the limit (ancestor lines counted) is run
            // as it is and a new one started; every part gets the whole exclude list.
            let limit = usize::try_from(self.cfg.inclimit).unwrap_or(usize::MAX);
            let fresh = || {
                let mut l = RsyncLists::new();
                for p in &batch.excludes {
                    l.add_exclude(p);
                }
                for p in &self.mount_points {
                    l.add_exclude_with_flags(p, ListFlags::CONTENT_RECURSIVE);
                }
                l
            };
            let mut parts = vec![fresh()];
            for (p, it) in &batch.includes {
                if limit > 0 && parts.last().is_some_and(|l| l.include_len() >= limit) {
                    parts.push(fresh());
                }
                let flags = if it.recursive {
                    ListFlags::RECURSIVE
                } else {
                    ListFlags::NONE
                };
                if let Some(l) = parts.last_mut() {
                    l.add_include(p, flags);
                }
            }
            for lists in parts {
                crate::debug!(
                    2,
                    "rsync lists: {} includes, {} excludes",
                    lists.include_len(),
                    lists.exclude_len()
                );
                let mut fds = Vec::new();
                for &kind in &want {
                    fds.push((
                        kind,
                        sealed(kind, |w| match kind {
                            ListKind::Include => lists.write_include(w),
                            ListKind::Exclude => lists.write_exclude(w),
                        })?,
                    ));
                }
                let args = CallArgs {
                    sync_type: SyncType::Rsynclist,
                    event_mask: None,
                    paths: vec![],
                };
                calls.push_back(Call { lists: fds, args });
            }
            return Ok(calls);
        }
        let entries = &batch.includes;
        let label = self.cfg.label.clone();
        let simplify = self.cfg.synclist_simplify;
        let shell_lists = |chunk: &[(Vec<u8>, Item)]| -> std::io::Result<Vec<(ListKind, OwnedFd)>> {
            let mut fds = Vec::new();
            for &kind in &want {
                let fd = match kind {
                    // --synclist-simplify: the path alone on each line.
                    ListKind::Include if simplify => sealed(kind, |w| {
                        shelllist::write_paths(w, chunk.iter().map(|(p, _)| p.as_slice()))
                    })?,
                    ListKind::Include => sealed(kind, |w| {
                        shelllist::write_sync_lines(
                            w,
                            &label,
                            chunk.iter().map(|(p, it)| (p.as_slice(), it.mask)),
                        )
                    })?,
                    ListKind::Exclude => sealed(kind, |w| {
                        shelllist::write_paths(w, batch.excludes.iter().map(Vec::as_slice))
                    })?,
                };
                fds.push((kind, fd));
            }
            Ok(fds)
        };
        let max = self.policy.max_paths();
        if self.cfg.mode == Mode::Simple || (max == 0 && want.is_empty()) {
            // One call per path, with its own event mask.
            for (p, it) in entries {
                let paths = if max > 0 {
                    vec![RelPath(p.clone())]
                } else {
                    vec![]
                };
                let args = CallArgs {
                    sync_type: SyncType::Sync,
                    event_mask: Some(it.mask),
                    paths,
                };
                calls.push_back(Call {
                    lists: shell_lists(std::slice::from_ref(&(p.clone(), *it)))?,
                    args,
                });
            }
        } else if max > 0 {
            for chunk in entries.chunks(max) {
                let paths = chunk.iter().map(|(p, _)| RelPath(p.clone())).collect();
                let args = CallArgs {
                    sync_type: SyncType::Synclist,
                    event_mask: None,
                    paths,
                };
                calls.push_back(Call {
                    lists: shell_lists(chunk)?,
                    args,
                });
            }
        } else {
            let args = CallArgs {
                sync_type: SyncType::Synclist,
                event_mask: None,
                paths: vec![],
            };
            calls.push_back(Call {
                lists: shell_lists(entries)?,
                args,
            });
        }
        Ok(calls)
    }

    fn on_exit(&mut self, job: u64, status: ExitStatus) -> Result<(), ClientError> {
        let Some(i) = self.running.iter().position(|r| r.job == job) else {
            return Ok(());
        };
        let run = self.running.swap_remove(i);
        // A pass ended: what waited for it may go now.
        if !self.lockwait.is_empty() {
            std::mem::take(&mut self.lockwait).requeue(&mut self.queues, Instant::now());
        }
        let code = match status {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        };
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_sync = Some((code, now_unix));
        if !self.cfg.exit_ok(code) {
            self.failures += 1;
        }
        let timed_out = run.kills > 0;
        if timed_out {
            crate::error!(
                "sync handler killed after exceeding -k {}s",
                self.cfg.timeout_sync
            );
        }
        if self.cfg.exit_ok(code) && !timed_out {
            let mut run = run;
            if let Some(next) = run.rest.pop_front() {
                run.job = self.exec(next)?;
                run.deadline = self.deadline();
                self.running.push(run);
                return Ok(());
            }
            self.tries = 0;
            self.retry_at = None;
            if run.initial {
                self.mark_ready();
            } else if self.status == Status::SynchandlerError {
                self.set_status(Status::Running);
            }
            if self.cfg.only_initialsync && run.initial {
                self.queues = Queues::new(self.delays());
                self.exit_code.get_or_insert(0);
            }
            if self.cfg.max_iterations > 0 && self.iteration >= self.cfg.max_iterations {
                crate::info!(
                    "--max-iterations {} reached: exiting",
                    self.cfg.max_iterations
                );
                self.exit_code.get_or_insert(0);
            }
            return Ok(());
        }
        self.tries += 1;
        let retries = self.cfg.retries;
        if retries == 0 || self.tries < retries {
            // Back off: -w, doubling per failed try, at most 60 s, never a busy loop.
            let base = self.cfg.delay_sync.max(1);
            let wait = (base << (self.tries - 1).min(6)).min(60);
            crate::warning!(
                "sync handler failed with exit code {code} (try {}): retrying in {wait}s",
                self.tries
            );
            self.set_status(Status::SynchandlerError);
            self.retry_at = Some(Instant::now() + Duration::from_secs(wait));
            if self.cfg.mode == Mode::Simple {
                for (p, it) in run.batch.includes.into_iter().rev() {
                    self.fifo.push_front((p, it.mask));
                }
            } else {
                run.batch.requeue(&mut self.queues, Instant::now());
            }
            if run.initial {
                self.initial_done = false;
            }
            return Ok(());
        }
        if self.cfg.ignore_failures {
            crate::warning!(
                "sync handler failed with exit code {code} after {} tries: going on (--ignore-failures)",
                self.tries
            );
            self.tries = 0;
            self.retry_at = None;
            self.set_status(Status::Running);
            if run.initial {
                self.mark_ready();
            }
            return Ok(());
        }
        crate::error!(
            "sync handler failed with exit code {code} after {} tries: exiting",
            self.tries
        );
        self.exit_code.get_or_insert(code);
        Ok(())
    }
}

/// Writes a list into a memfd with `write` and seals it against any further change.
fn sealed(
    kind: ListKind,
    write: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<OwnedFd> {
    let name = if kind == ListKind::Include {
        "clsync-list"
    } else {
        "clsync-exclist"
    };
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut f = std::fs::File::from(fd);
    {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, &mut f);
        write(&mut w)?;
        w.flush()?;
    }
    let fd = OwnedFd::from(f);
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(fd)
}
