//! Aggregation: events become entries keyed by path in one of clsync's queues, merged on the way
//! in (one hash operation per event), and leave as one batch per sync pass.
//!
//! * `instant` — the initial sync and rescans after a queue overflow: no delay;
//! * `normal`  — ordinary files and directories, due `-t` seconds after its first entry;
//! * `big`     — files larger than `-B` bytes, due `-T` seconds after its first entry.
//!
//! A pass may start only `-w` seconds after the previous one started. Excludes (paths the rules
//! refuse to sync, found while walking) travel with the includes of the same pass.
#![forbid(unsafe_code)]

use crate::handler::rsynclist::ListFlags;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueId {
    Instant,
    Normal,
    Big,
}

/// What is known about a queued path: the inotify bits seen for it (OR-ed) and whether it must
/// be synced recursively (a new, moved or removed directory in the rsync modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Item {
    pub mask: u32,
    pub recursive: bool,
}

impl Item {
    pub fn new(mask: u32, recursive: bool) -> Item {
        Item { mask, recursive }
    }

    fn merge(&mut self, o: Item) {
        self.mask |= o.mask;
        self.recursive |= o.recursive;
    }
}

#[derive(Default, Debug)]
struct Queue {
    includes: HashMap<Vec<u8>, Item>,
    excludes: HashSet<Vec<u8>>,
    since: Option<Instant>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.includes.is_empty() && self.excludes.is_empty()
    }
    fn touch(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }
}

/// What one sync pass hands to the list builder.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Batch {
    pub includes: Vec<(Vec<u8>, Item)>,
    pub excludes: Vec<Vec<u8>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.includes.is_empty() && self.excludes.is_empty()
    }

    /// Puts a failed batch back for a retry (into `instant`, ignoring nothing).
    pub fn requeue(self, q: &mut Queues, now: Instant) {
        for (p, it) in self.includes {
            q.include(QueueId::Instant, p, it, now);
        }
        for p in self.excludes {
            q.exclude(QueueId::Instant, p, now);
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Delays {
    pub sync: Duration,
    pub collect: Duration,
    pub bigfile: Duration,
}

/// A queue's entries and excludes (see [`Queues::contents`]).
pub type QueueContents<'a> = (Vec<(&'a [u8], Item)>, Vec<&'a [u8]>);

#[derive(Debug)]
pub struct Queues {
    instant: Queue,
    normal: Queue,
    big: Queue,
    delays: Delays,
    last_pass: Option<Instant>,
}

impl Queues {
    pub fn new(delays: Delays) -> Queues {
        Queues {
            instant: Queue::default(),
            normal: Queue::default(),
            big: Queue::default(),
            delays,
            last_pass: None,
        }
    }

    /// New delays (a --custom-signals switch, the control socket's `set`), for what is queued
    /// as well as what comes: an entry's due time is computed from them when asked.
    pub fn set_delays(&mut self, delays: Delays) {
        self.delays = delays;
    }

    fn q(&mut self, id: QueueId) -> &mut Queue {
        match id {
            QueueId::Instant => &mut self.instant,
            QueueId::Normal => &mut self.normal,
            QueueId::Big => &mut self.big,
        }
    }

    pub fn include(&mut self, id: QueueId, path: Vec<u8>, item: Item, now: Instant) {
        let q = self.q(id);
        q.touch(now);
        q.includes.entry(path).or_default().merge(item);
    }

    pub fn exclude(&mut self, id: QueueId, path: Vec<u8>, now: Instant) {
        let q = self.q(id);
        q.touch(now);
        q.excludes.insert(path);
    }

    pub fn is_empty(&self) -> bool {
        self.instant.is_empty() && self.normal.is_empty() && self.big.is_empty()
    }

    /// Whether a directory above `path` (or the root) waits in the instant or the ordinary queue
    /// to be synced recursively: its pass will copy `path` too, so an event for `path` adds
    /// nothing. Once that pass has taken the directory, this is false again (what changes while
    /// rsync runs needs its own entry).
    pub fn covered(&self, path: &[u8]) -> bool {
        [&self.instant, &self.normal].into_iter().any(|q| {
            !q.includes.is_empty()
                && std::iter::once(0)
                    .chain(
                        path.iter()
                            .enumerate()
                            .filter(|&(_, &b)| b == b'/')
                            .map(|(i, _)| i),
                    )
                    .any(|i| q.includes.get(&path[..i]).is_some_and(|it| it.recursive))
        })
    }

    /// What one queue holds now (for a dump): its entries and its excludes, unordered.
    pub fn contents(&self, id: QueueId) -> QueueContents<'_> {
        let q = match id {
            QueueId::Instant => &self.instant,
            QueueId::Normal => &self.normal,
            QueueId::Big => &self.big,
        };
        (
            q.includes
                .iter()
                .map(|(p, it)| (p.as_slice(), *it))
                .collect(),
            q.excludes.iter().map(Vec::as_slice).collect(),
        )
    }

    fn due_at(&self, id: QueueId) -> Option<Instant> {
        let (q, d) = match id {
            QueueId::Instant => (&self.instant, Duration::ZERO),
            QueueId::Normal => (&self.normal, self.delays.collect),
            QueueId::Big => (&self.big, self.delays.bigfile),
        };
        if q.is_empty() {
            None
        } else {
            q.since.map(|s| s + d)
        }
    }

    /// When the next pass may run (None: nothing queued). `ignore_delays` is for the final flush
    /// and --exit-on-no-events.
    pub fn next_pass(&self, now: Instant, ignore_delays: bool) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        if ignore_delays {
            return Some(now);
        }
        let due = [QueueId::Instant, QueueId::Normal, QueueId::Big]
            .into_iter()
            .filter_map(|id| self.due_at(id))
            .min()?;
        let earliest = self.last_pass.map(|l| l + self.delays.sync).unwrap_or(due);
        Some(due.max(earliest))
    }

    /// Takes every queue that is due (all of them with `ignore_delays`), merged into one batch:
    /// a path in several queues is synced once. Records the pass time for `-w`.
    pub fn take_due(&mut self, now: Instant, ignore_delays: bool) -> Batch {
        if !ignore_delays {
            if let Some(l) = self.last_pass {
                if now < l + self.delays.sync {
                    return Batch::default();
                }
            }
        }
        let ids: Vec<QueueId> = [QueueId::Instant, QueueId::Normal, QueueId::Big]
            .into_iter()
            .filter(|&id| self.due_at(id).is_some_and(|d| ignore_delays || d <= now))
            .collect();
        if ids.is_empty() {
            return Batch::default();
        }
        let mut inc: HashMap<Vec<u8>, Item> = HashMap::new();
        let mut exc: HashSet<Vec<u8>> = HashSet::new();
        for id in ids {
            let q = std::mem::take(self.q(id));
            for (p, it) in q.includes {
                inc.entry(p).or_default().merge(it);
            }
            exc.extend(q.excludes);
        }
        // A path taken now leaves the queues that were not due, too (clsync merges them).
        for id in [QueueId::Normal, QueueId::Big] {
            let q = self.q(id);
            if !q.includes.is_empty() {
                for (p, it) in inc.iter_mut() {
                    if let Some(o) = q.includes.remove(p) {
                        it.merge(o);
                    }
                }
                if q.is_empty() {
                    q.since = None;
                }
            }
        }
        self.last_pass = Some(now);
        Batch {
            includes: inc.into_iter().collect(),
            excludes: exc.into_iter().collect(),
        }
    }
}

/// Below this many paths a batch's rsync list is exactly clsync's.
pub const COARSEN_MIN_BATCH: usize = 1024;
/// A directory with at least this many changed entries directly in it is listed whole.
pub const COARSEN_MIN_CHILDREN: usize = 32;
/// A busy directory with at most this many directories in its subtree (or, if more, as many as
/// the pass has paths) is listed recursively.
pub const COARSEN_MAX_SUBTREE_DIRS: usize = 1024;

/// The rsync list entries for a batch, coarsened when it is large: rsync matches every file it
/// walks against the include lines one after the other, so thousands of exact lines make a pass
/// quadratic (20,000 lines for 20,000 files: 2.6 s; the same as 200 `/dir/***` lines: 0.19 s).
///
/// A directory holding at least `min_children` of the batch's paths directly is *busy*. A busy
/// directory whose subtree is small (`small_subtree`, e.g. at most
/// [`COARSEN_MAX_SUBTREE_DIRS`] directories, or gone) becomes one recursive entry
/// (`/dir/***`) that covers every path of the batch beneath it. A busy directory with a large
/// subtree becomes `/dir` + `/dir/*` ([`ListFlags::CHILDREN`]) in place of its direct
/// non-recursive entries, so rsync looks no deeper than the exact lines would have made it.
/// rsync's quick check skips what did not change and `--delete` still removes what is gone.
/// Only valid when no rule excludes anything (a coarse line would carry excluded files).
/// Batches under `min_batch` are exact.
pub fn rsync_entries(
    includes: &[(Vec<u8>, Item)],
    min_batch: usize,
    min_children: usize,
    small_subtree: impl Fn(&[u8]) -> bool,
) -> Vec<(&[u8], ListFlags)> {
    let flags = |it: &Item| {
        if it.recursive {
            ListFlags::RECURSIVE
        } else {
            ListFlags::NONE
        }
    };
    if includes.len() < min_batch {
        return includes
            .iter()
            .map(|(p, it)| (p.as_slice(), flags(it)))
            .collect();
    }
    fn parent(p: &[u8]) -> Option<&[u8]> {
        if p.is_empty() {
            return None;
        }
        Some(
            p.iter()
                .rposition(|&b| b == b'/')
                .map_or(&p[..0], |i| &p[..i]),
        )
    }
    // `p`'s proper ancestors from the root down ("", "a", "a/b" for "a/b/c"), then `p`.
    fn ancestors_and_self(p: &[u8]) -> impl Iterator<Item = &[u8]> {
        let root = (!p.is_empty()).then_some(0);
        let slashes = p
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'/')
            .map(|(i, _)| i);
        root.into_iter()
            .chain(slashes)
            .chain(std::iter::once(p.len()))
            .map(move |i| &p[..i])
    }
    let mut per_parent: HashMap<&[u8], usize> = HashMap::new();
    for (p, _) in includes {
        if let Some(d) = parent(p) {
            *per_parent.entry(d).or_default() += 1;
        }
    }
    let busy: HashSet<&[u8]> = per_parent
        .into_iter()
        .filter(|&(_, n)| n >= min_children)
        .map(|(d, _)| d)
        .collect();
    let whole: HashSet<&[u8]> = busy.iter().copied().filter(|d| small_subtree(d)).collect();
    let mut out = Vec::new();
    let mut listed: HashSet<&[u8]> = HashSet::new();
    for (p, it) in includes {
        if let Some(top) = ancestors_and_self(p).find(|a| whole.contains(a)) {
            if listed.insert(top) {
                out.push((top, ListFlags::RECURSIVE));
            }
            continue;
        }
        match parent(p) {
            Some(d) if !it.recursive && busy.contains(d) => {
                if listed.insert(d) {
                    out.push((d, ListFlags::CHILDREN));
                }
            }
            _ => out.push((p.as_slice(), flags(it))),
        }
    }
    out
}

#[cfg(test)]
mod tests {

    fn entries(v: &[(&[u8], ListFlags)]) -> Vec<(String, ListFlags)> {
        let mut r: Vec<_> = v
            .iter()
            .map(|(p, f)| (String::from_utf8_lossy(p).into_owned(), *f))
            .collect();
        r.sort_by(|a, b| a.0.cmp(&b.0));
        r
    }

    fn batch(names: &[String]) -> Vec<(Vec<u8>, Item)> {
        names
            .iter()
            .map(|n| {
                let rec = n.ends_with('/');
                let n = n.trim_end_matches('/');
                (n.as_bytes().to_vec(), Item::new(2, rec))
            })
            .collect()
    }

    #[test]
    fn a_path_is_covered_only_while_a_directory_above_it_waits_to_be_synced_whole() {
        let now = Instant::now();
        let d = Duration::ZERO;
        let mut q = Queues::new(Delays {
            sync: d,
            collect: d,
            bigfile: d,
        });
        q.include(QueueId::Normal, b"a/new".to_vec(), Item::new(2, true), now);
        q.include(
            QueueId::Normal,
            b"a/plain".to_vec(),
            Item::new(2, false),
            now,
        );
        assert!(q.covered(b"a/new/f"));
        assert!(q.covered(b"a/new/deep/er/f"));
        assert!(
            !q.covered(b"a/new"),
            "the directory itself is not beneath itself"
        );
        assert!(!q.covered(b"a/newer/f"), "a name that only starts alike");
        assert!(
            !q.covered(b"a/plain/f"),
            "a directory queued by itself only"
        );
        assert!(!q.covered(b"b/f"));
        let batch = q.take_due(now, true);
        assert_eq!(batch.includes.len(), 2);
        assert!(
            !q.covered(b"a/new/f"),
            "once its pass took the directory, a change beneath it needs its own entry"
        );
        q.include(QueueId::Big, b"big".to_vec(), Item::new(2, true), now);
        assert!(!q.covered(b"big/f"), "the big-file queue may wait longer");
        q.include(QueueId::Instant, Vec::new(), Item::new(2, true), now);
        assert!(q.covered(b"x"), "a whole-tree re-sync covers everything");
    }

    #[test]
    fn small_batches_keep_exact_rsync_entries() {
        let names: Vec<String> = (0..40).map(|i| format!("d/f{i}")).collect();
        let b = batch(&names);
        let got = rsync_entries(&b, 1024, 32, |_| true);
        assert_eq!(got.len(), 40);
        assert!(got.iter().all(|(_, f)| *f == ListFlags::NONE));
    }

    #[test]
    fn a_busy_directory_becomes_its_direct_entries_and_the_rest_stays() {
        let mut names: Vec<String> = (0..40).map(|i| format!("a/busy/f{i}")).collect();
        names.push("a/busy/newdir/".into()); // recursive: keeps its own line
        names.push("a/busy/sub/deep".into()); // deeper: keeps its own line
        names.push("other/x".into());
        names.push("top".into());
        let got = entries(&rsync_entries(&batch(&names), 10, 32, |_| false));
        let want: Vec<(String, ListFlags)> = vec![
            ("a/busy".into(), ListFlags::CHILDREN),
            ("a/busy/newdir".into(), ListFlags::RECURSIVE),
            ("a/busy/sub/deep".into(), ListFlags::NONE),
            ("other/x".into(), ListFlags::NONE),
            ("top".into(), ListFlags::NONE),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_busy_watch_root_is_listed_as_its_direct_entries() {
        let names: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
        let got = entries(&rsync_entries(&batch(&names), 10, 32, |_| false));
        assert_eq!(got, vec![(String::new(), ListFlags::CHILDREN)]);
    }

    #[test]
    fn a_busy_directory_with_a_small_subtree_covers_everything_beneath_it() {
        let mut names: Vec<String> = (0..40).map(|i| format!("a/small/f{i}")).collect();
        names.push("a/small/newdir/".into());
        names.push("a/small/sub/deep".into());
        names.extend((0..40).map(|i| format!("a/small/sub/g{i}")));
        names.extend((0..40).map(|i| format!("big/h{i}")));
        names.push("big/sub/deep".into());
        let got = entries(&rsync_entries(&batch(&names), 10, 32, |d| d != b"big"));
        let want: Vec<(String, ListFlags)> = vec![
            ("a/small".into(), ListFlags::RECURSIVE),
            ("big".into(), ListFlags::CHILDREN),
            ("big/sub/deep".into(), ListFlags::NONE),
        ];
        assert_eq!(got, want);
    }
    use super::*;

    fn delays(w: u64, t: u64, big: u64) -> Delays {
        Delays {
            sync: Duration::from_secs(w),
            collect: Duration::from_secs(t),
            bigfile: Duration::from_secs(big),
        }
    }

    #[test]
    fn small_files_wait_for_t_big_files_for_big_t() {
        let t0 = Instant::now();
        let mut q = Queues::new(delays(0, 1, 8));
        q.include(QueueId::Normal, b"small".to_vec(), Item::new(2, false), t0);
        q.include(QueueId::Big, b"big".to_vec(), Item::new(2, false), t0);
        assert!(q.take_due(t0, false).is_empty());
        let b = q.take_due(t0 + Duration::from_secs(1), false);
        assert_eq!(b.includes, vec![(b"small".to_vec(), Item::new(2, false))]);
        assert!(q.take_due(t0 + Duration::from_secs(7), false).is_empty());
        let b = q.take_due(t0 + Duration::from_secs(8), false);
        assert_eq!(b.includes, vec![(b"big".to_vec(), Item::new(2, false))]);
        assert!(q.is_empty());
    }

    #[test]
    fn duplicates_merge_and_recursive_wins() {
        let t0 = Instant::now();
        let mut q = Queues::new(delays(0, 0, 0));
        for _ in 0..1000 {
            q.include(QueueId::Normal, b"d".to_vec(), Item::new(2, false), t0);
        }
        q.include(QueueId::Normal, b"d".to_vec(), Item::new(8, true), t0);
        q.include(QueueId::Big, b"d".to_vec(), Item::new(4, false), t0);
        let b = q.take_due(t0, false);
        assert_eq!(b.includes, vec![(b"d".to_vec(), Item::new(14, true))]);
    }

    #[test]
    fn w_spaces_passes_and_flush_ignores_delays() {
        let t0 = Instant::now();
        let mut q = Queues::new(delays(5, 0, 0));
        q.include(QueueId::Normal, b"a".to_vec(), Item::default(), t0);
        assert!(!q.take_due(t0, false).is_empty());
        q.include(QueueId::Normal, b"b".to_vec(), Item::default(), t0);
        assert!(q.take_due(t0 + Duration::from_secs(4), false).is_empty());
        assert!(q.next_pass(t0, false).unwrap() >= t0 + Duration::from_secs(5));
        assert_eq!(q.next_pass(t0, true), Some(t0));
        assert!(!q.take_due(t0 + Duration::from_secs(4), true).is_empty());
    }
}
