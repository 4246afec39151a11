//! Micro-benchmarks of the worker's hot pieces, through the library's public API.
//!
//! `cargo bench --bench pipeline` (stable Rust, no benchmark framework): each case runs a short
//! warm-up, then repeats its body for about `BUDGET` and prints the median and the best time per
//! operation over the repetitions. These are ns/op figures to compare between commits on the same
//! machine, not assertions. `cargo bench --bench pipeline -- FILTER` runs the cases whose name
//! contains FILTER.
//!
//! The `tree memory` case counts the heap bytes the watch tree holds through a counting global
//! allocator (switched on only around that case, so the timed cases pay one relaxed load per
//! allocation): the bytes asked for, and the bytes of the malloc chunks that hold them
//! (`malloc_usable_size` + glibc's 8-byte chunk header), which is what RSS sees.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clsync_rs::handler::rsynclist::{ListFlags, RsyncLists};
use clsync_rs::monitor::inotify;
use clsync_rs::monitor::tree::{NodeId, Tree, ROOT};
use clsync_rs::privsep::protocol::{decode, encode, RelPath, Request};
use clsync_rs::queue::{Delays, Item, QueueId, Queues};

/// Wall time each case is repeated for, after its warm-up.
const BUDGET: Duration = Duration::from_millis(1500);
/// At least this many timed repetitions, whatever the budget says.
const MIN_REPS: usize = 5;

/// Directories in the tree cases and paths in the queue and list cases.
const N: usize = 100_000;

/// Directories in the memory case: the harness's 1M-file tree (20 files per directory).
const N_MEM: usize = 50_000;

/// The system allocator, counting live heap bytes while `COUNTING` is on.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes asked for (Layout sizes), live.
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Bytes of the malloc chunks behind them, live, and the highest value seen.
static LIVE_CHUNK: AtomicIsize = AtomicIsize::new(0);
static PEAK_CHUNK: AtomicIsize = AtomicIsize::new(0);

/// The size of the glibc chunk behind `ptr`: its usable size plus the 8-byte size header.
fn chunk(ptr: *mut u8) -> isize {
    // SAFETY: `ptr` is a live block from the system allocator (malloc, posix_memalign).
    (unsafe { libc::malloc_usable_size(ptr.cast()) } + 8) as isize
}

fn count(req: isize, chunk: isize) {
    LIVE.fetch_add(req, Relaxed);
    let now = LIVE_CHUNK.fetch_add(chunk, Relaxed) + chunk;
    PEAK_CHUNK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if COUNTING.load(Relaxed) && !p.is_null() {
            count(layout.size() as isize, chunk(p));
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Relaxed) {
            count(-(layout.size() as isize), -chunk(ptr));
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if COUNTING.load(Relaxed) && !p.is_null() {
            count(layout.size() as isize, chunk(p));
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let counting = COUNTING.load(Relaxed);
        let old = if counting { chunk(ptr) } else { 0 };
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if counting && !p.is_null() {
            count(new_size as isize - layout.size() as isize, chunk(p) - old);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Live bytes (asked, chunks) now.
fn live() -> (isize, isize) {
    (LIVE.load(Relaxed), LIVE_CHUNK.load(Relaxed))
}

struct Runner {
    filter: Option<String>,
}

impl Runner {
    /// Times `body`, which performs `ops` operations per call. `setup` builds a fresh input for
    /// each call, outside the timed part.
    fn run<S, T, R>(&self, name: &str, ops: usize, mut setup: S, mut body: impl FnMut(T) -> R)
    where
        S: FnMut() -> T,
    {
        if let Some(f) = &self.filter {
            if !name.contains(f.as_str()) {
                return;
            }
        }
        black_box(body(setup()));
        let mut samples: Vec<f64> = Vec::new();
        let start = Instant::now();
        while samples.len() < MIN_REPS || start.elapsed() < BUDGET {
            let input = setup();
            let t = Instant::now();
            let out = body(input);
            let dt = t.elapsed();
            // Dropping the output (e.g. a 100k-entry map) is not part of the operation.
            drop(black_box(out));
            samples.push(dt.as_nanos() as f64 / ops as f64);
            if samples.len() >= 10_000 {
                break;
            }
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let median = samples[samples.len() / 2];
        println!(
            "{name:<58} {median:>10.1} ns/op  (best {:>9.1}, {} reps x {ops} ops)",
            samples[0],
            samples.len()
        );
    }
}

/// The bytes one read(2) of an inotify fd returns for `n` events with names like the ones a
/// sync tree has (`f0001234.txt`), NUL-padded to 16 bytes as the kernel does.
fn inotify_buffer(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("f{i:07}.txt");
        let ev = inotify::RawEvent {
            wd: i as i32 % 5000 + 1,
            mask: libc::IN_CLOSE_WRITE,
            cookie: 0,
            name: name.as_bytes(),
        };
        inotify::encode(&ev, 0, &mut out);
    }
    out
}

/// A tree of `n` directories shaped like the harness's trees: a 10-ary heap, so directory `i`'s
/// parent is directory `(i - 1) / 10`, and directory 0 is the root's first child.
fn heap_tree(n: usize) -> (Tree, Vec<NodeId>) {
    let mut t = Tree::new();
    let mut ids: Vec<NodeId> = Vec::with_capacity(n);
    for i in 0..n {
        let parent = if i == 0 { ROOT } else { ids[(i - 1) / 10] };
        let id = t
            .add(parent, format!("d{i}").as_bytes())
            .expect("parent exists");
        t.set_wd(id, i as i32 + 1);
        ids.push(id);
    }
    (t, ids)
}

/// The relative paths of the files of `n` directories of a heap tree, one file per directory.
fn heap_paths(n: usize) -> Vec<Vec<u8>> {
    let (t, ids) = heap_tree(n);
    ids.iter()
        .enumerate()
        .map(|(i, &id)| t.child_path(id, format!("f{i:07}.txt").as_bytes()).0)
        .collect()
}

/// `n` directories named `d{i}` in a `fanout`-ary heap (directory `i`'s parent is directory
/// `(i - 1) / fanout`, directory 0 is the root's first child): the parent index and the name
/// of each, prepared outside the measured part.
fn heap_shape(n: usize, fanout: usize) -> Vec<(usize, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let parent = if i == 0 { usize::MAX } else { (i - 1) / fanout };
            (parent, format!("d{i}").into_bytes())
        })
        .collect()
}

/// Builds the heap of `shape` with a watch on every directory; the ids go to `ids`.
fn build_into(shape: &[(usize, Vec<u8>)], ids: &mut Vec<NodeId>) -> Tree {
    let mut t = Tree::new();
    for (i, (parent, name)) in shape.iter().enumerate() {
        let parent = ids.get(*parent).copied().unwrap_or(ROOT);
        let id = t.add(parent, name).expect("parent exists");
        t.set_wd(id, i as i32 + 1);
        ids.push(id);
    }
    t
}

/// The heap bytes a tree of `shape` holds, and the peak while it is built; then the same after
/// a delete storm that removes all but the last of the top directory's subtrees (in a heap the
/// last one is the smallest: 98% of the directories go).
fn tree_memory(r: &Runner, shape: &[(usize, Vec<u8>)], fanout: usize) {
    let name = format!("tree memory: {} dirs, {fanout}-ary", shape.len());
    if let Some(f) = &r.filter {
        if !name.contains(f.as_str()) {
            return;
        }
    }
    let n = shape.len();
    // The ids are the caller's, not the tree's: allocated before counting starts.
    let mut ids: Vec<NodeId> = Vec::with_capacity(n);
    COUNTING.store(true, Relaxed);
    let (b_req, b_chunk) = live();
    PEAK_CHUNK.store(b_chunk, Relaxed);
    let mut t = build_into(shape, &mut ids);
    let (req, chunk) = live();
    let (req, chunk) = (req - b_req, chunk - b_chunk);
    let peak = PEAK_CHUNK.load(Relaxed) - b_chunk;
    println!(
        "# {name}: {:.1} B/dir asked, {:.1} B/dir in malloc chunks ({chunk} B), peak while building {:.1} B/dir",
        req as f64 / n as f64,
        chunk as f64 / n as f64,
        peak as f64 / n as f64
    );
    // Delete storm: the top directory's subtrees but the last.
    let mut removed = 0usize;
    for &top in ids.iter().take(fanout).skip(1) {
        removed += t.remove(top).len();
    }
    let (req2, chunk2) = live();
    let left = t.len() - 1;
    println!(
        "# {name}: after removing {removed} dirs ({left} left): {} B asked, {} B in chunks ({:.1} B/dir left)",
        req2 - b_req,
        chunk2 - b_chunk,
        (chunk2 - b_chunk) as f64 / left as f64
    );
    drop(t);
    COUNTING.store(false, Relaxed);
}

fn main() {
    // `cargo bench` passes `--bench`; anything else that is not a flag is a name filter.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let r = Runner { filter };
    println!("# ns per operation; N = {N}; median and best of the repetitions");

    // --- inotify event decoding -----------------------------------------------------------
    let buf = inotify_buffer(4096);
    r.run(
        "inotify::events decode (per event)",
        4096,
        || (),
        |()| {
            let mut acc = 0u64;
            for ev in inotify::events(black_box(&buf)) {
                acc = acc.wrapping_add(ev.wd as u64 ^ ev.mask as u64 ^ ev.name.len() as u64);
            }
            acc
        },
    );

    // --- watch tree -----------------------------------------------------------------------
    r.run(
        "tree: add + set_wd, 10-ary heap (per dir)",
        N,
        || (),
        |()| heap_tree(N),
    );
    r.run(
        "tree: add, 10k dirs in one flat dir (per dir)",
        10_000,
        || (),
        |()| {
            let mut t = Tree::new();
            for i in 0..10_000 {
                t.add(ROOT, format!("d{i}").as_bytes());
            }
            t
        },
    );
    for fanout in [10, 20] {
        let shape = heap_shape(N_MEM, fanout);
        tree_memory(&r, &shape, fanout);
        r.run(
            &format!("tree: add, 50k dirs, {fanout}-ary (per add)"),
            N_MEM,
            || (),
            |()| {
                let mut t = Tree::new();
                let mut ids: Vec<NodeId> = Vec::with_capacity(N_MEM);
                for (parent, name) in &shape {
                    let parent = ids.get(*parent).copied().unwrap_or(ROOT);
                    ids.push(t.add(parent, black_box(name)).expect("parent exists"));
                }
                (t, ids)
            },
        );
        let mut ids = Vec::with_capacity(N_MEM);
        let t = build_into(&shape, &mut ids);
        // A sibling's name with one more byte: no match, and no allocation in the timed part.
        let misses: Vec<Vec<u8>> = shape.iter().map(|(_, n)| [n, &b"x"[..]].concat()).collect();
        r.run(
            &format!("tree: child() hit, 50k dirs, {fanout}-ary (per lookup)"),
            N_MEM,
            || (),
            |()| {
                let mut hits = 0usize;
                for (i, (parent, name)) in shape.iter().enumerate() {
                    let parent = ids.get(*parent).copied().unwrap_or(ROOT);
                    hits += (t.child(parent, black_box(name)) == Some(ids[i])) as usize;
                }
                hits
            },
        );
        r.run(
            &format!("tree: child() miss, 50k dirs, {fanout}-ary (per lookup)"),
            N_MEM,
            || (),
            |()| {
                let mut hits = 0usize;
                for ((parent, _), miss) in shape.iter().zip(&misses) {
                    let parent = ids.get(*parent).copied().unwrap_or(ROOT);
                    hits += t.child(parent, black_box(miss)).is_some() as usize;
                }
                hits
            },
        );
    }
    let (tree, ids) = heap_tree(N);
    r.run(
        "tree: path() of every dir (per dir)",
        N,
        || (),
        |()| {
            let mut total = 0usize;
            for &id in &ids {
                total += tree.path(black_box(id)).0.len();
            }
            total
        },
    );
    r.run(
        "tree: by_wd() lookup (per wd)",
        N,
        || (),
        |()| {
            let mut hits = 0usize;
            for wd in 1..=N as i32 {
                hits += tree.by_wd(black_box(wd)).is_some() as usize;
            }
            hits
        },
    );
    drop(tree);
    let names: Vec<String> = (0..N).map(|i| format!("d{i}")).collect();
    // Rename every 7th leaf-level directory to another parent and back: two renames per dir.
    r.run(
        "tree: rename leaf dir to other parent (per rename)",
        2 * (N / 2..N).step_by(7).len(),
        || heap_tree(N).0,
        |mut t| {
            let target = ids[1];
            for i in (N / 2..N).step_by(7) {
                let (id, parent) = (ids[i], ids[(i - 1) / 10]);
                t.rename(id, target, b"moved");
                t.rename(id, parent, names[i].as_bytes());
            }
            t
        },
    );
    r.run(
        "tree: remove the 10 top subtrees (per dir)",
        N - 1,
        || heap_tree(N),
        |(mut t, ids)| {
            let mut wds = 0usize;
            for &top in &ids[1..11] {
                wds += t.remove(top).len();
            }
            (t, wds)
        },
    );

    // --- aggregation ----------------------------------------------------------------------
    let paths = heap_paths(N);
    let delays = Delays {
        sync: Duration::ZERO,
        collect: Duration::ZERO,
        bigfile: Duration::ZERO,
    };
    r.run(
        "queue: include 100k paths + take_due (per path)",
        N,
        || paths.clone(),
        |paths| {
            let now = Instant::now();
            let mut q = Queues::new(delays);
            for p in paths {
                q.include(
                    QueueId::Normal,
                    p,
                    Item::new(libc::IN_CLOSE_WRITE, false),
                    now,
                );
            }
            q.take_due(now, false)
        },
    );
    r.run(
        "queue: include each path 4x (merge) + take_due (per event)",
        4 * N,
        || {
            let mut v = Vec::with_capacity(4 * N);
            for _ in 0..4 {
                v.extend(paths.iter().cloned());
            }
            v
        },
        |paths| {
            let now = Instant::now();
            let mut q = Queues::new(delays);
            for p in paths {
                q.include(QueueId::Normal, p, Item::new(libc::IN_MODIFY, false), now);
            }
            q.take_due(now, false)
        },
    );

    // --- rsync lists ----------------------------------------------------------------------
    r.run(
        "rsynclist: add_include 100k paths (per path)",
        N,
        || (),
        |()| {
            let mut l = RsyncLists::new();
            for p in &paths {
                l.add_include(p, ListFlags::NONE);
            }
            l
        },
    );
    let mut lists = RsyncLists::new();
    for p in &paths {
        lists.add_include(p, ListFlags::NONE);
    }
    r.run(
        "rsynclist: write_include to io::sink (per line)",
        lists.include_len(),
        || (),
        |()| lists.write_include(&mut io::sink()).is_ok(),
    );

    // --- privsep protocol -----------------------------------------------------------------
    let dirs: Vec<RelPath> = paths[..1000]
        .iter()
        .map(|p| {
            let cut = p.iter().rposition(|&b| b == b'/').unwrap_or(0);
            RelPath(p[..cut].to_vec())
        })
        .collect();
    let watch = Request::Walk {
        dirs,
        watch: true,
        files: false,
        stat: false,
    };
    let bytes = encode(&watch).expect("a Walk of 1000 dirs fits a datagram");
    println!(
        "# Walk of 1000 dirs encodes to {} bytes (datagram cap 65536)",
        bytes.len()
    );
    r.run(
        "protocol: encode Walk of 1000 dirs (per msg)",
        1,
        || (),
        |()| encode(black_box(&watch)),
    );
    r.run(
        "protocol: decode Walk of 1000 dirs (per msg)",
        1,
        || (),
        |()| decode::<Request>(black_box(&bytes)),
    );
}
