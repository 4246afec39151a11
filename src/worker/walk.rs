//! Stage 1: walking the tree through the helper (start, new directories, rescans): batched
//! Walk requests (watch + list each directory through one fd), two in flight, the rules deciding
//! what is walked, watched, synced or excluded.
#![forbid(unsafe_code)]

use super::*;

/// Walk requests the worker keeps in flight: two lets the helper read one batch while the worker
/// takes in the other (the two run on different cores); more would only queue in the socket.
const WALKS_IN_FLIGHT: usize = 2;

impl Worker {
    // ---- stage 1: walking (initial, new directories, rescans) ----

    /// Watches and lists the directories in `start` and everything below them that the rules
    /// let us walk, in batches of directories: one Walk request per batch, [`WALKS_IN_FLIGHT`]
    /// of them at once so the helper reads the next batch while this one is taken in.
    pub(super) fn walk(&mut self, start: Vec<NodeId>, mode: WalkMode) -> Result<(), ClientError> {
        let need_files = (!self.rules.is_empty() && !mode.full) || mode.nodes.is_some();
        let one_fs = self.cfg.one_file_system;
        let fifo_start = self.fifo.len();
        let mut todo: VecDeque<NodeId> = start.into();
        let mut in_flight: VecDeque<(Vec<NodeId>, Vec<RelPath>)> = VecDeque::new();
        // Watches of subtrees found gone by a prune, dropped once no Walk is in flight.
        let mut unwatch = Vec::new();
        loop {
            while in_flight.len() < WALKS_IN_FLIGHT {
                let (ids, paths) = self.next_batch(&mut todo);
                if ids.is_empty() {
                    break;
                }
                self.client
                    .walk_send(paths.clone(), mode.watch, need_files, one_fs)?;
                in_flight.push_back((ids, paths));
            }
            let Some((ids, paths)) = in_flight.pop_front() else {
                break;
            };
            let mut found: Vec<(usize, Vec<crate::privsep::protocol::Entry>)> = Vec::new();
            let mut watched: Vec<(usize, WatchResult)> = Vec::new();
            self.client.walk_recv(|i, chunk| {
                if let Some(w) = chunk.watch {
                    watched.push((i, w));
                }
                let errno = chunk.errno;
                if errno != 0 && errno != libc::ENOENT && errno != libc::ENOTDIR {
                    crate::warning!("cannot list {:?}: {}", paths[i], Errno::from_raw(errno));
                }
                found.push((i, chunk.entries));
            })?;
            for (i, r) in watched {
                match r {
                    WatchResult::Wd(wd) => {
                        crate::debug!(3, "watch {:?} = wd {wd}", paths[i]);
                        self.tree.set_wd(ids[i], wd);
                    }
                    WatchResult::Errno(e) => self.watch_failed(ids[i], &paths[i], e),
                }
            }
            let mut seen: HashMap<usize, Vec<Vec<u8>>> = HashMap::new();
            for (i, entries) in found {
                let id = ids[i];
                if !self.tree.exists(id) {
                    continue; // its watch failed: gone or replaced meanwhile
                }
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
                            // `add` finds a known child too.
                            if let Some(child) = self.tree.add(id, &e.name) {
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
                    if !self.tree.exists(id) {
                        continue;
                    }
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
                            unwatch.extend(self.tree.remove(child));
                        }
                    }
                }
            }
        }
        self.client.unwatch(unwatch)?;
        if self.cfg.mode == Mode::Simple {
            // The walk goes breadth-first, in batches; clsync's calls come in pre-order (fts:
            // each directory's subtree right after it, reference §4.2).
            self.fifo.make_contiguous()[fifo_start..].sort_by(|a, b| preorder(&a.0, &b.0));
        }
        Ok(())
    }

    /// The next batch of `todo` (directories still in the tree), within a request's limits.
    fn next_batch(&self, todo: &mut VecDeque<NodeId>) -> (Vec<NodeId>, Vec<RelPath>) {
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
        (ids, paths)
    }

    pub(super) fn watch_failed(&mut self, id: NodeId, path: &RelPath, errno: i32) {
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
}

/// Pre-order of relative paths (a directory right before its subtree, siblings by name): the
/// paths compared component by component.
fn preorder(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preorder_puts_each_directory_right_before_its_subtree() {
        // Breadth-first, as the batched walk finds them.
        let mut v: Vec<&[u8]> = vec![
            b"od", b"d", b"d.x", b"mv1", b"od/o", b"d/b", b"d/e", b"d/e/f", b"d-1/z", b"d/e/f/g",
        ];
        v.sort_by(|a, b| preorder(a, b));
        let want: Vec<&[u8]> = vec![
            b"d", b"d/b", b"d/e", b"d/e/f", b"d/e/f/g", b"d-1/z", b"d.x", b"mv1", b"od", b"od/o",
        ];
        assert_eq!(v, want);
    }
}
