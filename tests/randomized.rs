//! Bounded randomized tests of the code that reads untrusted bytes: the wire decoder, path
//! validation, the rules parser, the rsync list builder, the inotify decoder and the number parser.
//!
//! They check the same properties as the cargo-fuzz targets in `fuzz/` (both use `tests/props`),
//! on tens of thousands of generated inputs per test: valid messages and structure-aware mutants of
//! them, hostile names (NUL, `\n`, `\r`, a leading `-`, `%`, `*?[]\`, invalid UTF-8), random bytes.
//! The generator is a fixed-seed SplitMix64, so every run checks the same inputs and a failure
//! reproduces; set `CLSYNC_RANDOMIZED_SEED` to explore other inputs locally (the seed is printed
//! on failure). Each test takes a few seconds at most in a debug build.

mod props;

use clsync_rs::handler::rsynclist::ListFlags;
use clsync_rs::monitor::inotify::RawEvent;
use clsync_rs::privsep::protocol::{
    decode, encode, CallArgs, Chunk, Entry, ExecEnv, ExitStatus, HandlerRef, Kind, ListKind,
    RelPath, Reply, Request, StatResult, Status, SyncType, WatchResult,
};
use props::*;

/// SplitMix64: tiny, fast, good enough to drive generators, and deterministic.
struct Rng(u64);

impl Rng {
    fn new(test: u64) -> Rng {
        let seed = std::env::var("CLSYNC_RANDOMIZED_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0x5eed_c15c_0000_0000);
        Rng(seed ^ test.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability 1/n.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.byte()).collect()
    }
    /// Integers biased towards the edges of their range.
    fn edgy_u64(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX - self.below(3) as u64,
            2 => 1 << self.below(64),
            3 => self.below(300) as u64,
            _ => self.next(),
        }
    }
    fn edgy_i32(&mut self) -> i32 {
        match self.below(5) {
            0 => 0,
            1 => i32::MIN,
            2 => i32::MAX,
            3 => self.below(100) as i32 - 50,
            _ => self.next() as i32,
        }
    }
}

/// Bytes tenants put in names, one at a time.
const HOSTILE_BYTES: &[u8] = b"ab-%*?[]\\\n\r\0\xff\xfe. +!#:/";

/// A name: a known hostile one, a mix of hostile bytes, or random bytes (may contain `/`).
fn name(r: &mut Rng) -> Vec<u8> {
    match r.below(4) {
        0 => r.pick(HOSTILE_NAMES).to_vec(),
        1 => (0..1 + r.below(12))
            .map(|_| *r.pick(HOSTILE_BYTES))
            .collect(),
        2 => r.bytes(10),
        _ => {
            let mut v = r.pick(HOSTILE_NAMES).to_vec();
            v.extend((0..r.below(4)).map(|_| *r.pick(HOSTILE_BYTES)));
            v
        }
    }
}

/// A `/`-joined path of hostile names; sometimes long, sometimes with a leading slash.
fn path(r: &mut Rng) -> Vec<u8> {
    path_long_one_in(r, 50)
}

/// [`path`], with a path around the length limit once in `n` calls.
fn path_long_one_in(r: &mut Rng, n: usize) -> Vec<u8> {
    if r.one_in(n) {
        // Around the 4096-byte limit.
        let n = 4090 + r.below(12);
        return (0..n)
            .map(|i| if i % 7 == 6 { b'/' } else { b'x' })
            .collect();
    }
    let mut p = Vec::new();
    if r.one_in(20) {
        p.push(b'/');
    }
    for i in 0..r.below(5) {
        if i > 0 {
            p.push(b'/');
        }
        p.extend(name(r));
    }
    p
}

fn relpaths(r: &mut Rng) -> Vec<RelPath> {
    (0..r.below(6)).map(|_| RelPath(path(r))).collect()
}

fn request(r: &mut Rng) -> Request {
    match r.below(9) {
        0 => Request::Hello {
            version: r.edgy_u64() as u32,
        },
        1 | 3 => Request::Walk {
            dirs: relpaths(r),
            watch: r.one_in(2),
            files: r.one_in(2),
            stat: r.one_in(2),
        },
        2 => Request::Unwatch {
            wds: (0..r.below(6)).map(|_| r.edgy_i32()).collect(),
        },
        4 => Request::Stat { paths: relpaths(r) },
        5 => Request::Exec {
            job: r.edgy_u64(),
            handler: *r.pick(&[
                HandlerRef::Sync,
                HandlerRef::PreExitHook,
                HandlerRef::ExitHook,
            ]),
            lists: (0..r.below(4))
                .map(|_| *r.pick(&[ListKind::Include, ListKind::Exclude]))
                .collect(),
            env: ExecEnv {
                status: *r.pick(&[
                    Status::Initsync,
                    Status::Running,
                    Status::SynchandlerError,
                    Status::Preexit,
                    Status::Lastsync,
                    Status::Terminating,
                    Status::HoldOn,
                ]),
                iteration: r.edgy_u64(),
            },
            call: CallArgs {
                sync_type: *r.pick(&[
                    SyncType::Sync,
                    SyncType::Synclist,
                    SyncType::Rsynclist,
                    SyncType::Initialsync,
                ]),
                event_mask: if r.one_in(2) {
                    Some(r.edgy_u64() as u32)
                } else {
                    None
                },
                paths: relpaths(r),
            },
        },
        6 => Request::Kill { job: r.edgy_u64() },
        7 => Request::Shutdown,
        _ => Request::Violation {
            syscall: r.edgy_i32(),
        },
    }
}

fn kind(r: &mut Rng) -> Kind {
    *r.pick(&[Kind::File, Kind::Dir, Kind::Symlink, Kind::Other])
}

fn reply(r: &mut Rng) -> Reply {
    match r.below(8) {
        0 => Reply::Hello {
            version: r.edgy_u64() as u32,
        },
        1 | 3 => Reply::Walked {
            chunks: (0..r.below(4))
                .map(|_| Chunk {
                    dir: r.edgy_u64() as u32,
                    watch: match r.below(3) {
                        0 => None,
                        1 => Some(WatchResult::Wd(r.edgy_i32())),
                        _ => Some(WatchResult::Errno(r.edgy_i32())),
                    },
                    entries: (0..r.below(5))
                        .map(|_| Entry {
                            name: name(r),
                            kind: kind(r),
                            size: r.edgy_u64(),
                            dev: r.edgy_u64(),
                        })
                        .collect(),
                    last: r.one_in(2),
                    errno: r.edgy_i32(),
                })
                .collect(),
        },
        2 => Reply::Unwatched,
        4 => Reply::Stats {
            results: (0..r.below(6))
                .map(|_| {
                    if r.one_in(2) {
                        StatResult::Found {
                            kind: kind(r),
                            size: r.edgy_u64(),
                            dev: r.edgy_u64(),
                            sig: r.edgy_u64(),
                        }
                    } else {
                        StatResult::Errno(r.edgy_i32())
                    }
                })
                .collect(),
        },
        5 => Reply::Started {
            job: r.edgy_u64(),
            pid: r.edgy_i32(),
        },
        6 => Reply::Exited {
            job: r.edgy_u64(),
            status: if r.one_in(2) {
                ExitStatus::Code(r.edgy_i32())
            } else {
                ExitStatus::Signal(r.edgy_i32())
            },
        },
        _ => Reply::Refused {
            reason: String::from_utf8_lossy(&name(r)).into_owned(),
        },
    }
}

/// A structure-aware mutant of a valid encoding: bit flips, boundary bytes (which postcard reads as
/// varint continuations, maximal lengths or bad variant indexes), inserted and deleted bytes,
/// truncation, a duplicated slice, or a splice with another message.
fn mutate(r: &mut Rng, valid: &[u8], other: &[u8]) -> Vec<u8> {
    let mut m = valid.to_vec();
    for _ in 0..1 + r.below(3) {
        let at = r.below(m.len() + 1);
        match r.below(8) {
            0 if at < m.len() => m[at] ^= 1 << r.below(8),
            1 if at < m.len() => m[at] = *r.pick(&[0x00, 0x01, 0x7f, 0x80, 0xff, 0x09, 0x0a]),
            2 => {
                let b = r.byte();
                m.insert(at, *r.pick(&[0x00, 0x80, 0xff, b]));
            }
            3 if at < m.len() => {
                m.remove(at);
            }
            4 => m.truncate(at),
            5 if at < m.len() => {
                let end = (at + 1 + r.below(8)).min(m.len());
                let piece = m[at..end].to_vec();
                m.splice(at..at, piece);
            }
            6 => {
                let cut = r.below(other.len() + 1);
                m.truncate(at);
                m.extend_from_slice(&other[cut..]);
            }
            _ => {
                // A length or index varint made maximal.
                m.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
        }
    }
    m
}

#[test]
fn wire_samples_cover_every_variant_and_roundtrip() {
    let reqs = sample_requests();
    let mut seen: Vec<usize> = reqs.iter().map(request_variant).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..REQUEST_VARIANTS).collect::<Vec<_>>(), "requests");
    let reps = sample_replies();
    let mut seen: Vec<usize> = reps.iter().map(reply_variant).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..REPLY_VARIANTS).collect::<Vec<_>>(), "replies");
    for r in reqs {
        assert_eq!(decode::<Request>(&encode(&r).unwrap()).unwrap(), r);
    }
    for r in reps {
        assert_eq!(decode::<Reply>(&encode(&r).unwrap()).unwrap(), r);
    }
}

#[test]
fn wire_messages_roundtrip_and_mutants_never_panic() {
    let mut r = Rng::new(1);
    let mut inputs = 0usize;
    let mut decoded_mutants = 0usize;
    let mut samples: Vec<Vec<u8>> = sample_requests()
        .iter()
        .map(|m| encode(m).unwrap())
        .chain(sample_replies().iter().map(|m| encode(m).unwrap()))
        .collect();
    for i in 0..4000 {
        let valid = if i % 2 == 0 {
            let req = request(&mut r);
            let b = encode(&req).unwrap();
            assert_eq!(decode::<Request>(&b).unwrap(), req);
            b
        } else {
            let rep = reply(&mut r);
            let b = encode(&rep).unwrap();
            assert_eq!(decode::<Reply>(&b).unwrap(), rep);
            b
        };
        check_protocol(&valid);
        inputs += 1;
        let other = r.pick(&samples).clone();
        for _ in 0..8 {
            let m = mutate(&mut r, &valid, &other);
            if decode::<Request>(&m).is_ok() || decode::<Reply>(&m).is_ok() {
                decoded_mutants += 1;
            }
            check_protocol(&m);
            inputs += 1;
        }
        if samples.len() < 64 {
            samples.push(valid);
        }
    }
    for _ in 0..10_000 {
        let len = r.below(64);
        let b: Vec<u8> = (0..len).map(|_| r.byte()).collect();
        check_protocol(&b);
        inputs += 1;
    }
    // The mutants must reach past the decoder's first checks, or they test nothing.
    assert!(
        decoded_mutants > 1000,
        "only {decoded_mutants} mutants decoded"
    );
    assert!(inputs >= 40_000);
}

#[test]
fn relpath_validation_matches_its_contract() {
    let mut r = Rng::new(2);
    let mut accepted = 0;
    for _ in 0..50_000 {
        let p = RelPath(path(&mut r));
        check_relpath(&p);
        if p.validate().is_ok() {
            accepted += 1;
            // A valid path joined with a valid component (short enough) is valid.
            let n = name(&mut r);
            let joined = p.join(&n);
            if relpath_allowed(&n) && !n.contains(&b'/') && !n.is_empty() && joined.0.len() <= 4096
            {
                assert!(joined.validate().is_ok(), "{joined:?}");
            }
        }
    }
    assert!(accepted > 5_000, "generator too hostile: {accepted} valid");
}

/// Regex fragments, valid and invalid, for generated rules files.
const RE_PIECES: &[&[u8]] = &[
    b"^",
    b"$",
    b"a",
    b"b",
    b".",
    b"\\.",
    b"/",
    b"tmp",
    b"[a-z]",
    b"[^/]",
    b"[[:alpha:]]",
    b"[[:foo:]]",
    b"[[:cntrl:]]",
    b"(",
    b")",
    b"|",
    b"*",
    b"+",
    b"?",
    b"{2}",
    b"{1,3}",
    b"{,2}",
    b"{3,1}",
    b"{99999}",
    b"{",
    b"}",
    b"]",
    b"[",
    b"\\",
    b"\\w",
    b"\\s",
    b"\\b",
    b"\\<",
    b"\\>",
    b"\\`",
    b"\\'",
    b"\\1",
    b"\\d",
    b"\\/",
    b"\\\\",
    b"[a-]",
    b"[]a]",
    b"[=a=]",
    b"[.-.]",
    b"[.ab.]",
    b"[a-c-e]",
    b"[z-a]",
    b"[\\]",
    b"\xff",
    b"\xc3\xbc",
    b"\0",
    b"\r",
    b"%",
    b"-",
];

fn rules_file(r: &mut Rng) -> Vec<u8> {
    let mut text = Vec::new();
    for _ in 0..r.below(6) {
        match r.below(20) {
            0 => text.extend(r.bytes(8)),
            1 => text.extend_from_slice(b"# a comment [ ( \\"),
            2 => text.push(*r.pick(b"+-#")),
            _ => {
                text.push(if r.one_in(30) {
                    r.byte()
                } else {
                    *r.pick(b"+-")
                });
                text.push(if r.one_in(30) {
                    r.byte()
                } else {
                    *r.pick(b"*fdwmsFDWMS")
                });
                for _ in 0..r.below(7) {
                    let piece: &[u8] = r.pick::<&[u8]>(RE_PIECES);
                    text.extend_from_slice(piece);
                }
            }
        }
        let end: &[u8] = r.pick::<&[u8]>(&[b"\n", b"\r\n", b"\n\n"]);
        text.extend_from_slice(end);
    }
    if r.one_in(3) {
        // No final line end.
        text.pop();
    }
    text
}

#[test]
fn rules_files_parse_totally_and_perm_grants_only_wanted_bits() {
    let mut r = Rng::new(3);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let text = rules_file(&mut r);
        if clsync_rs::rules::Rules::parse(&text).is_ok() {
            parsed += 1;
        }
        check_rules(&text);
    }
    for _ in 0..10_000 {
        check_rules(&r.bytes(40));
    }
    assert!(parsed > 2_500, "only {parsed} generated files parsed");
}

#[test]
fn literal_rules_match_exactly_hostile_names() {
    let mut r = Rng::new(4);
    for n in HOSTILE_NAMES {
        if !n.contains(&b'\n') {
            check_literal_rule(n);
        }
    }
    for _ in 0..5_000 {
        let mut n = path(&mut r);
        n.retain(|&b| b != b'\n');
        n.truncate(200);
        check_literal_rule(&n);
    }
}

fn list_ops(r: &mut Rng) -> Vec<ListOp> {
    let flags = [
        ListFlags::NONE,
        ListFlags::RECURSIVE,
        ListFlags::CONTENT_RECURSIVE,
        ListFlags::CHILDREN,
        ListFlags {
            recursive: true,
            content_recursive: true,
            children: false,
        },
        ListFlags {
            recursive: false,
            content_recursive: true,
            children: true,
        },
        ListFlags {
            recursive: true,
            content_recursive: false,
            children: true,
        },
    ];
    let mut earlier: Vec<Vec<u8>> = Vec::new();
    (0..r.below(12))
        .map(|_| {
            // Reuse earlier paths and their prefixes, so de-duplication and ancestors are hit.
            let p = if !earlier.is_empty() && r.one_in(3) {
                let mut p = r.pick(&earlier).clone();
                match r.below(3) {
                    0 => p.truncate(r.below(p.len() + 1)),
                    1 => {
                        p.push(b'/');
                        p.extend(name(r));
                    }
                    _ => {}
                }
                p
            } else {
                // A long path brings hundreds of ancestor lines: rarely, or the test is slow.
                path_long_one_in(r, 5_000)
            };
            earlier.push(p.clone());
            let f = *r.pick(&flags);
            if r.one_in(4) {
                ListOp::Exclude(p, f)
            } else {
                ListOp::Include(p, f)
            }
        })
        .collect()
}

#[test]
fn rsync_lists_have_one_anchored_line_per_entry() {
    let mut r = Rng::new(5);
    for _ in 0..20_000 {
        let ops = list_ops(&mut r);
        check_lists(&ops);
    }
    for _ in 0..5_000 {
        // The fuzz target's byte format, on random bytes.
        check_lists(&decode_list_ops(&r.bytes(64)));
    }
}

#[test]
fn inotify_batches_roundtrip_and_garbage_is_bounded() {
    let mut r = Rng::new(6);
    for _ in 0..20_000 {
        let names: Vec<Vec<u8>> = (0..r.below(6))
            .map(|_| {
                let mut n = if r.one_in(4) {
                    Vec::new()
                } else {
                    name(&mut r)
                };
                n.retain(|&b| b != 0);
                n
            })
            .collect();
        let evs: Vec<RawEvent<'_>> = names
            .iter()
            .map(|n| RawEvent {
                wd: r.edgy_i32(),
                mask: r.next() as u32,
                cookie: r.next() as u32,
                name: n,
            })
            .collect();
        let extra = *r.pick(&[0, 0, 1, 16]);
        check_inotify_roundtrip(&evs, extra);
        // Mutants: a lying length, a flipped byte, a cut.
        let mut buf = Vec::new();
        encode_events(&evs, extra, &mut buf);
        if !buf.is_empty() {
            let at = r.below(buf.len());
            let b = r.byte();
            buf[at] = *r.pick(&[0x00, 0xff, 0x7f, 0x80, b]);
            check_inotify(&buf);
            let cut = r.below(buf.len());
            check_inotify(&buf[..cut]);
        }
    }
    for _ in 0..20_000 {
        check_inotify(&r.bytes(80));
    }
}

#[test]
fn numbers_parse_like_strtol_and_never_panic() {
    let mut r = Rng::new(7);
    let alphabet: &[&str] = &[
        "0",
        "1",
        "7",
        "8",
        "9",
        "a",
        "f",
        "F",
        "g",
        "x",
        "X",
        "0x",
        "0X",
        "+",
        "-",
        " ",
        "\t",
        "\r",
        "\n",
        "\u{b}",
        "é",
        "٣",
        ",",
        "cap_chown",
        "CAP_KILL",
        "kill",
        "18446744073709551615",
        "18446744073709551616",
        "0xffffffffffffffff",
        "0x10000000000000000",
        "01777777777777777777777",
        "02000000000000000000000",
    ];
    for _ in 0..50_000 {
        let s: String = (0..r.below(6)).map(|_| *r.pick(alphabet)).collect();
        check_numbers(&s);
    }
    for _ in 0..10_000 {
        check_number_forms(r.edgy_u64());
    }
}

/// A configuration file made of plausible and hostile pieces.
fn conf_text(r: &mut Rng) -> String {
    let pieces = [
        "[default]\n",
        "[a]\n",
        "[b]\n",
        "config-block-inherits = a\n",
        "config-block-inherits = b\n",
        "config-block-inherits = default\n",
        "watch-dir = /srv\n",
        "delay-sync = 3\n",
        "-- = \"%INCLUDE-LIST%\" 'a b'\n",
        "x = \"unterminated\n",
        "# comment\n",
        "[unterminated\n",
        "novalue\n",
        "= nokey\n",
        "\n",
        "key = a\\\"b\n",
        "mode = \"shell\"\n",
        "\"--\" = [\"a\", 1]\n",
        "[[x]]\n",
        "k = [1, [2]]\n",
        "\u{0}\n",
    ];
    let mut t = String::new();
    for _ in 0..r.below(12) {
        let piece: &&str = r.pick(&pieces);
        t.push_str(piece);
        if r.one_in(5) {
            t.push_str(&String::from_utf8_lossy(&r.bytes(20)));
        }
    }
    t
}

#[test]
fn config_files_parse_totally_and_inheritance_always_ends() {
    let mut r = Rng::new(8);
    for _ in 0..20_000 {
        let text = conf_text(&mut r);
        check_confile(&text);
    }
}
