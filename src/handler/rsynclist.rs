//! rsync include/exclude list files, in clsync's format (`--include-from` / `--exclude-from`).
//!
//! Every line is `/` followed by the path relative to the watch root (anchored at the transfer
//! root), with `[`, `]`, `*`, `?` and `\` each preceded by a backslash. A recursive entry ends in
//! `/***` (the directory and everything below it), a content-recursive one in `/**` (everything
//! below it, used for mount points). The root itself is the empty path: the recursive root is
//! `/***`, the non-recursive root an empty line (which rsync ignores; the root is always sent).
//!
//! Every include line also brings one non-recursive line for each ancestor directory (`a/b/c`
//! brings `/a/b` and `/a`), because rsync only descends into directories that are included.
//! Lines are de-duplicated by path, OR-ing their flags (recursive wins over content-recursive).
//! Exclude lines get no ancestor lines.
//!
//! Lines are written in insertion order: a path's line where it was first added, its new ancestor
//! lines right after it, deepest first. (clsync writes them in hash-table order; rsync does not
//! care, all lines of one file have the same action.)
//!
//! # Deliberate differences from clsync 0.4.5
//!
//! * **Names with a newline or carriage return.** They cannot be written on one line (rsync splits
//!   lines at both), and clsync drops such paths, losing the change (or, in an exclude list, the
//!   exclusion). We write each such byte as the rsync wildcard `[[:cntrl:]]`, which matches that
//!   byte and the other control characters only, so the line still matches the file and can only
//!   also match a sibling whose name differs from it just by other control characters at those
//!   positions. (A plain `?` would also match ordinary names such as `a_b` for `a<LF>b`.)
//! * **Escapes only where rsync reads them.** rsync honours backslash escapes only in a pattern
//!   that contains a wildcard (`*`, `?` or `[`); otherwise it compares the pattern literally. So
//!   clsync's `/a\]b` for a file `a]b`, and `/c\\d` for `c\d`, match nothing and the change is
//!   lost (checked with rsync 3.5.0). We escape a line only when it contains a wildcard (a special
//!   character of the name, a `[[:cntrl:]]`, or the `/***`/`/**` suffix); any other line is
//!   written as the plain name. Lines clsync gets right come out byte for byte the same.
//!
//! Cost is linear in the number of distinct paths: one hash map keyed by the path bytes (sharing
//! the allocation with the ordered list), and ancestor insertion stops at the first ancestor
//! already present, since its own ancestors are then present too.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;

/// How an include entry covers what is below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ListFlags {
    /// The directory and everything below it (`/***`).
    pub recursive: bool,
    /// Everything below the directory (`/**`), e.g. a mount point's content.
    pub content_recursive: bool,
    /// The directory and what is directly in it (`/dir` and `/dir/*`), not deeper.
    pub children: bool,
}

impl ListFlags {
    /// Just the path itself.
    pub const NONE: ListFlags = ListFlags {
        recursive: false,
        content_recursive: false,
        children: false,
    };
    /// The path and everything below it.
    pub const RECURSIVE: ListFlags = ListFlags {
        recursive: true,
        content_recursive: false,
        children: false,
    };
    /// Everything below the path.
    pub const CONTENT_RECURSIVE: ListFlags = ListFlags {
        recursive: false,
        content_recursive: true,
        children: false,
    };
    /// The directory and its direct entries.
    pub const CHILDREN: ListFlags = ListFlags {
        recursive: false,
        content_recursive: false,
        children: true,
    };

    fn bits(self) -> u8 {
        let mut bits = 0;
        if self.recursive {
            bits |= REC;
        }
        if self.content_recursive {
            bits |= CONTENT;
        }
        if self.children {
            bits |= CHILDREN;
        }
        bits
    }
}

const REC: u8 = 1;
const CONTENT: u8 = 2;
const CHILDREN: u8 = 4;

/// The line suffix for a set of flag bits (recursive wins).
fn suffix(bits: u8) -> &'static [u8] {
    if bits & REC != 0 {
        b"/***"
    } else if bits & CONTENT != 0 {
        b"/**"
    } else {
        b""
    }
}

/// An ordered, de-duplicated set of lines.
#[derive(Debug, Clone, Default)]
struct LineSet {
    index: HashMap<Arc<[u8]>, usize>,
    entries: Vec<(Arc<[u8]>, u8)>,
}

impl LineSet {
    /// Adds `path` or ORs `bits` into its existing entry; returns whether it was new.
    fn insert(&mut self, path: &[u8], bits: u8) -> bool {
        if let Some(&i) = self.index.get(path) {
            self.entries[i].1 |= bits;
            return false;
        }
        let key: Arc<[u8]> = Arc::from(path);
        self.index.insert(Arc::clone(&key), self.entries.len());
        self.entries.push((key, bits));
        true
    }

    fn contains(&self, path: &[u8]) -> bool {
        self.index.contains_key(path)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        const FLUSH_AT: usize = 60 * 1024;
        let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
        for (path, bits) in &self.entries {
            push_line(&mut buf, path, *bits);
            if buf.len() >= FLUSH_AT {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        out.write_all(&buf)
    }
}

/// Appends the list line (terminated by `\n`) for `path` with flag `bits`; two lines for
/// [`ListFlags::CHILDREN`] (`/dir` and `/dir/*`; only `/*` for the root), unless recursive.
fn push_line(buf: &mut Vec<u8>, path: &[u8], bits: u8) {
    if bits & CHILDREN != 0 && bits & REC == 0 {
        if !path.is_empty() {
            push_one(buf, path, b"");
        }
        push_one(buf, path, if bits & CONTENT != 0 { b"/**" } else { b"/*" });
        return;
    }
    push_one(buf, path, suffix(bits));
}

/// Appends one line: `/path` (escaped when the line holds a wildcard) and `suffix`.
fn push_one(buf: &mut Vec<u8>, path: &[u8], suffix: &[u8]) {
    if !path.is_empty() {
        buf.push(b'/');
        let wild = !suffix.is_empty()
            || path
                .iter()
                .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\n' | b'\r'));
        if wild {
            for &b in path {
                match b {
                    b'[' | b']' | b'*' | b'?' | b'\\' => buf.extend_from_slice(&[b'\\', b]),
                    b'\n' | b'\r' => buf.extend_from_slice(b"[[:cntrl:]]"),
                    _ => buf.push(b),
                }
            }
        } else {
            buf.extend_from_slice(path);
        }
    }
    buf.extend_from_slice(suffix);
    buf.push(b'\n');
}

/// The include and exclude lists of one sync run.
///
/// Paths are relative to the watch root, without a leading or trailing slash and without empty
/// components; the root is the empty path.
#[derive(Debug, Clone, Default)]
pub struct RsyncLists {
    include: LineSet,
    exclude: LineSet,
}

impl RsyncLists {
    /// Empty lists.
    pub fn new() -> RsyncLists {
        RsyncLists::default()
    }

    /// Adds an include line for `path`, and a non-recursive line for each of its ancestor
    /// directories (not the root).
    pub fn add_include(&mut self, path: &[u8], flags: ListFlags) {
        self.include.insert(path, flags.bits());
        let mut end = path.len();
        while let Some(slash) = path[..end].iter().rposition(|&b| b == b'/') {
            let ancestor = &path[..slash];
            if ancestor.is_empty() || !self.include.insert(ancestor, 0) {
                // Already present: its own ancestors were added with it.
                break;
            }
            end = slash;
        }
    }

    /// Adds an exclude line for `path` (no ancestor lines).
    pub fn add_exclude(&mut self, path: &[u8]) {
        self.exclude.insert(path, 0);
    }

    /// Adds an exclude line for `path` with a suffix (`content_recursive` for a mount point's
    /// content); no ancestor lines.
    pub fn add_exclude_with_flags(&mut self, path: &[u8], flags: ListFlags) {
        self.exclude.insert(path, flags.bits());
    }

    /// Whether `path` already has an include line (directly or as an ancestor).
    pub fn has_include(&self, path: &[u8]) -> bool {
        self.include.contains(path)
    }

    /// The number of include lines (ancestor lines included).
    pub fn include_len(&self) -> usize {
        self.include.len()
    }

    /// The number of exclude lines.
    pub fn exclude_len(&self) -> usize {
        self.exclude.len()
    }

    /// Whether both lists are empty.
    pub fn is_empty(&self) -> bool {
        self.include.len() == 0 && self.exclude.len() == 0
    }

    /// Writes the include list, one `\n`-terminated line per entry, in insertion order.
    pub fn write_include(&self, out: &mut impl Write) -> io::Result<()> {
        self.include.write(out)
    }

    /// Writes the exclude list, one `\n`-terminated line per entry, in insertion order.
    pub fn write_exclude(&self, out: &mut impl Write) -> io::Result<()> {
        self.exclude.write(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn include(l: &RsyncLists) -> String {
        let mut v = Vec::new();
        l.write_include(&mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    fn exclude(l: &RsyncLists) -> String {
        let mut v = Vec::new();
        l.write_exclude(&mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn reference_example_with_ancestors() {
        let mut l = RsyncLists::new();
        l.add_include(b"sub/t2", ListFlags::NONE);
        l.add_include(b"sub/deep/x", ListFlags::NONE);
        l.add_include(b"sub/deep/nd", ListFlags::RECURSIVE);
        assert_eq!(
            include(&l),
            "/sub/t2\n/sub\n/sub/deep/x\n/sub/deep\n/sub/deep/nd/***\n"
        );
        assert_eq!(l.include_len(), 5);
        assert_eq!(l.exclude_len(), 0);
        assert!(l.has_include(b"sub/deep"));
        assert!(!l.has_include(b"sub/deep/n"));

        let mut l = RsyncLists::new();
        l.add_include(b"a/b/c", ListFlags::NONE);
        assert_eq!(include(&l), "/a/b/c\n/a/b\n/a\n");
        // A later, deeper path under a known ancestor adds only the missing ones.
        l.add_include(b"a/b/d/e", ListFlags::NONE);
        assert_eq!(include(&l), "/a/b/c\n/a/b\n/a\n/a/b/d/e\n/a/b/d\n");
    }

    #[test]
    fn escaping() {
        let mut l = RsyncLists::new();
        l.add_include(b"new*[x]\\y", ListFlags::NONE);
        l.add_include(b"with space", ListFlags::NONE);
        l.add_include(b"100%", ListFlags::NONE);
        l.add_include(b"%TYPE%", ListFlags::NONE);
        l.add_include(b"-rf", ListFlags::NONE);
        l.add_include(b"q?", ListFlags::NONE);
        l.add_include(b"d*r/f", ListFlags::NONE);
        assert_eq!(
            include(&l),
            "/new\\*\\[x\\]\\\\y\n/with space\n/100%\n/%TYPE%\n/-rf\n/q\\?\n/d\\*r/f\n/d\\*r\n"
        );
    }

    #[test]
    fn plain_lines_are_not_escaped() {
        // rsync compares wildcard-free patterns literally: `]` and `\` stay as they are.
        let mut l = RsyncLists::new();
        l.add_include(b"a]b", ListFlags::NONE);
        l.add_include(b"c\\d", ListFlags::NONE);
        l.add_include(b"e]f", ListFlags::RECURSIVE);
        l.add_include(b"g\\h", ListFlags::CONTENT_RECURSIVE);
        l.add_include(b"i]/j*", ListFlags::NONE);
        assert_eq!(
            include(&l),
            "/a]b\n/c\\d\n/e\\]f/***\n/g\\\\h/**\n/i\\]/j\\*\n/i]\n"
        );
    }

    #[test]
    fn dedupe_and_flags() {
        let mut l = RsyncLists::new();
        l.add_include(b"d", ListFlags::NONE);
        l.add_include(b"d/f", ListFlags::NONE);
        l.add_include(b"d", ListFlags::CONTENT_RECURSIVE);
        assert_eq!(include(&l), "/d/**\n/d/f\n");
        l.add_include(b"d", ListFlags::RECURSIVE);
        assert_eq!(include(&l), "/d/***\n/d/f\n");
        // Recursive stays recursive.
        l.add_include(b"d", ListFlags::CONTENT_RECURSIVE);
        l.add_include(b"d", ListFlags::NONE);
        l.add_include(b"d/f", ListFlags::NONE);
        assert_eq!(include(&l), "/d/***\n/d/f\n");
        assert_eq!(l.include_len(), 2);
        // Both flags at once: recursive wins.
        let mut l = RsyncLists::new();
        l.add_include(
            b"m",
            ListFlags {
                recursive: true,
                content_recursive: true,
                children: true,
            },
        );
        assert_eq!(include(&l), "/m/***\n");
    }

    #[test]
    fn root_lines() {
        let mut l = RsyncLists::new();
        assert!(l.is_empty());
        l.add_include(b"", ListFlags::NONE);
        assert!(!l.is_empty());
        assert_eq!(include(&l), "\n");
        l.add_include(b"", ListFlags::RECURSIVE);
        assert_eq!(include(&l), "/***\n");
        assert_eq!(l.include_len(), 1);
        let mut l = RsyncLists::new();
        l.add_include(b"", ListFlags::CONTENT_RECURSIVE);
        l.add_include(b"top", ListFlags::NONE);
        assert_eq!(include(&l), "/**\n/top\n");
    }

    #[test]
    fn exclude_lines() {
        let mut l = RsyncLists::new();
        l.add_include(b"", ListFlags::RECURSIVE);
        l.add_exclude(b"sub/deep");
        l.add_exclude(b"keep/k.tmp");
        l.add_exclude(b"a.tmp");
        l.add_exclude(b"keep/k.tmp");
        l.add_exclude(b"x*y/z");
        l.add_exclude_with_flags(b"mnt", ListFlags::CONTENT_RECURSIVE);
        assert_eq!(include(&l), "/***\n");
        assert_eq!(
            exclude(&l),
            "/sub/deep\n/keep/k.tmp\n/a.tmp\n/x\\*y/z\n/mnt/**\n"
        );
        assert_eq!(l.exclude_len(), 5);
        assert_eq!(l.include_len(), 1);
    }

    #[test]
    fn newline_and_cr_in_names() {
        let mut l = RsyncLists::new();
        l.add_include(b"n\nl", ListFlags::NONE);
        l.add_include(b"d\r/f]", ListFlags::NONE);
        l.add_exclude(b"x\ny\\");
        assert_eq!(
            include(&l),
            "/n[[:cntrl:]]l\n/d[[:cntrl:]]/f\\]\n/d[[:cntrl:]]\n"
        );
        assert_eq!(exclude(&l), "/x[[:cntrl:]]y\\\\\n");
        // No line ever contains a raw newline or carriage return.
        let mut v = Vec::new();
        l.write_include(&mut v).unwrap();
        assert_eq!(v.iter().filter(|&&b| b == b'\n').count(), l.include_len());
        assert!(!v.contains(&b'\r'));
    }

    #[test]
    fn non_utf8_names_written_as_is() {
        let mut l = RsyncLists::new();
        l.add_include(b"\xff/\xfe", ListFlags::NONE);
        let mut v = Vec::new();
        l.write_include(&mut v).unwrap();
        assert_eq!(v, b"/\xff/\xfe\n/\xff\n");
    }

    #[test]
    fn many_paths() {
        let mut l = RsyncLists::new();
        for d in 0..100 {
            for f in 0..1000 {
                l.add_include(format!("dir{d}/sub/file{f}").as_bytes(), ListFlags::NONE);
            }
        }
        assert_eq!(l.include_len(), 100 * 1000 + 100 * 2);
        let mut v = Vec::new();
        l.write_include(&mut v).unwrap();
        assert_eq!(v.iter().filter(|&&b| b == b'\n').count(), l.include_len());
        assert!(v.starts_with(b"/dir0/sub/file0\n/dir0/sub\n/dir0\n/dir0/sub/file1\n"));
    }

    #[test]
    fn children_is_the_dir_and_its_direct_entries() {
        let mut l = RsyncLists::new();
        l.add_include(b"a/b*", ListFlags::CHILDREN);
        l.add_include(b"a/b*/new", ListFlags::RECURSIVE);
        assert_eq!(include(&l), "/a/b\\*\n/a/b\\*/*\n/a\n/a/b\\*/new/***\n");
        // Recursive wins; the root has no line of its own.
        l.add_include(b"a/b*", ListFlags::RECURSIVE);
        let mut r = RsyncLists::new();
        r.add_include(b"", ListFlags::CHILDREN);
        assert_eq!(include(&r), "/*\n");
        assert!(include(&l).starts_with("/a/b\\*/***\n"));
    }
}
