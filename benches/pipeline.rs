//! Micro-benchmarks of the worker's hot pieces, through the library's public API.
//!
//! `cargo bench --bench pipeline` (stable Rust, no benchmark framework): each case runs a short
//! warm-up, then repeats its body for about `BUDGET` and prints the median and the best time per
//! operation over the repetitions. These are ns/op figures to compare between commits on the same
//! machine, not assertions. `cargo bench --bench pipeline -- FILTER` runs the cases whose name
//! contains FILTER.

use std::hint::black_box;
use std::io;
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
