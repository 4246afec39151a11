//! Shared infrastructure of the integration tests: scratch directories, tree builders, an exact
//! tree comparison, polling, and a handle on a running daemon (worker + helper + handlers).
//!
//! Every test binary includes this file with `mod common;` and uses a different subset of it.
//! Its own correctness is checked by `tests/harness_selftest.rs` with plain rsync copies and
//! deliberately broken ones, so a green mirror test means the trees really are equal.
//!
//! Rules the helpers follow:
//! - nothing is shared between tests: every test gets its own [`Scratch`] (and the daemon its own
//!   `TMPDIR` inside it) and starts its own processes;
//! - every process a test starts is ended by pid (never by name) and reaped, on success and on
//!   panic ([`Daemon`]'s `Drop`);
//! - waiting is polling with an upper bound ([`wait_for`]); no sleep is ever an assertion.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::Pid;

/// Owner of the files the tests create: fixed, non-root, and deliberately without a passwd entry
/// (the daemon and rsync must carry numeric ids, not names).
pub const TEST_UID: u32 = 4242;
/// Group of the files the tests create (see [`TEST_UID`]).
pub const TEST_GID: u32 = 4243;
/// clsync's default worker identity, nobody/nogroup.
pub const NOBODY: u32 = 65534;

/// Generous upper bound for a daemon to start and finish a small initial sync.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a small change to reach the destination.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------------
// Scratch directories

static SCRATCH_SEQ: AtomicU32 = AtomicU32::new(0);

/// A private directory under /tmp for one test, with `src/`, `dst/` and `tmp/` inside (all on the
/// same file system, so `rename(2)` between them and the tree works). Removed on drop, unless
/// `CLSYNC_TEST_KEEP` is set in the environment (then its path is printed).
pub struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// Creates `/tmp/clsync-rs-test.<name>.<pid>.<seq>` (replacing a stale one with that name).
    pub fn new(name: &str) -> Scratch {
        let seq = SCRATCH_SEQ.fetch_add(1, Ordering::SeqCst);
        let root = PathBuf::from(format!(
            "/tmp/clsync-rs-test.{}.{}.{}",
            name,
            std::process::id(),
            seq
        ));
        if root.exists() {
            fs::remove_dir_all(&root).expect("remove stale scratch dir");
        }
        fs::create_dir(&root).expect("create scratch dir");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let s = Scratch { root };
        for d in ["src", "dst", "tmp"] {
            fs::create_dir(s.root.join(d)).expect("create scratch subdir");
            fs::set_permissions(s.root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        s
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The watched tree.
    pub fn src(&self) -> PathBuf {
        self.root.join("src")
    }
    /// The destination.
    pub fn dst(&self) -> PathBuf {
        self.root.join("dst")
    }
    /// The daemon's `TMPDIR`: the helper's private list directory is created in here.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// `root/rel`, for extra directories next to src/dst (same file system).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }
    /// A new directory `root/rel` (mode 0755, root-owned), for things outside the watched tree.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("CLSYNC_TEST_KEEP").is_some() {
            eprintln!("keeping scratch dir {}", self.root.display());
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!("warning: cannot remove {}: {e}", self.root.display());
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Building trees

/// Ownership, permission bits and (optionally) mtime for a created node.
#[derive(Clone, Copy, Debug)]
pub struct Attrs {
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// (seconds, nanoseconds) since the epoch; `None` leaves the time the kernel set.
    pub mtime: Option<(i64, i64)>,
}

impl Attrs {
    /// `mode`, owned by TEST_UID:TEST_GID, mtime left alone.
    pub fn new(mode: u32) -> Attrs {
        Attrs {
            mode,
            uid: TEST_UID,
            gid: TEST_GID,
            mtime: None,
        }
    }
    pub fn owner(mut self, uid: u32, gid: u32) -> Attrs {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, secs: i64, nsecs: i64) -> Attrs {
        self.mtime = Some((secs, nsecs));
        self
    }
}

/// Sets the mtime (and atime, to the same value) of `path` itself, not following a symlink.
pub fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
    let ts = TimeSpec::new(secs, nsecs);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

/// `lchown` + (for non-symlinks) `chmod` + optional mtime, in the order that keeps setuid bits
/// (chown clears them) and the mtime (set last).
pub fn apply_attrs(path: &Path, a: Attrs) {
    std::os::unix::fs::lchown(path, Some(a.uid), Some(a.gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
    let is_link = fs::symlink_metadata(path).unwrap().file_type().is_symlink();
    if !is_link {
        fs::set_permissions(path, fs::Permissions::from_mode(a.mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
    if let Some((s, ns)) = a.mtime {
        set_mtime(path, s, ns);
    }
}

/// Creates (or truncates) a regular file with `content` and `attrs`.
pub fn create_file(path: impl AsRef<Path>, content: &[u8], attrs: Attrs) -> PathBuf {
    let path = path.as_ref();
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    apply_attrs(path, attrs);
    path.to_path_buf()
}

/// Creates a directory (parents must exist) with `attrs`. Set a directory's mtime only after its
/// entries exist, for example with [`set_mtime`] at the end: creating an entry changes it.
pub fn create_dir(path: impl AsRef<Path>, attrs: Attrs) -> PathBuf {
    let path = path.as_ref();
    fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    apply_attrs(path, attrs);
    path.to_path_buf()
}

/// Creates a symlink `path -> target` owned by uid:gid, with an optional mtime.
pub fn create_symlink(
    target: impl AsRef<Path>,
    path: impl AsRef<Path>,
    uid: u32,
    gid: u32,
    mtime: Option<(i64, i64)>,
) -> PathBuf {
    let path = path.as_ref();
    symlink(target.as_ref(), path).unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
    apply_attrs(
        path,
        Attrs {
            mode: 0o777,
            uid,
            gid,
            mtime,
        },
    );
    path.to_path_buf()
}

/// Creates a hard link `path` to `existing`.
pub fn create_hardlink(existing: impl AsRef<Path>, path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    fs::hard_link(existing.as_ref(), path)
        .unwrap_or_else(|e| panic!("link {}: {e}", path.display()));
    path.to_path_buf()
}

/// Creates a FIFO with `attrs`.
pub fn create_fifo(path: impl AsRef<Path>, attrs: Attrs) -> PathBuf {
    let path = path.as_ref();
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
    apply_attrs(path, attrs);
    path.to_path_buf()
}

/// Fills `root` (an existing directory) with a tree exercising everything the comparison looks
/// at: nested directories with unusual modes (setgid, sticky, 0700), files owned by TEST_UID and
/// by other ids with modes from 0000 to 04755, fixed mtimes with nanoseconds, empty and binary
/// files, relative/absolute/dangling symlinks with their own owners and mtimes, a hard-link group
/// of three spread over two directories plus a pair, and a FIFO. Directory mtimes are set last.
pub fn populate_sample_tree(root: &Path) {
    let t = |s: i64| 1_600_000_000 + s;
    create_dir(root.join("docs"), Attrs::new(0o755));
    create_dir(root.join("docs/deep"), Attrs::new(0o2775));
    create_dir(root.join("docs/deep/er"), Attrs::new(0o700));
    create_dir(root.join("docs/deep/er/est"), Attrs::new(0o755));
    create_dir(root.join("shared"), Attrs::new(0o1777).owner(0, 0));
    create_dir(root.join("empty"), Attrs::new(0o750));

    create_file(
        root.join("readme.txt"),
        b"hello\n",
        Attrs::new(0o644).mtime(t(1), 123_456_789),
    );
    create_file(
        root.join("secret"),
        b"top secret\n",
        Attrs::new(0o600).mtime(t(2), 1),
    );
    create_file(
        root.join("nothing"),
        b"",
        Attrs::new(0o000).mtime(t(3), 999_999_999),
    );
    create_file(
        root.join("setuid-tool"),
        b"#!/bin/sh\n",
        Attrs::new(0o4755).mtime(t(4), 0),
    );
    create_file(
        root.join("docs/a.md"),
        b"# a\n",
        Attrs::new(0o664).owner(TEST_UID, 0).mtime(t(5), 5),
    );
    let binary: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    create_file(
        root.join("docs/deep/blob.bin"),
        &binary,
        Attrs::new(0o640).mtime(t(6), 600_000_000),
    );
    create_file(
        root.join("docs/deep/er/est/leaf"),
        b"leaf\n",
        Attrs::new(0o444).owner(4321, 4322).mtime(t(7), 7),
    );
    create_file(
        root.join("shared/by-root"),
        b"root\n",
        Attrs::new(0o644).owner(0, 0).mtime(t(8), 8),
    );

    // Hard links: a group of three across two directories, and a pair.
    create_file(
        root.join("docs/linked"),
        b"one inode, three names\n",
        Attrs::new(0o640).mtime(t(9), 9),
    );
    create_hardlink(root.join("docs/linked"), root.join("docs/linked-2"));
    create_hardlink(root.join("docs/linked"), root.join("shared/linked-3"));
    create_file(
        root.join("pair-a"),
        b"pair\n",
        Attrs::new(0o644).mtime(t(10), 10),
    );
    create_hardlink(root.join("pair-a"), root.join("pair-b"));
    // Same content and attributes as the pair but a separate inode: must stay separate.
    create_file(
        root.join("pair-lookalike"),
        b"pair\n",
        Attrs::new(0o644).mtime(t(10), 10),
    );

    create_symlink(
        "readme.txt",
        root.join("link-rel"),
        TEST_UID,
        TEST_GID,
        Some((t(11), 11)),
    );
    create_symlink(
        "../../readme.txt",
        root.join("docs/deep/link-up"),
        TEST_UID,
        TEST_GID,
        Some((t(12), 12)),
    );
    create_symlink(
        "/etc/hostname",
        root.join("link-abs"),
        0,
        0,
        Some((t(13), 13)),
    );
    create_symlink(
        "does/not/exist",
        root.join("link-dangling"),
        TEST_UID,
        TEST_GID,
        Some((t(14), 14)),
    );
    create_symlink(
        "docs",
        root.join("link-dir"),
        TEST_UID,
        TEST_GID,
        Some((t(15), 15)),
    );

    create_fifo(root.join("docs/fifo"), Attrs::new(0o620).mtime(t(16), 16));

    // Directory mtimes last (children first), then the root itself.
    for (d, s) in [
        ("docs/deep/er/est", 20),
        ("docs/deep/er", 21),
        ("docs/deep", 22),
        ("docs", 23),
        ("shared", 24),
        ("empty", 25),
    ] {
        set_mtime(&root.join(d), t(s), 250_000_000 + s);
    }
    set_mtime(root, t(30), 30);
}

/// Runs `rsync -aH --delete src/ dst/` (the reference copy the harness self-test compares with).
pub fn rsync_copy(src: &Path, dst: &Path) {
    let mut s = src.as_os_str().to_owned();
    s.push("/");
    let mut d = dst.as_os_str().to_owned();
    d.push("/");
    let out = Command::new("rsync")
        .arg("-aH")
        .arg("--delete")
        .arg(&s)
        .arg(&d)
        .output()
        .expect("run rsync (is it installed?)");
    assert!(
        out.status.success(),
        "rsync failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------------------------------------------
// Tree comparison

/// What a tree entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(PathBuf),
    Fifo,
    Socket,
    CharDev(u64),
    BlockDev(u64),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink(_) => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDev(_) => "char device",
            Kind::BlockDev(_) => "block device",
        }
    }
}

/// One node of a snapshot, with the attributes rsync -aH preserves.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    /// `mode & 0o7777` (permission bits, setuid, setgid, sticky); 0 for symlinks, whose mode
    /// Linux does not let anyone set.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
}

/// A tree: relative path (the root is the empty path) -> entry.
pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// Walks `root` without following symlinks. Entries that vanish during the walk (rsync's
/// temporary files, a rename in flight) are skipped: the caller compares and polls again.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    walk(root, PathBuf::new(), &mut out);
    out
}

fn walk(root: &Path, rel: PathBuf, out: &mut Snapshot) {
    let abs = if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(&rel)
    };
    let md = match fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => panic!("lstat {}: {e}", abs.display()),
    };
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        match fs::read_link(&abs) {
            Ok(t) => Kind::Symlink(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => panic!("readlink {}: {e}", abs.display()),
        }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_socket() {
        Kind::Socket
    } else if ft.is_char_device() {
        Kind::CharDev(md.rdev())
    } else {
        Kind::BlockDev(md.rdev())
    };
    let is_dir = kind == Kind::Dir;
    let perm = if matches!(kind, Kind::Symlink(_)) {
        0
    } else {
        md.mode() & 0o7777
    };
    out.insert(
        rel.clone(),
        Entry {
            kind,
            perm,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
            size: md.size(),
            dev: md.dev(),
            ino: md.ino(),
        },
    );
    if is_dir {
        let rd = match fs::read_dir(&abs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => panic!("readdir {}: {e}", abs.display()),
        };
        let mut names: Vec<OsString> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            walk(root, rel.join(n), out);
        }
    }
}

/// How to print a relative path: quoted with escapes (a newline shows as `\n`); the root is `.`.
pub fn show(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        "\".\"".to_string()
    } else {
        format!("{:?}", rel.as_os_str())
    }
}

/// Partition of the non-directory paths by (dev, inode): path -> the set of paths sharing it.
fn link_groups(s: &Snapshot) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut by_inode: BTreeMap<(u64, u64), BTreeSet<PathBuf>> = BTreeMap::new();
    for (p, e) in s {
        if e.kind != Kind::Dir {
            by_inode
                .entry((e.dev, e.ino))
                .or_default()
                .insert(p.clone());
        }
    }
    let mut out = BTreeMap::new();
    for group in by_inode.values() {
        for p in group {
            out.insert(p.clone(), group.clone());
        }
    }
    out
}

fn files_equal(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Every difference between the trees at `src` and `dst`, one readable line each (empty when the
/// trees are equal). Compared for every path: presence, type, permission bits (with
/// setuid/setgid/sticky), uid, gid, mtime, symlink target, device number, content of regular
/// files (byte for byte), and hard-link grouping (the set of paths sharing an inode must be the
/// same on both sides). Atime and ctime are not compared (nobody can set ctime; reading a file
/// changes atime).
///
/// Mtimes: regular files are compared to the nanosecond; directories, symlinks and other special
/// files to the second. Directory mtimes matter because a daemon that forgets to pass rsync the
/// directory whose entry was deleted or renamed away leaves no other trace (clsync lists every
/// ancestor of a changed path, and rsync -a sets the directory's mtime once it has finished
/// writing into it). Only seconds, because rsync -aH itself (3.x, checked with 3.5.0) sets the
/// mtime of a directory, symlink or FIFO only when it differs *to the second* from what is
/// already there: one created within the same second as its source keeps rsync's own
/// nanoseconds, whoever runs rsync. Regular files are always written to a temporary file whose
/// mtime rsync sets with nanoseconds, so files are compared exactly.
pub fn tree_diff(src: &Path, dst: &Path) -> Vec<String> {
    let a = snapshot(src);
    let b = snapshot(dst);
    let mut diffs = Vec::new();
    for (p, ea) in &a {
        let Some(eb) = b.get(p) else {
            diffs.push(format!("{}: only in src ({})", show(p), ea.kind.name()));
            continue;
        };
        if std::mem::discriminant(&ea.kind) != std::mem::discriminant(&eb.kind) {
            diffs.push(format!(
                "{}: type {} (src) != {} (dst)",
                show(p),
                ea.kind.name(),
                eb.kind.name()
            ));
            continue;
        }
        match (&ea.kind, &eb.kind) {
            (Kind::Symlink(ta), Kind::Symlink(tb)) if ta != tb => diffs.push(format!(
                "{}: symlink target {:?} (src) != {:?} (dst)",
                show(p),
                ta,
                tb
            )),
            (Kind::CharDev(ra), Kind::CharDev(rb)) | (Kind::BlockDev(ra), Kind::BlockDev(rb))
                if ra != rb =>
            {
                diffs.push(format!(
                    "{}: device {ra:#x} (src) != {rb:#x} (dst)",
                    show(p)
                ))
            }
            _ => {}
        }
        if ea.perm != eb.perm {
            diffs.push(format!(
                "{}: mode {:04o} (src) != {:04o} (dst)",
                show(p),
                ea.perm,
                eb.perm
            ));
        }
        if ea.uid != eb.uid {
            diffs.push(format!(
                "{}: uid {} (src) != {} (dst)",
                show(p),
                ea.uid,
                eb.uid
            ));
        }
        if ea.gid != eb.gid {
            diffs.push(format!(
                "{}: gid {} (src) != {} (dst)",
                show(p),
                ea.gid,
                eb.gid
            ));
        }
        let nsec_matters = ea.kind == Kind::File;
        if ea.mtime != eb.mtime || (nsec_matters && ea.mtime_nsec != eb.mtime_nsec) {
            diffs.push(format!(
                "{}: mtime {}.{:09} (src) != {}.{:09} (dst)",
                show(p),
                ea.mtime,
                ea.mtime_nsec,
                eb.mtime,
                eb.mtime_nsec
            ));
        }
        if ea.kind == Kind::File {
            if ea.size != eb.size {
                diffs.push(format!(
                    "{}: size {} (src) != {} (dst)",
                    show(p),
                    ea.size,
                    eb.size
                ));
            } else {
                match files_equal(&src.join(p), &dst.join(p)) {
                    Ok(true) => {}
                    Ok(false) => diffs.push(format!("{}: content differs", show(p))),
                    Err(e) => diffs.push(format!("{}: cannot compare content: {e}", show(p))),
                }
            }
        }
    }
    for (p, eb) in &b {
        if !a.contains_key(p) {
            diffs.push(format!("{}: only in dst ({})", show(p), eb.kind.name()));
        }
    }
    // Hard-link grouping, once per differing group.
    let (ga, gb) = (link_groups(&a), link_groups(&b));
    let mut reported: BTreeSet<BTreeSet<PathBuf>> = BTreeSet::new();
    for (p, group_a) in &ga {
        let Some(group_b) = gb.get(p) else { continue };
        if group_a != group_b && reported.insert(group_a.clone()) {
            let fmt =
                |g: &BTreeSet<PathBuf>| g.iter().map(|x| show(x)).collect::<Vec<_>>().join(", ");
            diffs.push(format!(
                "{}: hard links {{{}}} (src) != {{{}}} (dst)",
                show(p),
                fmt(group_a),
                fmt(group_b)
            ));
        }
    }
    diffs
}

/// Formats a diff for a panic message (at most 60 lines).
pub fn format_diff(src: &Path, dst: &Path, diffs: &[String]) -> String {
    let mut s = format!(
        "trees differ: src={} dst={} ({} difference(s))\n",
        src.display(),
        dst.display(),
        diffs.len()
    );
    for d in diffs.iter().take(60) {
        let _ = writeln!(s, "  {d}");
    }
    if diffs.len() > 60 {
        let _ = writeln!(s, "  ... and {} more", diffs.len() - 60);
    }
    s
}

/// Panics with a readable diff unless the trees are equal (see [`tree_diff`]).
#[track_caller]
pub fn assert_trees_equal(src: &Path, dst: &Path) {
    let diffs = tree_diff(src, dst);
    if !diffs.is_empty() {
        panic!("{}", format_diff(src, dst, &diffs));
    }
}

/// Polls until the trees are equal (see [`tree_diff`]); panics with the last diff after
/// `timeout`. The timeout only bounds the wait: nothing is asserted about how fast it is.
#[track_caller]
pub fn wait_synced(src: &Path, dst: &Path, timeout: Duration) {
    let mut last = Vec::new();
    let ok = wait_for(timeout, || {
        last = tree_diff(src, dst);
        last.is_empty()
    });
    if !ok {
        panic!(
            "not synced within {:?}: {}",
            timeout,
            format_diff(src, dst, &last)
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Polling

/// Calls `cond` until it returns true (-> true) or `timeout` has passed (-> false). Polls every
/// 10 ms at first, backing off to 200 ms. `cond` is always called at least once, and once more
/// after the deadline, so a slow machine never turns a success into a failure.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

// ------------------------------------------------------------------------------------------------
// Processes

/// `/proc/<pid>/status` as key -> value (value with surrounding whitespace trimmed, inner tabs
/// kept: `Uid` is "0\t0\t0\t0"). Panics if the process does not exist.
pub fn status_of(pid: i32) -> BTreeMap<String, String> {
    try_status_of(pid).unwrap_or_else(|| panic!("no /proc/{pid}/status"))
}

/// Like [`status_of`], `None` if the process is gone.
pub fn try_status_of(pid: i32) -> Option<BTreeMap<String, String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_status(&text))
}

/// Parses `Key:\tvalue` lines (the format of /proc/<pid>/status).
pub fn parse_status(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A hexadecimal capability mask from a status value (`CapEff:\t00000000000000e4`).
pub fn cap_mask(v: &str) -> u64 {
    u64::from_str_radix(v.trim(), 16).unwrap_or_else(|e| panic!("bad capability mask {v:?}: {e}"))
}

/// The four ids of a `Uid:`/`Gid:` status line (real, effective, saved, filesystem).
pub fn ids(v: &str) -> Vec<u32> {
    v.split_whitespace().map(|x| x.parse().unwrap()).collect()
}

/// Fields of /proc/<pid>/stat after the command name: index 0 is the state, 1 ppid, 2 pgrp,
/// 19 starttime. `None` if the process is gone.
pub fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// A process identified by pid and start time, so a recycled pid is never mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub start: u64,
}

impl Proc {
    /// The process now running as `pid`, if any.
    pub fn of(pid: i32) -> Option<Proc> {
        let f = stat_fields(pid)?;
        Some(Proc {
            pid,
            start: f.get(19)?.parse().ok()?,
        })
    }
    /// Still this process and not a zombie (a zombie has ended; its parent has not reaped it).
    pub fn alive(&self) -> bool {
        match stat_fields(self.pid) {
            Some(f) => {
                f.get(19).and_then(|s| s.parse().ok()) == Some(self.start)
                    && f[0] != "Z"
                    && f[0] != "X"
            }
            None => false,
        }
    }
    /// Sends `sig` if it is still this process.
    pub fn signal(&self, sig: Signal) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid), sig);
        }
    }
}

/// Children of every thread of `pid` (from /proc/<pid>/task/*/children).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// All descendants of `pid` (children, their children, ...).
pub fn descendants_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = children_of(pid);
    while let Some(p) = todo.pop() {
        if !out.contains(&p) {
            out.push(p);
            todo.extend(children_of(p));
        }
    }
    out
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn process_group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| {
            stat_fields(p).is_some_and(|f| f[0] != "Z" && f[0] != "X" && f[2] == pgid.to_string())
        })
        .collect()
}

/// Live processes with a cgroup path containing `/clsync-<worker>/` or ending in `/clsync-<worker>`.
pub fn processes_in_daemon_cgroups(worker: i32) -> Vec<i32> {
    let needle = format!("/clsync-{worker}");
    all_pids()
        .into_iter()
        .filter(|&p| {
            let alive = stat_fields(p).is_some_and(|f| f[0] != "Z" && f[0] != "X");
            alive
                && fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|c| {
                    c.lines()
                        .any(|l| l.contains(&format!("{needle}/")) || l.ends_with(needle.as_str()))
                })
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// cgroups

/// One line of /proc/<pid>/cgroup with the directory it names.
#[derive(Clone, Debug)]
pub struct CgroupDir {
    /// `memory`, `pids`, `name=systemd`, or `` for the v2 hierarchy.
    pub controllers: String,
    /// The path as /proc/<pid>/cgroup shows it.
    pub path: String,
    /// Where that cgroup is in the file system (mount point + path), if the hierarchy is mounted.
    pub dir: Option<PathBuf>,
}

/// The cgroups of `pid` in every hierarchy, resolved against this process's mounts
/// (/proc/self/mountinfo), for v1, hybrid and pure v2 machines alike.
pub fn cgroups_of(pid: i32) -> Vec<CgroupDir> {
    let mounts: Vec<(String, String, BTreeSet<String>)> =
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                let pre: Vec<&str> = pre.split(' ').collect();
                let post: Vec<&str> = post.split(' ').collect();
                let fstype = *post.first()?;
                if fstype != "cgroup" && fstype != "cgroup2" {
                    return None;
                }
                let opts: BTreeSet<String> = if fstype == "cgroup2" {
                    BTreeSet::new()
                } else {
                    post.get(2)?
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("xattr"))
                        .map(str::to_string)
                        .collect()
                };
                Some((pre.get(3)?.to_string(), pre.get(4)?.to_string(), opts))
            })
            .collect();
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
            let want: BTreeSet<String> = ctl
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            let dir = mounts
                .iter()
                .find(|(_, _, opts)| {
                    if want.is_empty() {
                        opts.is_empty()
                    } else {
                        want.iter().all(|w| opts.contains(w))
                    }
                })
                .and_then(|(root, mp, _)| {
                    let rel = path.strip_prefix(root.as_str())?.trim_start_matches('/');
                    Some(Path::new(mp).join(rel))
                });
            Some(CgroupDir {
                controllers: ctl.to_string(),
                path: path.to_string(),
                dir,
            })
        })
        .collect()
}

/// The cgroup path (as in /proc/<pid>/cgroup) of `pid` for a v1 controller such as `pids`.
pub fn cgroup_path(pid: i32, controller: &str) -> Option<String> {
    cgroups_of(pid)
        .into_iter()
        .find(|c| c.controllers.split(',').any(|x| x == controller))
        .map(|c| c.path)
}

/// Every `clsync-<worker>` directory that exists under this process's cgroups (the daemon
/// inherits our cgroups and creates its groups below them). Empty after a clean shutdown.
pub fn daemon_cgroup_dirs(worker: i32) -> Vec<PathBuf> {
    cgroups_of(std::process::id() as i32)
        .into_iter()
        .filter_map(|c| c.dir)
        .map(|d| d.join(format!("clsync-{worker}")))
        .filter(|d| d.exists())
        .collect()
}

/// Removes leftover `clsync-<worker>` cgroups (children first). For cleanup after the
/// assertions; the processes in them must have been killed before.
pub fn remove_daemon_cgroups(worker: i32) {
    for d in daemon_cgroup_dirs(worker) {
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let p = e.path();
                    wait_for(Duration::from_secs(2), || {
                        fs::remove_dir(&p).is_ok() || !p.exists()
                    });
                }
            }
        }
        wait_for(Duration::from_secs(2), || {
            fs::remove_dir(&d).is_ok() || !d.exists()
        });
    }
}

// ------------------------------------------------------------------------------------------------
// The daemon

static DAEMON_SEQ: AtomicU32 = AtomicU32::new(0);

/// Path of the binary under test: the crate's `clsync`, or `CLSYNC_TEST_BIN` if set (to run the
/// suite against a release build or another implementation).
pub fn clsync_bin() -> PathBuf {
    match std::env::var_os("CLSYNC_TEST_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_clsync")),
    }
}

/// `-M mode -W src -S handler` with no config file, followed by `extra` (no `-D`, no delays).
pub fn handler_args(s: &Scratch, mode: &str, handler: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "-M".into(),
        mode.into(),
        "-W".into(),
        s.src().into(),
        "-S".into(),
        handler.into(),
        "-H".into(),
        "/NULL/".into(),
    ];
    v.extend(extra.iter().map(OsString::from));
    v
}

/// The usual `-M rsyncdirect -W src -D dst` arguments with short delays and no config file,
/// followed by `extra`.
pub fn rsyncdirect_args(s: &Scratch, delay: u32, extra: &[&str]) -> Vec<OsString> {
    let d = delay.to_string();
    let mut v: Vec<OsString> = vec![
        "-M".into(),
        "rsyncdirect".into(),
        "-W".into(),
        s.src().into(),
        "-D".into(),
        s.dst().into(),
        "-w".into(),
        d.clone().into(),
        "-t".into(),
        d.clone().into(),
        "-T".into(),
        d.into(),
        "-H".into(),
        "/NULL/".into(),
    ];
    v.extend(extra.iter().map(OsString::from));
    v
}

/// A running daemon: the spawned process (the worker), its log files, and (once looked up) the
/// helper. Dropping it kills, by pid, the worker, the helper, every descendant and every process
/// left in the daemon's cgroups, reaps the worker and removes leftover cgroups; if the test is
/// panicking, the daemon's stderr is printed first.
pub struct Daemon {
    child: Child,
    pub pid: i32,
    worker: Proc,
    helper: Option<Proc>,
    pub stderr_path: PathBuf,
    pub stdout_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl Daemon {
    /// Starts the clsync under test with `args`; `env` is added to the inherited environment, and
    /// `TMPDIR` is the scratch's `tmp/` unless `env` sets it.
    pub fn start(s: &Scratch, args: &[OsString], env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(&clsync_bin(), s, args, env)
    }

    /// `start` with [`rsyncdirect_args`].
    pub fn rsyncdirect(s: &Scratch, delay: u32, extra: &[&str]) -> Daemon {
        Daemon::start(s, &rsyncdirect_args(s, delay, extra), &[])
    }

    /// Starts any program the way [`Daemon::start`] starts clsync (used by the self-test).
    pub fn spawn(program: &Path, s: &Scratch, args: &[OsString], env: &[(&str, &str)]) -> Daemon {
        let n = DAEMON_SEQ.fetch_add(1, Ordering::SeqCst);
        let stderr_path = s.path(format!("daemon-{n}.stderr"));
        let stdout_path = s.path(format!("daemon-{n}.stdout"));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap())
            .env_remove("CLSYNC_TEST_WORKER_SYSCALL")
            .env("TMPDIR", s.tmp());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let pid = child.id() as i32;
        // Our unreaped child: its pid cannot be recycled, and its start time is readable now.
        let worker = Proc::of(pid).unwrap_or(Proc { pid, start: 0 });
        Daemon {
            child,
            pid,
            worker,
            helper: None,
            stderr_path,
            stdout_path,
            exit: None,
        }
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// Waits for the `ready:` line (initial sync done, tree watched). Panics with the log if the
    /// daemon exits first or `START_TIMEOUT` passes.
    #[track_caller]
    pub fn wait_ready(&mut self) {
        self.wait_log(START_TIMEOUT, "ready:");
    }

    /// Waits until stderr contains `needle`; panics if the daemon exits first or on timeout.
    #[track_caller]
    pub fn wait_log(&mut self, timeout: Duration, needle: &str) {
        self.wait_until(timeout, &format!("{needle:?} on stderr"), |d| {
            d.stderr().contains(needle)
        });
    }

    /// Waits until `cond(self)` holds (for anything the daemon or its handlers leave behind,
    /// such as a handler's record); panics with the daemon's stderr if the worker exits first or
    /// on timeout. `what` names the awaited thing in the message.
    #[track_caller]
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&Daemon) -> bool,
    ) {
        // Stops polling when the condition holds or the worker has exited.
        wait_for(timeout, || cond(self) || self.try_wait().is_some());
        if cond(self) {
            return;
        }
        match self.try_wait() {
            Some(st) => panic!(
                "daemon exited ({st}) before {what}; stderr:\n{}",
                self.stderr()
            ),
            None => panic!("no {what} within {timeout:?}; stderr:\n{}", self.stderr()),
        }
    }

    /// The exit status if the worker has ended (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("waitpid");
        }
        self.exit
    }

    /// Waits up to `timeout` for the worker to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.try_wait().is_some());
        self.try_wait()
    }

    /// The worker as a [`Proc`].
    pub fn worker(&self) -> Proc {
        self.worker
    }

    /// The helper: the worker's only child. Waits up to 10 s for the fork.
    #[track_caller]
    pub fn helper_pid(&mut self) -> i32 {
        self.helper_proc().pid
    }

    /// The helper as a [`Proc`] (see [`Daemon::helper_pid`]).
    #[track_caller]
    pub fn helper_proc(&mut self) -> Proc {
        if let Some(h) = self.helper {
            return h;
        }
        let mut kids = Vec::new();
        wait_for(Duration::from_secs(10), || {
            kids = children_of(self.pid);
            !kids.is_empty() || self.try_wait().is_some()
        });
        assert_eq!(
            kids.len(),
            1,
            "expected exactly one child (the helper) of worker {}, found {kids:?}; stderr:\n{}",
            self.pid,
            self.stderr()
        );
        let h = Proc::of(kids[0]).expect("helper vanished");
        self.helper = Some(h);
        h
    }

    /// Sends `sig` to the worker (if it has not been reaped).
    pub fn signal(&mut self, sig: Signal) {
        if self.try_wait().is_none() {
            let _ = kill(Pid::from_raw(self.pid), sig);
        }
    }

    /// Suspends the worker (SIGSTOP) and waits until it is stopped, so that what happens
    /// meanwhile reaches it as one batch of events when [`Daemon::resume`] lets it go on.
    #[track_caller]
    pub fn suspend(&mut self) {
        self.signal(Signal::SIGSTOP);
        let pid = self.pid;
        self.wait_until(Duration::from_secs(10), "the worker stopped", |_| {
            stat_fields(pid).is_some_and(|f| f[0] == "T")
        });
    }

    /// Lets a [`Daemon::suspend`]ed worker go on (SIGCONT).
    pub fn resume(&mut self) {
        self.signal(Signal::SIGCONT);
    }

    /// Graceful stop: SIGTERM, then waits up to 30 s for the worker to exit (SIGKILL after that,
    /// which fails the test) and for the helper to be gone. Returns the worker's exit status.
    #[track_caller]
    pub fn stop(&mut self) -> ExitStatus {
        let helper = self
            .helper
            .or_else(|| children_of(self.pid).first().and_then(|&p| Proc::of(p)));
        self.signal(Signal::SIGTERM);
        let st = match self.wait_exit(Duration::from_secs(30)) {
            Some(st) => st,
            None => {
                self.signal(Signal::SIGKILL);
                let _ = self.wait_exit(Duration::from_secs(10));
                panic!(
                    "daemon did not exit within 30 s of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
        };
        if let Some(h) = helper {
            assert!(
                wait_for(Duration::from_secs(10), || !h.alive()),
                "helper {} still alive after the worker exited; stderr:\n{}",
                h.pid,
                self.stderr()
            );
        }
        st
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- daemon {} stderr ({}):\n{}\n---- end of daemon stderr",
                self.pid,
                self.stderr_path.display(),
                self.stderr()
            );
        }
        // Everything below the worker first (the list is taken before any kill, while the
        // tree is intact), then the worker itself, then anything left in its cgroups.
        let mut procs: Vec<Proc> = descendants_of(self.pid)
            .into_iter()
            .filter_map(Proc::of)
            .collect();
        if let Some(h) = self.helper {
            procs.push(h);
        }
        for p in &procs {
            p.signal(Signal::SIGKILL);
        }
        if self.try_wait().is_none() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        for p in processes_in_daemon_cgroups(self.pid) {
            if let Some(p) = Proc::of(p) {
                p.signal(Signal::SIGKILL);
            }
        }
        wait_for(Duration::from_secs(5), || {
            procs.iter().all(|p| !p.alive()) && processes_in_daemon_cgroups(self.pid).is_empty()
        });
        remove_daemon_cgroups(self.pid);
    }
}

/// Runs the clsync under test to completion (for start-up errors), killing it after `timeout`.
/// Returns (exit status, stderr); `None` as status if it had to be killed.
pub fn run_to_exit(
    s: &Scratch,
    args: &[OsString],
    timeout: Duration,
) -> (Option<ExitStatus>, String) {
    let mut d = Daemon::start(s, args, &[]);
    let st = d.wait_exit(timeout);
    let err = d.stderr();
    drop(d);
    (st, err)
}

/// The names in a directory (for "TMPDIR is left empty").
pub fn dir_entries(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Writes an executable shell script.
pub fn write_script(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `OsStr` from raw bytes (for names that are not UTF-8).
pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Runs `clsync ARGS --check-config`: its exit code, stdout and stderr.
pub fn check_config(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(clsync_bin())
        .args(args)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One request on a control socket (after its greeting line); its one-line answer.
pub fn control_ask(sock: &Path, line: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(sock).expect("connect to the control socket");
    let mut r = BufReader::new(&s);
    let mut greeting = String::new();
    r.read_line(&mut greeting).unwrap();
    (&s).write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    answer
}
