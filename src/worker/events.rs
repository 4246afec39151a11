//! Stage 2: inotify events: decoding, watch-tree upkeep (creations, moves, deletions,
//! overflow), rules, and the stat that sorts files into the ordinary or big-file queue.
#![forbid(unsafe_code)]

use super::*;

impl Worker {
    // ---- stage 2: events ----

    pub(super) fn read_events(&mut self) -> Result<(), ClientError> {
        self.last_read = Instant::now();
        let mut overflow = false;
        let mut new_dirs: Vec<NodeId> = Vec::new();
        let mut to_stat: Vec<(RelPath, u32)> = Vec::new();
        let mut moves: HashMap<u32, (NodeId, bool)> = HashMap::new();
        let mut buf = std::mem::take(&mut self.buf);
        let mut failed = None;
        'read: loop {
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
                if self.cfg.mode == Mode::Simple {
                    // One call per event, in order: as clsync does, each event is handled
                    // completely (its file's stat, its new directory's walk) before the next
                    // one, or a deletion would be called before the creation read with it.
                    let done = self.settle_events(std::mem::take(&mut to_stat), &mut new_dirs);
                    if let Err(e) = done {
                        failed = Some(e);
                        break 'read;
                    }
                }
            }
        }
        self.buf = buf;
        if let Some(e) = failed {
            return Err(e);
        }
        // A directory moved away whose other half never came was moved out of the tree.
        for (_, (id, _)) in moves {
            if self.tree.exists(id) {
                let wds = self.tree.remove(id);
                self.client.unwatch(wds)?;
            }
        }
        self.settle_events(to_stat, &mut new_dirs)?;
        if overflow {
            crate::warning!(
                "inotify queue overflow: rescanning the whole tree and syncing what differs"
            );
            self.full_resync()?;
        }
        Ok(())
    }

    /// The second half of reading events: files are stat'ed and sorted into the queues, and new
    /// directories watched, then listed: what was created in them before the watch existed is
    /// synced too (recursively in the rsync modes, node by node in the others).
    fn settle_events(
        &mut self,
        to_stat: Vec<(RelPath, u32)>,
        new_dirs: &mut Vec<NodeId>,
    ) -> Result<(), ClientError> {
        self.classify_files(to_stat)?;
        if !new_dirs.is_empty() {
            // New directories are watched, then listed: what was created in them before the
            // watch existed is synced too (recursively in the rsync modes, node by node in the
            // others; with --have-recursive-sync by their own initialsync call).
            let nodes =
                (self.per_node() && !self.cfg.have_recursive_sync).then_some(QueueId::Normal);
            let mode = WalkMode {
                watch: true,
                excludes: QueueId::Normal,
                nodes,
                prune: false,
                full: false,
            };
            self.walk(std::mem::take(new_dirs), mode)?;
        }
        Ok(())
    }

    pub(super) fn on_event(
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
            } else if let Some(what) = self_event(ev.mask) {
                let path = self.tree.path(node);
                match what {
                    SelfEvent::Deleted => {
                        if gone_synced(&self.rules, path.as_bytes(), false) {
                            self.enqueue(QueueId::Normal, path.0, Item::new(mask, false));
                        }
                    }
                    SelfEvent::Moved => to_stat.push((path, mask)),
                }
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
            let appeared = Item::new(appeared_dir_mask(mask), !self.per_node());
            if ev.has(libc::IN_MOVED_FROM) {
                // Until its pair arrives, the old name is gone.
                if gone_synced(&self.rules, path.as_bytes(), true) {
                    self.enqueue(QueueId::Normal, path.0.clone(), gone);
                }
                if let Some(child) = self.tree.child(node, ev.name) {
                    moves.insert(ev.cookie, (child, true));
                }
            } else if ev.has(libc::IN_MOVED_TO) && moves.contains_key(&ev.cookie) {
                let (child, _) = moves.remove(&ev.cookie).unwrap_or((ROOT, false));
                let dropped = self.tree.rename(child, node, ev.name);
                if !dropped.is_empty() {
                    let _ = self.client.unwatch(dropped);
                }
                if self.cfg.have_recursive_sync {
                    // Its watches moved with it; one recursive call syncs it under its name.
                    if perm & rules::SYNC != 0 {
                        self.recursive.push_back(path.0);
                    }
                } else if perm & rules::SYNC != 0 {
                    self.enqueue(QueueId::Normal, path.0, appeared);
                    if self.per_node() {
                        new_dirs.push(child);
                    }
                } else {
                    self.exclude(QueueId::Normal, path.0);
                }
            } else if ev.has(libc::IN_CREATE | libc::IN_MOVED_TO) {
                if self.cfg.have_recursive_sync {
                    // clsync: an immediate initialsync call of the new directory, instead of
                    // syncing its creation and its content node by node.
                    if perm & rules::SYNC != 0 {
                        self.recursive.push_back(path.0);
                    }
                } else if perm & rules::SYNC != 0 {
                    self.enqueue(QueueId::Normal, path.0, appeared);
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
                if gone_synced(&self.rules, path.as_bytes(), true) {
                    self.enqueue(QueueId::Normal, path.0, whole);
                }
            } else if ev.has(libc::IN_ATTRIB) && perm & rules::SYNC != 0 {
                self.enqueue(QueueId::Normal, path.0, Item::new(mask, false));
            }
            return;
        }
        if ev.has(libc::IN_DELETE | libc::IN_MOVED_FROM) {
            if !self.signatures.is_empty() {
                self.signatures.remove(&path.0);
            }
            if gone_synced(&self.rules, path.as_bytes(), false) {
                self.enqueue(QueueId::Normal, path.0, Item::new(mask, false));
            }
        } else if self.skip_covered() && self.queues.covered(path.as_bytes()) {
            // A new directory above it is still queued whole (`/dir/***`): its pass copies
            // this file as it is then, so neither a stat nor a list line is needed (a burst of
            // files into new directories costs one lookup per event, not a helper round trip).
        } else {
            to_stat.push((path, mask));
        }
    }

    /// Sorts changed files into the ordinary or the big-file queue by size, after the rules.
    /// (simple mode keeps every event, in order; the others merge a path's events.)
    pub(super) fn classify_files(
        &mut self,
        mut paths: Vec<(RelPath, u32)>,
    ) -> Result<(), ClientError> {
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
}

/// Whether a path that is gone (deleted, or moved away) is synced. As clsync decides it: by the
/// rules, for a directory if the event says it was one, else for a regular file, the type
/// clsync gives whatever it cannot lstat (reference §2.2, §2.3). A gone path the rules exclude
/// is not handed to the handler: with the authorized_keys example of clsync's manual
/// (`-Mdirect -Scp -- -Pfp --parents %INCLUDE-LIST% %destination-dir%`), `cp` failed on every
/// other file removed from a home directory.
fn gone_synced(r: &Rules, path: &[u8], is_dir: bool) -> bool {
    let kind = if is_dir { ObjKind::Dir } else { ObjKind::File };
    r.is_empty() || r.perm(path, kind, rules::SYNC) & rules::SYNC != 0
}

/// The mask a directory that appears (created, or moved into or within the tree) is queued
/// with. clsync does not queue the event itself: its sub-initial-sync of the new directory
/// lists the directory as IN_CREATE|IN_ISDIR, whichever event announced it (reference §2.3).
fn appeared_dir_mask(event_mask: u32) -> u32 {
    (event_mask & !(libc::IN_CREATE | libc::IN_MOVED_TO)) | CREATED_DIR
}

/// An event on a watched directory itself (no name) that clsync reports on the directory's own
/// path: its deletion or its move (for the watch dir, the daemon exits instead).
#[derive(Debug, PartialEq, Eq)]
enum SelfEvent {
    /// IN_DELETE_SELF: gone, so the rules see a file ([`gone_synced`]).
    Deleted,
    /// IN_MOVE_SELF: reported under the directory's current path (the new name after a rename
    /// within the tree), typed by lstat like any file event.
    Moved,
}

/// Which self event `mask` is, if any. The kernel sets no IN_ISDIR on these, so clsync counts
/// them as file events with exactly that mask, and they merge with the parent directory's event
/// for the same path: `rm -r d` gives d 0x40000600 (IN_DELETE|IN_ISDIR|IN_DELETE_SELF), and
/// renaming d to e gives e 0x40000900 (IN_CREATE|IN_ISDIR|IN_MOVE_SELF); reference §2.2.
fn self_event(mask: u32) -> Option<SelfEvent> {
    if mask & libc::IN_DELETE_SELF != 0 {
        Some(SelfEvent::Deleted)
    } else if mask & libc::IN_MOVE_SELF != 0 {
        Some(SelfEvent::Moved)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of the authorized_keys example in clsync's manual.
    fn authorized_keys() -> Rules {
        Rules::parse(b"+w^$\n+w^[^/]+$\n+W^[^/]+/.ssh$\n+f^[^/]+/.ssh/authorized_keys$\n-*\n")
            .unwrap()
    }

    #[test]
    fn gone_paths_are_synced_only_where_the_rules_allow() {
        let r = authorized_keys();
        assert!(gone_synced(&r, b"alice/.ssh/authorized_keys", false));
        for p in [&b"alice/.bashrc"[..], b"alice/.ssh/id_rsa", b"top"] {
            assert!(
                !gone_synced(&r, p, false),
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
        // Directories: walked (w) is not synced; nothing else is permitted.
        for p in [&b"alice"[..], b"alice/.ssh", b"alice/docs"] {
            assert!(
                !gone_synced(&r, p, true),
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
        // Whatever was deleted counts as a regular file: an f rule decides it.
        let tmp = Rules::parse(b"-f\\.tmp$\n+*\n").unwrap();
        assert!(!gone_synced(&tmp, b"a.tmp", false));
        assert!(gone_synced(&tmp, b"a.tmp", true));
        assert!(gone_synced(&tmp, b"b.txt", false));
        // No rules: everything.
        assert!(gone_synced(&Rules::default(), b"x", false));
    }

    #[test]
    fn directory_masks_are_clsyncs() {
        use libc::{IN_ATTRIB, IN_CREATE, IN_DELETE, IN_ISDIR, IN_MOVED_TO};
        // Created or moved in: the sub-initial-sync's IN_CREATE|IN_ISDIR (1073742080).
        assert_eq!(appeared_dir_mask(IN_CREATE | IN_ISDIR), 1_073_742_080);
        assert_eq!(appeared_dir_mask(IN_MOVED_TO | IN_ISDIR), 1_073_742_080);
        // Self events carry their own bit only and merge with the parent's event (reference
        // §2.2 and §4.4's observed masks).
        assert_eq!(self_event(libc::IN_DELETE_SELF), Some(SelfEvent::Deleted));
        assert_eq!(self_event(libc::IN_MOVE_SELF), Some(SelfEvent::Moved));
        assert_eq!(self_event(IN_ATTRIB | IN_ISDIR), None);
        assert_eq!(self_event(IN_CREATE), None);
        assert_eq!(
            IN_DELETE | IN_ISDIR | libc::IN_DELETE_SELF,
            1_073_743_360,
            "rm -r d"
        );
        assert_eq!(
            appeared_dir_mask(IN_MOVED_TO | IN_ISDIR) | libc::IN_MOVE_SELF,
            1_073_744_128,
            "mv d e"
        );
    }
}
