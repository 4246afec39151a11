//! Stage 3: sync passes: what is due becomes handler calls (rsync lists, shell lists, paths in
//! argv, one call per event), exits are judged (-x, -r, -k, --ignore-failures), --threading.
#![forbid(unsafe_code)]

use super::*;
use crate::privsep::protocol::ObjType;

/// After a pass of at least this many paths has ended, the worker returns freed memory to the
/// kernel (a storm's queues and lists would otherwise stay resident).
const TRIM_AFTER_PATHS: usize = 4096;

impl Worker {
    // ---- stage 3: sync passes ----

    /// Starts a sync pass with what is due; false if nothing was.
    pub(super) fn start_pass(
        &mut self,
        now: Instant,
        ignore_delays: bool,
    ) -> Result<bool, ClientError> {
        if !self.recursive.is_empty() {
            return self.start_recursive();
        }
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
        let started = self.exec(first)?;
        self.track(started, batch, initial, calls, None);
        Ok(true)
    }

    /// Records a handler just started (`(job, pid)`) as running, in this iteration.
    fn track(
        &mut self,
        (job, pid): (u64, i32),
        batch: Batch,
        initial: bool,
        rest: VecDeque<Call>,
        recursive: Option<Vec<u8>>,
    ) {
        let deadline = self.deadline();
        self.running.push(Running {
            job,
            pid,
            iteration: self.iteration,
            started: unix_now(),
            tries: self.tries + 1,
            batch,
            initial,
            rest,
            deadline,
            kills: 0,
            recursive,
        });
    }

    /// --have-recursive-sync: the next directory's `initialsync` call, right away (no delay,
    /// no standby: clsync makes it while handling the event). As in clsync it sees the
    /// iteration before it is counted (the start-up call sees 0).
    fn start_recursive(&mut self) -> Result<bool, ClientError> {
        let Some(dir) = self.recursive.pop_front() else {
            return Ok(false);
        };
        let initial = !self.initial_done && dir.is_empty();
        let call = if self.cfg.mode == Mode::So {
            so_call(vec![ApiEvent {
                path: RelPath(dir.clone()),
                evmask: CREATED_DIR,
                recursive: true,
                old: ObjType::DoesntExist,
                new: ObjType::Dir,
            }])
        } else {
            Call {
                lists: vec![],
                args: CallArgs {
                    sync_type: SyncType::Initialsync,
                    event_mask: None,
                    paths: vec![RelPath(dir.clone())],
                },
                so_events: None,
            }
        };
        let started = self.exec(call)?;
        self.iteration += 1;
        self.track(
            started,
            Batch::default(),
            initial,
            VecDeque::new(),
            Some(dir),
        );
        Ok(true)
    }

    /// Whether another pass may start now: one at a time without --threading; with `safe` the
    /// initial sync runs alone; with `full` anything goes (up to MAX_PARALLEL).
    pub(super) fn can_start(&self) -> bool {
        const MAX_PARALLEL: usize = 16;
        // A block switch waits for the running passes to end; no new one starts meanwhile.
        if self.pending_block.is_some() {
            return false;
        }
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
    pub(super) fn hold_conflicts(&mut self, batch: Batch) -> Batch {
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

    pub(super) fn deadline(&self) -> Option<Instant> {
        (self.cfg.timeout_sync > 0)
            .then(|| Instant::now() + Duration::from_secs(self.cfg.timeout_sync))
    }

    /// Starts one call; returns its job number and the handler's pid.
    pub(super) fn exec(&mut self, call: Call) -> Result<(u64, i32), ClientError> {
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
        let pid = match call.so_events {
            Some(events) => self.client.so_sync(job, env, events)?,
            None => self.client.exec(job, call.lists, env, call.args)?,
        };
        Ok((job, pid))
    }

    /// Turns a batch into handler calls, as the mode and the template want them: rsync lists;
    /// shell lists; paths in argv (split at clsync's 256 arguments); or one call per path.
    pub(super) fn build_calls(&self, batch: &Batch) -> std::io::Result<VecDeque<Call>> {
        let want = self.policy.lists();
        let mut calls = VecDeque::new();
        if self.cfg.mode == Mode::So {
            // The shared object gets every path of the pass in one call (a pass beyond the
            // helper's limits is split).
            let mut events: Vec<ApiEvent> = Vec::new();
            let mut bytes = 0;
            for (p, it) in &batch.includes {
                if events.len() >= crate::privsep::helper::MAX_SO_EVENTS
                    || bytes + p.len() + 1 > crate::privsep::helper::MAX_SO_BYTES
                {
                    calls.push_back(so_call(std::mem::take(&mut events)));
                    bytes = 0;
                }
                bytes += p.len() + 1;
                events.push(api_event(p, it));
            }
            if !events.is_empty() {
                calls.push_back(so_call(events));
            }
            return Ok(calls);
        }
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
            // rsyncdirect (our own rsync call, not a script reading the list), one sync at a
            // time and no rule that could exclude: a large batch may be coarsened.
            let coarsen = self.cfg.mode == crate::config::Mode::RsyncDirect
                && self.cfg.threading == crate::cli::Threading::Off
                && self.rules.is_empty();
            let min_batch = if coarsen {
                crate::queue::COARSEN_MIN_BATCH
            } else {
                usize::MAX
            };
            let entries = crate::queue::rsync_entries(
                &batch.includes,
                min_batch,
                crate::queue::COARSEN_MIN_CHILDREN,
                // Walking a subtree costs about its files; exact lines cost about lines x
                // files walked: a subtree with no more directories than the pass has paths is
                // cheaper whole.
                |dir| {
                    let limit = crate::queue::COARSEN_MAX_SUBTREE_DIRS.max(batch.includes.len());
                    self.tree
                        .lookup(dir)
                        .is_none_or(|id| self.tree.subtree_at_most(id, limit))
                },
            );
            if entries.len() < batch.includes.len() {
                crate::debug!(
                    1,
                    "rsync lists: {} paths coarsened to {} entries",
                    batch.includes.len(),
                    entries.len()
                );
            }
            let mut parts = vec![fresh()];
            for &(p, flags) in &entries {
                if limit > 0 && parts.last().is_some_and(|l| l.include_len() >= limit) {
                    parts.push(fresh());
                }
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
                calls.push_back(Call {
                    lists: fds,
                    args,
                    so_events: None,
                });
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
                    so_events: None,
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
                    so_events: None,
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
                so_events: None,
            });
        }
        Ok(calls)
    }

    pub(super) fn on_exit(&mut self, job: u64, status: ExitStatus) -> Result<(), ClientError> {
        let Some(i) = self.running.iter().position(|r| r.job == job) else {
            return Ok(());
        };
        let run = self.running.swap_remove(i);
        let large = run.batch.includes.len() + run.batch.excludes.len() >= TRIM_AFTER_PATHS;
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
                (run.job, run.pid) = self.exec(next)?;
                run.started = unix_now();
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
            if large {
                // The pass's paths, lists and queue maps are freed now: give the memory back.
                let paths = run.batch.includes.len() + run.batch.excludes.len();
                drop(run);
                crate::sys::trim_heap();
                crate::debug!(1, "returned freed memory after a pass of {paths} paths");
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
            if let Some(dir) = run.recursive {
                self.recursive.push_front(dir);
            } else if self.cfg.mode == Mode::Simple {
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

/// Seconds since the epoch, now.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A mode-so call with these events.
fn so_call(events: Vec<ApiEvent>) -> Call {
    Call {
        lists: vec![],
        args: CallArgs {
            sync_type: SyncType::Synclist,
            event_mask: None,
            paths: vec![],
        },
        so_events: Some(events),
    }
}

/// clsync's api_eventinfo_t for a queued path. The object types come from the aggregated mask:
/// a creation or move in means nothing was there before, a deletion or move away that nothing
/// is there after (clsync takes them from the first and the last event, which differs only for
/// a path deleted and created again within one collection: both are DOESNTEXIST here).
fn api_event(path: &[u8], it: &Item) -> ApiEvent {
    let kind = if it.mask & libc::IN_ISDIR != 0 {
        ObjType::Dir
    } else {
        ObjType::File
    };
    let old = if it.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
        ObjType::DoesntExist
    } else {
        kind
    };
    let new = if it.mask & (libc::IN_DELETE | libc::IN_DELETE_SELF | libc::IN_MOVED_FROM) != 0 {
        ObjType::DoesntExist
    } else {
        kind
    };
    ApiEvent {
        path: RelPath(path.to_vec()),
        evmask: it.mask,
        recursive: false,
        old,
        new,
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
    sealed_memfd(name, write)
}

/// Writes `write`'s output into a new memfd and seals it (write, grow, shrink, seal): what the
/// helper checks before it copies a list or a dump file.
pub(super) fn sealed_memfd(
    name: &str,
    write: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<OwnedFd> {
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
