//! Properties of the code that reads untrusted or hostile bytes, written once and checked in two
//! places:
//!
//! - `tests/randomized.rs` (`mod props;`): bounded, deterministic, part of every `cargo test`;
//! - the cargo-fuzz targets in `fuzz/` (which include this file with `#[path]`): open-ended.
//!
//! Every `check_*` function takes one input and panics with a message naming the broken property;
//! returning normally means the input passed. The oracles here are independent of the code under
//! test (a second decoder, a second validator, a model of the list builder, a reading of the list
//! lines the way rsync reads them), so a check says more than "it did not crash".
//!
//! This file uses only the library's public API and the standard library, so the fuzz crate needs
//! no dependency beyond the library itself.
#![allow(dead_code)]

use clsync_rs::cli::parse_num;
use clsync_rs::handler::rsynclist::{ListFlags, RsyncLists};
use clsync_rs::monitor::inotify::{events, RawEvent};
use clsync_rs::privsep::protocol::{
    decode, encode, CallArgs, Chunk, Entry, ExecEnv, ExitStatus, HandlerRef, Kind, ListKind,
    ProtoError, RelPath, Reply, Request, StatResult, Status, SyncType, WatchResult, MAX_DATAGRAM,
    VERSION,
};
use clsync_rs::privsep::protocol::{ApiEvent, DumpFile, ObjType};
use clsync_rs::rules::{ObjKind, Rules, ALL, MONITOR, SYNC, WALK};
use clsync_rs::sandbox::caps::parse_cap_list;

// ------------------------------------------------------------------------------------------------
// The wire

/// Names a tenant may choose, and shapes a compromised worker may send: used by the generators and
/// the seed corpora.
pub const HOSTILE_NAMES: &[&[u8]] = &[
    b"a",
    b"-rf",
    b"--delete",
    b"%TYPE%",
    b"100%",
    b"*",
    b"?",
    b"[a-z]",
    b"]",
    b"\\",
    b"new*[x]\\y",
    b"n\nl",
    b"c\rr",
    b"\r\n",
    b"sp ace",
    b"\xff\xfe",
    b"\xc3\xbcn\xc3\xaf",
    b"+ x",
    b"- x",
    b"!",
    b"#c",
    b"a\0b",
    b".",
    b"..",
    b"...",
    b"",
];

/// Number of `Request` and `Reply` variants; [`request_variant`] and [`reply_variant`] number
/// them with exhaustive matches, so a new variant does not compile until it is numbered here
/// (and the samples below must then include it: `tests/randomized.rs` checks that).
pub const REQUEST_VARIANTS: usize = 13;
pub const REPLY_VARIANTS: usize = 10;

pub fn request_variant(r: &Request) -> usize {
    match r {
        Request::Hello { .. } => 0,
        Request::Walk { .. } => 1,
        Request::Unwatch { .. } => 2,
        Request::Stat { .. } => 3,
        Request::Exec { .. } => 4,
        Request::Kill { .. } => 5,
        Request::ReadRules => 6,
        Request::Standby => 7,
        Request::Shutdown => 8,
        Request::Violation { .. } => 9,
        Request::SoSync { .. } => 10,
        Request::Dump { .. } => 11,
        Request::SelectPolicy { .. } => 12,
    }
}

pub fn reply_variant(r: &Reply) -> usize {
    match r {
        Reply::Hello { .. } => 0,
        Reply::Walked { .. } => 1,
        Reply::Unwatched => 2,
        Reply::Stats { .. } => 3,
        Reply::Started { .. } => 4,
        Reply::Rules { .. } => 5,
        Reply::Standby { .. } => 6,
        Reply::Exited { .. } => 7,
        Reply::Refused { .. } => 8,
        Reply::Dumped { .. } => 9,
    }
}

/// One value of every `Request` variant, with hostile paths among the valid ones.
pub fn sample_requests() -> Vec<Request> {
    let p = |b: &[u8]| RelPath(b.to_vec());
    vec![
        Request::Hello { version: VERSION },
        Request::Walk {
            dirs: vec![RelPath::root(), p(b"a/b"), p(b"-rf/\xff\n")],
            watch: true,
            files: false,
            stat: false,
        },
        Request::Walk {
            dirs: vec![p(b"../etc"), p(b"/etc"), p(b"a\0b"), p(b"a//b")],
            watch: true,
            files: true,
            stat: true,
        },
        Request::Unwatch {
            wds: vec![1, -1, i32::MAX, i32::MIN],
        },
        Request::Walk {
            dirs: vec![p(b"x"), p(b"d*r/[q]")],
            watch: false,
            files: true,
            stat: false,
        },
        Request::Stat {
            paths: vec![p(b"x/y"), p(b"%TYPE%"), p(b"sub/deep/nd")],
        },
        Request::Exec {
            job: 7,
            handler: HandlerRef::Sync,
            lists: vec![ListKind::Include, ListKind::Exclude],
            env: ExecEnv {
                status: Status::Running,
                iteration: 3,
            },
            call: CallArgs {
                sync_type: SyncType::Rsynclist,
                event_mask: None,
                paths: vec![],
            },
        },
        Request::Exec {
            job: u64::MAX,
            handler: HandlerRef::ExitHook,
            lists: vec![],
            env: ExecEnv {
                status: Status::HoldOn,
                iteration: u64::MAX,
            },
            call: CallArgs {
                sync_type: SyncType::Sync,
                event_mask: Some(u32::MAX),
                paths: vec![p(b"-rf"), p(b"n\nl")],
            },
        },
        Request::Kill { job: 7 },
        Request::ReadRules,
        Request::Standby,
        Request::Shutdown,
        Request::Violation { syscall: 59 },
        Request::SoSync {
            job: 3,
            env: ExecEnv {
                status: Status::Initsync,
                iteration: 0,
            },
            events: vec![
                ApiEvent {
                    path: RelPath::root(),
                    evmask: u32::MAX,
                    recursive: true,
                    old: ObjType::DoesntExist,
                    new: ObjType::Dir,
                },
                ApiEvent {
                    path: p(b"../n\nl"),
                    evmask: 0,
                    recursive: false,
                    old: ObjType::Unknown,
                    new: ObjType::File,
                },
            ],
            more: true,
        },
        Request::Dump {
            files: vec![
                DumpFile::Instance,
                DumpFile::Queue(0),
                DumpFile::Queue(u8::MAX),
                DumpFile::Thread {
                    iteration: u64::MAX,
                    num: 0,
                    pid: i32::MIN,
                },
            ],
        },
        Request::SelectPolicy { index: 0 },
        Request::SelectPolicy { index: u32::MAX },
    ]
}

/// One value of every `Reply` variant.
pub fn sample_replies() -> Vec<Reply> {
    vec![
        Reply::Hello { version: VERSION },
        Reply::Unwatched,
        Reply::Walked {
            chunks: vec![
                Chunk {
                    dir: 0,
                    watch: Some(WatchResult::Wd(1)),
                    entries: vec![],
                    last: true,
                    errno: 0,
                },
                Chunk {
                    dir: 1,
                    watch: Some(WatchResult::Errno(40)),
                    entries: vec![],
                    last: true,
                    errno: 40,
                },
            ],
        },
        Reply::Walked {
            chunks: vec![Chunk {
                dir: 0,
                watch: None,
                entries: vec![
                    Entry {
                        name: b"a".to_vec(),
                        kind: Kind::File,
                        size: 3,
                        dev: 2049,
                    },
                    Entry {
                        name: b"n\nl".to_vec(),
                        kind: Kind::Symlink,
                        size: 0,
                        dev: 0,
                    },
                    Entry {
                        name: b"\xff".to_vec(),
                        kind: Kind::Dir,
                        size: u64::MAX,
                        dev: u64::MAX,
                    },
                    Entry {
                        name: b"fifo".to_vec(),
                        kind: Kind::Other,
                        size: 0,
                        dev: 1,
                    },
                ],
                last: true,
                errno: 0,
            }],
        },
        Reply::Stats {
            results: vec![
                StatResult::Found {
                    kind: Kind::File,
                    size: 1 << 40,
                    dev: 2049,
                    sig: u64::MAX,
                },
                StatResult::Errno(2),
            ],
        },
        Reply::Started { job: 1, pid: 4242 },
        Reply::Rules {
            text: b"+*\n".to_vec(),
            errno: 0,
        },
        Reply::Standby { on: true },
        Reply::Exited {
            job: 1,
            status: ExitStatus::Code(24),
        },
        Reply::Exited {
            job: 2,
            status: ExitStatus::Signal(9),
        },
        Reply::Refused {
            reason: "path not allowed: dot component".into(),
        },
        Reply::Dumped { errno: 17 },
    ]
}

/// The paths a request carries.
pub fn relpaths(req: &Request) -> &[RelPath] {
    match req {
        Request::Walk { dirs, .. } => dirs.as_slice(),
        Request::Stat { paths } => paths.as_slice(),
        _ => &[],
    }
}

/// `RelPath::validate`'s contract, written independently: the root (empty), or at most 4096
/// bytes without NUL whose `/`-separated components are all non-empty and neither `.` nor `..`
/// (a leading `/` makes an empty first component).
pub fn relpath_allowed(p: &[u8]) -> bool {
    p.is_empty()
        || (p.len() <= 4096
            && !p.contains(&0)
            && p.split(|&b| b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b".."))
}

/// `validate` agrees with [`relpath_allowed`], and a refusal is a `BadPath`.
pub fn check_relpath(p: &RelPath) {
    match p.validate() {
        Ok(()) => assert!(
            relpath_allowed(p.as_bytes()),
            "validate accepted a path outside its contract: {p:?}"
        ),
        Err(ProtoError::BadPath(_)) => assert!(
            !relpath_allowed(p.as_bytes()),
            "validate refused an allowed path: {p:?}"
        ),
        Err(e) => panic!("validate failed with a non-path error {e:?} for {p:?}"),
    }
}

/// Decoded `msg` from `bytes`: re-encoding gives at most as many bytes, those decode to the same
/// message and are a fixed point (canonical), and the message's encoding has no strict prefix that
/// is itself a message (datagram framing cannot be confused).
fn check_reencode<T>(bytes: &[u8], msg: &T, prefixes: bool)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let again = encode(msg).unwrap_or_else(|e| panic!("decoded {msg:?} does not re-encode: {e}"));
    assert!(
        again.len() <= bytes.len(),
        "re-encoding of {msg:?} grew from {} to {} bytes",
        bytes.len(),
        again.len()
    );
    let back: T = decode(&again).unwrap_or_else(|e| panic!("re-encoded {msg:?} fails: {e}"));
    assert_eq!(&back, msg, "round trip changed the message");
    assert_eq!(
        encode(&back).unwrap(),
        again,
        "encoding is not canonical for {msg:?}"
    );
    if prefixes {
        for cut in 0..again.len() {
            assert!(
                decode::<T>(&again[..cut]).is_err(),
                "a {cut}-byte prefix of {msg:?} decodes"
            );
        }
    }
}

/// Arbitrary bytes on the wire, in both directions. Never panics; whatever decodes round-trips;
/// every path in a decoded request is either allowed by the contract or refused.
pub fn check_protocol(bytes: &[u8]) {
    // Prefix checks are quadratic: only on short inputs (the fuzzer's seeds and most mutants).
    let prefixes = bytes.len() <= 512;
    match decode::<Request>(bytes) {
        Ok(req) => {
            assert!(bytes.len() <= MAX_DATAGRAM);
            check_reencode(bytes, &req, prefixes);
            for p in relpaths(&req) {
                check_relpath(p);
            }
        }
        Err(e) => assert!(
            matches!(e, ProtoError::Malformed(_) | ProtoError::TooLarge),
            "decode error of an unexpected kind: {e:?}"
        ),
    }
    match decode::<Reply>(bytes) {
        Ok(rep) => check_reencode(bytes, &rep, prefixes),
        Err(e) => assert!(
            matches!(e, ProtoError::Malformed(_) | ProtoError::TooLarge),
            "decode error of an unexpected kind: {e:?}"
        ),
    }
    // The same bytes as a path.
    check_relpath(&RelPath(bytes.to_vec()));
}

// ------------------------------------------------------------------------------------------------
// Rules

/// Paths the rules checks try, besides ones derived from the file itself.
pub const RULE_PATHS: &[&[u8]] = &[
    b"",
    b"a",
    b"a/b",
    b"a.tmp",
    b"sub/deep",
    b"alice/.ssh/authorized_keys",
    b"\xff\xfe",
    b"n\nl",
    b"-rf",
    b"[x]*?",
];

/// The lines of a rules file as `Rules::parse` documents them: split at `\n`, one trailing `\r`
/// removed. (A final `\n` does not start another line.)
pub fn rule_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if text.ends_with(b"\n") {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect()
}

/// `perm` for every kind and every `wanted` value (including bits outside `ALL`): never panics,
/// returns only wanted bits, and deciding several bits at once is the same as deciding each bit
/// alone (the documented first-match-per-bit semantics).
pub fn check_perm(rules: &Rules, path: &[u8]) {
    for kind in [ObjKind::File, ObjKind::Dir, ObjKind::Other] {
        let single: Vec<u8> = [WALK, MONITOR, SYNC]
            .iter()
            .map(|&b| rules.perm(path, kind, b))
            .collect();
        for (i, &b) in [WALK, MONITOR, SYNC].iter().enumerate() {
            assert!(
                single[i] == 0 || single[i] == b,
                "perm({b}) = {}",
                single[i]
            );
        }
        for wanted in (0..=ALL).chain([0xf8, 0xff]) {
            let got = rules.perm(path, kind, wanted);
            assert_eq!(
                got & !(wanted & ALL),
                0,
                "perm({:?}, {kind:?}, {wanted:#x}) = {got:#x} grants unwanted bits",
                path.escape_ascii().to_string()
            );
            let per_bit = [WALK, MONITOR, SYNC]
                .iter()
                .enumerate()
                .filter(|(_, &b)| wanted & b != 0)
                .fold(0, |acc, (i, _)| acc | single[i]);
            assert_eq!(
                got,
                per_bit,
                "perm({:?}, {kind:?}, {wanted:#x}) differs from deciding bit by bit",
                path.escape_ascii().to_string()
            );
        }
    }
}

/// Arbitrary bytes as a rules file. Never panics. On success the rule count is exactly the number
/// of `+`/`-` lines of two or more bytes and `perm` holds [`check_perm`] on fixed and derived paths;
/// on failure the error names an existing line, by number and exact text, that is a rule line.
pub fn check_rules(text: &[u8]) {
    let lines = rule_lines(text);
    match Rules::parse(text) {
        Ok(rules) => {
            let expected = lines
                .iter()
                .filter(|l| l.len() >= 2 && (l[0] == b'+' || l[0] == b'-'))
                .count();
            assert_eq!(rules.len(), expected, "rule count");
            assert!(lines
                .iter()
                .all(|l| l.len() <= 1 || matches!(l[0], b'+' | b'-' | b'#')));
            for p in RULE_PATHS {
                check_perm(&rules, p);
            }
            // Paths derived from the file: each regex body as a path, and with anchors removed.
            for l in lines.iter().filter(|l| l.len() > 2).take(8) {
                let body = &l[2..];
                check_perm(&rules, body);
                let trimmed = body.strip_prefix(b"^").unwrap_or(body);
                let trimmed = trimmed.strip_suffix(b"$").unwrap_or(trimmed);
                check_perm(&rules, trimmed);
            }
        }
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= lines.len(),
                "error names line {} of {}",
                e.line,
                lines.len()
            );
            assert_eq!(
                e.text,
                lines[e.line - 1],
                "error text is not line {}",
                e.line
            );
            assert!(e.text.len() >= 2 && e.text[0] != b'#');
            assert!(!e.text.contains(&b'\n'));
            let shown = e.to_string();
            assert!(
                !shown.contains('\n'),
                "error message spans lines: {shown:?}"
            );
            // Everything before the bad line is a valid rules file.
            let start = text
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .nth(e.line.wrapping_sub(2))
                .map_or(0, |(i, _)| i + 1);
            assert!(
                Rules::parse(&text[..start]).is_ok(),
                "lines before the reported error do not parse"
            );
        }
    }
}

/// `pattern` as a POSIX ERE that matches exactly these bytes (no `\n`, which cannot be on a line):
/// alphanumerics as they are, `<`, `>`, `'` and the backquote in a one-byte bracket
/// (`\<` is an anchor, not a literal), every other byte behind a backslash.
pub fn ere_literal(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        assert_ne!(b, b'\n');
        match b {
            b'<' | b'>' | b'`' | b'\'' => out.extend_from_slice(&[b'[', b, b']']),
            _ if b.is_ascii_alphanumeric() => out.push(b),
            _ => out.extend_from_slice(&[b'\\', b]),
        }
    }
    out
}

/// A rules file denying exactly `name` (anchored literal) and permitting everything else: the name
/// is denied, a one-byte longer name and the name's proper prefixes are not.
pub fn check_literal_rule(name: &[u8]) {
    let mut text = b"-*^".to_vec();
    text.extend(ere_literal(name));
    text.extend_from_slice(b"$\r\n+*\n");
    let rules = Rules::parse(&text).unwrap_or_else(|e| panic!("literal rule refused: {e}"));
    assert_eq!(rules.len(), 2);
    for kind in [ObjKind::File, ObjKind::Dir, ObjKind::Other] {
        assert_eq!(
            rules.perm(name, kind, ALL),
            0,
            "{:?} {kind:?}",
            name.escape_ascii().to_string()
        );
        let mut longer = name.to_vec();
        longer.push(b'x');
        assert_eq!(rules.perm(&longer, kind, ALL), ALL);
        if !name.is_empty() {
            assert_eq!(rules.perm(&name[..name.len() - 1], kind, SYNC), SYNC);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// rsync lists

/// One call on [`RsyncLists`].
#[derive(Debug, Clone)]
pub enum ListOp {
    Include(Vec<u8>, ListFlags),
    Exclude(Vec<u8>, ListFlags),
}

/// Reads a list of operations from bytes: records of `op len name…` where `op & 7` selects the
/// call (0–2 include with none/recursive/content flags, 3 both flags, 4 exclude, 5–7 exclude with
/// flags) and `len` is one byte; a short final record takes what is left.
pub fn decode_list_ops(mut data: &[u8]) -> Vec<ListOp> {
    let mut ops = Vec::new();
    while let [op, len, rest @ ..] = data {
        let n = (*len as usize).min(rest.len());
        let name = rest[..n].to_vec();
        data = &rest[n..];
        let flags = match op & 3 {
            0 => ListFlags::NONE,
            1 => ListFlags::RECURSIVE,
            2 => ListFlags::CONTENT_RECURSIVE,
            _ => ListFlags {
                recursive: true,
                content_recursive: true,
                children: false,
            },
        };
        ops.push(if op & 4 == 0 {
            ListOp::Include(name, flags)
        } else {
            ListOp::Exclude(name, flags)
        });
    }
    ops
}

/// The inverse of [`decode_list_ops`] (names longer than 255 bytes are cut).
pub fn encode_list_ops(ops: &[ListOp]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        let (base, name, f) = match op {
            ListOp::Include(n, f) => (0u8, n, f),
            ListOp::Exclude(n, f) => (4u8, n, f),
        };
        let bits = match (f.recursive, f.content_recursive) {
            (false, false) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (true, true) => 3,
        };
        let n = name.len().min(255);
        out.push(base | bits);
        out.push(n as u8);
        out.extend_from_slice(&name[..n]);
    }
    out
}

/// The lists as a plain model: an ordered list of (path, recursive, content-recursive), a path's
/// entry where it first appeared, flags OR-ed; includes bring every non-empty ancestor, deepest
/// first, right after the path.
fn model(ops: &[ListOp]) -> (Vec<ModelEntry>, Vec<ModelEntry>) {
    #[derive(Default)]
    struct List {
        entries: Vec<ModelEntry>,
        index: std::collections::HashMap<Vec<u8>, usize>,
    }
    impl List {
        fn add(&mut self, p: &[u8], f: ListFlags) {
            match self.index.get(p) {
                Some(&i) => {
                    let e = &mut self.entries[i];
                    e.rec |= f.recursive;
                    e.content |= f.content_recursive;
                    e.children |= f.children;
                }
                None => {
                    self.index.insert(p.to_vec(), self.entries.len());
                    self.entries.push(ModelEntry {
                        path: p.to_vec(),
                        rec: f.recursive,
                        content: f.content_recursive,
                        children: f.children,
                    });
                }
            }
        }
    }
    let (mut inc, mut exc) = (List::default(), List::default());
    for op in ops {
        match op {
            ListOp::Include(p, f) => {
                inc.add(p, *f);
                for i in (1..p.len()).rev().filter(|&i| p[i] == b'/') {
                    inc.add(&p[..i], ListFlags::NONE);
                }
            }
            ListOp::Exclude(p, f) => exc.add(p, *f),
        }
    }
    (inc.entries, exc.entries)
}

/// A model entry: a path and its flags OR-ed over every op that named it.
struct ModelEntry {
    path: Vec<u8>,
    rec: bool,
    content: bool,
    children: bool,
}

impl ModelEntry {
    /// The lines rsync must get for the entry, as (path, suffix): `/***` when recursive (which
    /// wins), else for CHILDREN the directory itself (not for the root) and `/*` (`/**` with
    /// content-recursive) for what is in it, else one line with `/**` or nothing.
    fn lines(&self) -> Vec<(&[u8], &'static [u8])> {
        let p = self.path.as_slice();
        match (self.rec, self.children, self.content) {
            (true, ..) => vec![(p, b"/***")],
            (false, true, content) => {
                let inner: &'static [u8] = if content { b"/**" } else { b"/*" };
                if p.is_empty() {
                    vec![(p, inner)]
                } else {
                    vec![(p, b""), (p, inner)]
                }
            }
            (false, false, true) => vec![(p, b"/**")],
            (false, false, false) => vec![(p, b"")],
        }
    }
}

/// One item of a list line as rsync reads it.
#[derive(Debug, PartialEq)]
enum Tok {
    Byte(u8),
    /// `[[:cntrl:]]`: any control character.
    Cntrl,
}

/// Reads one list line the way rsync reads an anchored pattern, and checks it matches `path` with
/// the suffix the flags call for. rsync treats a pattern with `*`, `?` or `[` as a wildcard pattern
/// (then `\x` is a literal `x` and `[...]` a class); any other pattern is compared literally.
fn check_line(line: &[u8], path: &[u8], suffix: &[u8]) {
    let show = || {
        format!(
            "line {:?} for path {:?}",
            line.escape_ascii().to_string(),
            path.escape_ascii().to_string()
        )
    };
    assert!(!line.contains(&b'\r'), "raw CR: {}", show());
    let body = line
        .strip_suffix(suffix)
        .unwrap_or_else(|| panic!("missing suffix: {}", show()));
    if path.is_empty() {
        assert!(body.is_empty(), "root: {}", show());
        return;
    }
    // Every non-empty line is anchored: a name can never start a line with rsync's `+ `, `- `,
    // `!`, `#` or `;`.
    let rest = body
        .strip_prefix(b"/")
        .unwrap_or_else(|| panic!("not anchored: {}", show()));
    let wild = line.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
    if !wild {
        assert_eq!(rest, path, "literal line: {}", show());
        return;
    }
    let mut toks = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'\\' => {
                let &e = rest
                    .get(i + 1)
                    .unwrap_or_else(|| panic!("trailing backslash: {}", show()));
                assert!(
                    matches!(e, b'[' | b']' | b'*' | b'?' | b'\\'),
                    "needless escape: {}",
                    show()
                );
                toks.push(Tok::Byte(e));
                i += 2;
            }
            b'[' => {
                assert!(
                    rest[i..].starts_with(b"[[:cntrl:]]"),
                    "unescaped '[': {}",
                    show()
                );
                toks.push(Tok::Cntrl);
                i += b"[[:cntrl:]]".len();
            }
            b'*' | b'?' => panic!("unescaped wildcard from a name: {}", show()),
            b => {
                toks.push(Tok::Byte(b));
                i += 1;
            }
        }
    }
    assert_eq!(toks.len(), path.len(), "length: {}", show());
    for (t, &b) in toks.iter().zip(path) {
        match t {
            Tok::Byte(x) => assert_eq!(*x, b, "byte: {}", show()),
            Tok::Cntrl => assert!(
                b == b'\n' || b == b'\r',
                "class for an ordinary byte: {}",
                show()
            ),
        }
    }
}

fn check_list_output(out: &[u8], model: &[ModelEntry], len: usize, what: &str) {
    assert_eq!(len, model.len(), "{what}: entry count");
    let want: Vec<(&[u8], &[u8])> = model.iter().flat_map(ModelEntry::lines).collect();
    assert!(
        out.is_empty() || out.ends_with(b"\n"),
        "{what}: unterminated"
    );
    let lines: Vec<&[u8]> = out
        .split(|&b| b == b'\n')
        .take(out.iter().filter(|&&b| b == b'\n').count())
        .collect();
    assert_eq!(
        lines.len(),
        want.len(),
        "{what}: the lines of each distinct entry (a name added a line?)"
    );
    for (line, (path, suffix)) in lines.iter().zip(want) {
        check_line(line, path, suffix);
    }
}

/// Builds the lists from `ops` and checks them against the model: the `\n`-terminated lines of
/// each distinct entry (ancestors included; two for CHILDREN), in order, each line matching exactly its path in rsync's
/// reading, never a raw `\n`/`\r` from a name, never an unanchored line.
pub fn check_lists(ops: &[ListOp]) {
    let mut l = RsyncLists::new();
    for op in ops {
        match op {
            ListOp::Include(p, f) => l.add_include(p, *f),
            ListOp::Exclude(p, f) if *f == ListFlags::NONE => l.add_exclude(p),
            ListOp::Exclude(p, f) => l.add_exclude_with_flags(p, *f),
        }
    }
    let (inc, exc) = model(ops);
    assert_eq!(l.is_empty(), ops.is_empty());
    for e in &inc {
        assert!(l.has_include(&e.path));
    }
    let mut out = Vec::new();
    l.write_include(&mut out).unwrap();
    check_list_output(&out, &inc, l.include_len(), "include");
    out.clear();
    l.write_exclude(&mut out).unwrap();
    check_list_output(&out, &exc, l.exclude_len(), "exclude");
}

// ------------------------------------------------------------------------------------------------
// inotify

/// Encodes events as the kernel does: the name NUL-padded to a multiple of 16 bytes (none for an
/// empty name); `extra` more NUL bytes of padding per record.
pub fn encode_events(evs: &[RawEvent<'_>], extra: usize, out: &mut Vec<u8>) {
    for ev in evs {
        clsync_rs::monitor::inotify::encode(ev, extra, out);
    }
}

/// A second, independent decoder: (offset of the name in `buf`, wd, mask, cookie, name length).
fn reference_events(buf: &[u8]) -> Vec<(usize, i32, u32, u32, usize)> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while buf.len() - off >= 16 {
        let w = |i: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&buf[off + i..off + i + 4]);
            a
        };
        let len = u32::from_ne_bytes(w(12)) as u64;
        let start = off + 16;
        if len > (buf.len() - start) as u64 {
            break;
        }
        let raw = &buf[start..start + len as usize];
        let name_len = raw.iter().take_while(|&&b| b != 0).count();
        out.push((
            start,
            i32::from_ne_bytes(w(0)),
            u32::from_ne_bytes(w(4)),
            u32::from_ne_bytes(w(8)),
            name_len,
        ));
        off = start + len as usize;
    }
    out
}

/// Arbitrary bytes as one read(2) of an inotify fd: never panics; every name lies inside the
/// buffer after its header, has no NUL, is never longer than the buffer; the decoder agrees with
/// an independent one record for record.
pub fn check_inotify(buf: &[u8]) {
    let got: Vec<RawEvent<'_>> = events(buf).collect();
    let want = reference_events(buf);
    assert_eq!(got.len(), want.len(), "event count");
    assert!(got.len() <= buf.len() / 16);
    let base = buf.as_ptr() as usize;
    let mut used = 0usize;
    for (ev, &(start, wd, mask, cookie, name_len)) in got.iter().zip(&want) {
        assert!(ev.name.len() <= buf.len(), "name longer than the buffer");
        assert!(!ev.name.contains(&0), "NUL in a name");
        let at = (ev.name.as_ptr() as usize).wrapping_sub(base);
        assert_eq!(at, start, "name not right after its header");
        assert!(at >= used + 16 && at + ev.name.len() <= buf.len());
        assert_eq!(
            (ev.wd, ev.mask, ev.cookie, ev.name.len()),
            (wd, mask, cookie, name_len)
        );
        used = at + ev.name.len();
    }
}

/// Events encoded with any amount of extra padding decode to exactly themselves (names without
/// NUL), and every strict prefix of the buffer decodes to a prefix of them.
pub fn check_inotify_roundtrip(evs: &[RawEvent<'_>], extra: usize) {
    let mut buf = Vec::new();
    encode_events(evs, extra, &mut buf);
    let got: Vec<RawEvent<'_>> = events(&buf).collect();
    assert_eq!(got, evs);
    check_inotify(&buf);
    for cut in [buf.len().saturating_sub(1), buf.len() / 2, 15, 16, 17] {
        let cut = cut.min(buf.len());
        let part: Vec<RawEvent<'_>> = events(&buf[..cut]).collect();
        assert!(part.len() <= evs.len() && part[..] == evs[..part.len()]);
    }
}

// ------------------------------------------------------------------------------------------------
// Numbers on the command line

/// clsync's numbers (strtol with base 0), written independently: blanks (space, tab, CR, LF)
/// around, an optional `+`, then `0x`/`0X` and hex digits, or `0` and octal digits, or decimal
/// digits; the value must fit in 64 bits; only blanks (or nothing) is 0. Nothing else: no sign
/// after a prefix, no `-`.
///
/// A byte-at-a-time state machine, deliberately unlike `parse_num`'s prefix stripping, so the
/// two can disagree when one of them is wrong.
pub fn reference_num(s: &str) -> Option<u64> {
    #[derive(Clone, Copy)]
    enum St {
        Lead,
        Sign,
        Zero,
        HexStart,
        Num(u32),
        Trail,
    }
    let blank = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let digit = |c: u8, radix: u32| (c as char).to_digit(radix);
    let (mut st, mut v) = (St::Lead, 0u64);
    for &c in s.as_bytes() {
        st = match (st, c) {
            (St::Lead, c) if blank(c) => St::Lead,
            (St::Lead, b'+') => St::Sign,
            (St::Lead | St::Sign, b'0') => St::Zero,
            (St::Lead | St::Sign, b'1'..=b'9') => {
                v = u64::from(c - b'0');
                St::Num(10)
            }
            (St::Zero, b'x' | b'X') => St::HexStart,
            (St::Zero, b'0'..=b'7') => {
                v = u64::from(c - b'0');
                St::Num(8)
            }
            (St::HexStart, c) => {
                v = u64::from(digit(c, 16)?);
                St::Num(16)
            }
            (St::Num(r), c) if digit(c, r).is_some() => {
                v = v
                    .checked_mul(u64::from(r))?
                    .checked_add(u64::from(digit(c, r)?))?;
                St::Num(r)
            }
            (St::Zero | St::Num(_) | St::Trail, c) if blank(c) => St::Trail,
            _ => return None,
        };
    }
    match st {
        St::Zero => Some(0),
        St::Num(_) | St::Trail => Some(v),
        // Nothing but blanks: strtol reads 0 and stops at the end, which clsync accepts.
        St::Lead => Some(0),
        St::Sign | St::HexStart => None,
    }
}

/// `parse_num` never panics and agrees with [`reference_num`]; a refusal quotes the input.
/// `parse_cap_list` (the other administrator-written list) never panics and never repeats a
/// capability.
pub fn check_numbers(s: &str) {
    match (parse_num(s), reference_num(s)) {
        (Ok(v), Some(r)) => assert_eq!(v, r, "parse_num({s:?})"),
        (Err(e), None) => assert!(e.contains(s), "error does not quote {s:?}: {e}"),
        (got, want) => panic!("parse_num({s:?}) = {got:?}, expected {want:?}"),
    }
    if let Ok(caps) = parse_cap_list(s) {
        for (i, c) in caps.iter().enumerate() {
            assert!(!caps[..i].contains(c), "duplicate {c:?} from {s:?}");
        }
        assert!(caps.len() <= s.split(',').count());
    }
}

/// Numbers written the ways an administrator writes them parse back to themselves.
pub fn check_number_forms(n: u64) {
    let forms = [
        format!("{n}"),
        format!("{n:#x}"),
        format!("0X{n:X}"),
        format!("0{n:o}"),
        format!(" \t{n}\r\n"),
        format!("+{n}"),
    ];
    for f in &forms {
        assert_eq!(parse_num(f), Ok(n), "{f:?}");
        check_numbers(f);
    }
}

// ------------------------------------------------------------------------------------------------
// Configuration files

/// A configuration file, read as clsync's keyfile and as TOML: parsing never panics; resolving
/// any block (inheritance included) returns, a cycle being an error and never a hang, and gives
/// each key once; handler-argument splitting of a text without quotes or backslashes splits on
/// blanks only: no empty argument, no blank inside one, no character lost or added.
pub fn check_confile(text: &str) {
    for f in [
        clsync_rs::confile::parse_keyfile(std::path::Path::new("r.conf"), text),
        clsync_rs::confile::parse_toml(std::path::Path::new("r.toml"), text),
    ]
    .into_iter()
    .flatten()
    {
        for block in ["default", "a", "b", "nosuch"] {
            if let Ok(keys) = f.resolve(block, None) {
                let mut seen = std::collections::HashSet::new();
                assert!(
                    keys.iter().all(|(k, _)| seen.insert(k.clone())),
                    "a key twice in block {block}: {keys:?}"
                );
            }
        }
    }
    let args = clsync_rs::confile::split_args(text);
    if !text.contains(['"', '\'', '\\']) {
        for a in &args {
            assert!(
                !a.is_empty() && !a.contains([' ', '\t']),
                "unquoted split of {text:?} gave {a:?}"
            );
        }
        assert_eq!(
            args.concat(),
            text.replace([' ', '\t'], ""),
            "splitting {text:?} lost or added characters"
        );
    }
}
