//! Writes the seed corpora: `cargo run --example seed [DIR]` (default: `seeds/` next to this
//! file), one directory per fuzz target, a few dozen small files each, all from valid inputs (and
//! a few instructive invalid ones). The output is deterministic, so re-running it after a protocol
//! or grammar change shows the difference in `git diff`.
use std::fs;
use std::path::{Path, PathBuf};

use clsync_rs::handler::rsynclist::ListFlags;
use clsync_rs::monitor::inotify::RawEvent;
use clsync_rs::privsep::protocol::encode;
use clsync_rs_fuzz::props::{
    encode_events, encode_list_ops, sample_replies, sample_requests, ListOp, HOSTILE_NAMES,
};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), bytes).unwrap();
}

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds"));
    for t in [
        "protocol_decode",
        "rules_parse",
        "rsync_lists",
        "inotify_decode",
        "cli_numbers",
        "confile_parse",
    ] {
        // Start clean, so removed seeds do not linger.
        let _ = fs::remove_dir_all(dir.join(t));
    }

    // The wire: every request and reply variant.
    for (i, m) in sample_requests().iter().enumerate() {
        write(
            &dir,
            "protocol_decode",
            &format!("req-{i:02}"),
            &encode(m).unwrap(),
        );
    }
    for (i, m) in sample_replies().iter().enumerate() {
        write(
            &dir,
            "protocol_decode",
            &format!("rep-{i:02}"),
            &encode(m).unwrap(),
        );
    }

    // Rules files: the documented examples and the grammar's corners.
    let rules: &[(&str, &[u8])] = &[
        (
            "doc-example",
            b"# comment\n+w^$\n-f\\.tmp$\n-d^sub/deep$\n+*\n",
        ),
        (
            "authorized-keys",
            b"+w^$\n+w^[^/]+$\n+w^[^/]+/\\.ssh$\n+f^[^/]+/\\.ssh/authorized_keys$\n-*\n",
        ),
        ("crlf-no-final-newline", b"-F\\.swp$\r\n+D^a(b|c)*$\r\n-*"),
        ("walk-monitor-sync", b"-s^x$\n+m^x$\n-d^x$\n-W^y{2,3}$\n"),
        (
            "brackets",
            b"-*[[:alpha:]][^/]*[]a-][=x=][.-.]$\n+*^[a-c]?\\{1\\}\\(\\)$\n",
        ),
        (
            "gnu-escapes",
            b"-*\\<tmp\\>\n-f\\w+\\s\\W\\S\\b\\B\\`x\\'\n",
        ),
        ("intervals", b"-*a{2}b{1,}c{,3}d{0,0}e+?f*{2}\n"),
        ("non-utf8", b"-f^\xff\xfe$\n-*\x80|\\\xc3\n"),
        ("bad-type", b"+*ok\n-x^bad$\n"),
        ("bad-regex", b"+*ok\n-*a(b\n"),
        ("backref", b"-*(a)\\1\n"),
    ];
    for (name, text) in rules {
        write(&dir, "rules_parse", name, text);
    }

    // rsync lists: hostile names, nesting, de-duplication, every flag.
    let inc = |p: &[u8], f| ListOp::Include(p.to_vec(), f);
    let exc = |p: &[u8], f| ListOp::Exclude(p.to_vec(), f);
    let both = ListFlags {
        recursive: true,
        content_recursive: true,
        children: false,
    };
    let lists: Vec<(&str, Vec<ListOp>)> = vec![
        (
            "nested",
            vec![
                inc(b"sub/t2", ListFlags::NONE),
                inc(b"sub/deep/x", ListFlags::NONE),
                inc(b"sub/deep/nd", ListFlags::RECURSIVE),
            ],
        ),
        (
            "root-and-excludes",
            vec![
                inc(b"", ListFlags::RECURSIVE),
                exc(b"sub/deep", ListFlags::NONE),
                exc(b"mnt", ListFlags::CONTENT_RECURSIVE),
                exc(b"x*y/z", ListFlags::NONE),
            ],
        ),
        (
            "dedupe",
            vec![
                inc(b"d", ListFlags::NONE),
                inc(b"d/f", ListFlags::NONE),
                inc(b"d", ListFlags::CONTENT_RECURSIVE),
                inc(b"d", both),
            ],
        ),
        (
            "hostile",
            HOSTILE_NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    if i % 3 == 2 {
                        exc(n, ListFlags::NONE)
                    } else {
                        inc(&[&b"dir/"[..], n].concat(), ListFlags::NONE)
                    }
                })
                .collect(),
        ),
        (
            "newlines",
            vec![
                inc(b"n\nl/f]", ListFlags::NONE),
                inc(b"d\r/x", ListFlags::RECURSIVE),
                exc(b"x\ny\\", ListFlags::NONE),
            ],
        ),
    ];
    for (name, ops) in &lists {
        write(&dir, "rsync_lists", name, &encode_list_ops(ops));
    }

    // inotify batches as the kernel writes them.
    let ev = |wd, mask, cookie, name| RawEvent {
        wd,
        mask,
        cookie,
        name,
    };
    let batches: Vec<(&str, Vec<RawEvent<'_>>, usize)> = vec![
        (
            "create-modify",
            vec![
                ev(1, libc::IN_CREATE, 0, &b"a"[..]),
                ev(1, libc::IN_CLOSE_WRITE, 0, b"a"),
            ],
            0,
        ),
        (
            "move-dir",
            vec![
                ev(2, libc::IN_MOVED_FROM | libc::IN_ISDIR, 9, b"-rf\nx y*"),
                ev(3, libc::IN_MOVED_TO | libc::IN_ISDIR, 9, b"%TYPE%"),
            ],
            0,
        ),
        (
            "overflow-ignored",
            vec![
                ev(-1, libc::IN_Q_OVERFLOW, 0, b""),
                ev(4, libc::IN_IGNORED, 0, b""),
            ],
            0,
        ),
        (
            "long-name-padding",
            vec![ev(5, libc::IN_DELETE, 0, &[b'x'; 255][..])],
            16,
        ),
        (
            "non-utf8",
            vec![
                ev(6, libc::IN_ATTRIB, 0, "ünï".as_bytes()),
                ev(6, 0, 0, b"\xff"),
            ],
            1,
        ),
    ];
    for (name, evs, extra) in &batches {
        let mut buf = Vec::new();
        encode_events(evs, *extra, &mut buf);
        write(&dir, "inotify_decode", name, &buf);
    }

    // Numbers and capability lists as administrators write them.
    let numbers: &[(&str, &str)] = &[
        ("decimal", "30"),
        ("hex", "0x1F"),
        ("octal", "0755"),
        ("blanks", " \t1800\r\n"),
        ("plus", "+010"),
        ("max", "18446744073709551615"),
        ("overflow", "18446744073709551616"),
        ("caps", "cap_chown, CAP_DAC_OVERRIDE,kill"),
        ("bad", "0x+1f"),
    ];
    for (name, s) in numbers {
        write(&dir, "cli_numbers", name, s.as_bytes());
    }

    // Configuration files: clsync's keyfile form (blocks, inheritance, comma lists, the `--` key
    // with quotes) and the TOML form, plus a cycle and a broken line.
    let confs: &[(&str, &str)] = &[
        (
            "keyfile",
            "# clsync.conf\n[default]\nmode = rsyncdirect\nwatch-dir = /srv/www\n\
             destination-dir = /backup/www\nignore-exitcode = 23,24\n\n[web]\n\
             config-block-inherits = default\ndelay-sync = 3\n\
             -- = --from=root \"www-data:www-data\" '%INCLUDE-LIST%'\n",
        ),
        (
            "toml",
            "[default]\nmode = \"rsyncdirect\"\nwatch-dir = \"/srv\"\n\
             ignore-exitcode = [23, 24]\n\n[a]\nconfig-block-inherits = \"default\"\n\
             \"--\" = [\"%INCLUDE-LIST%\", \"/dst/\"]\n",
        ),
        (
            "cycle",
            "[a]\nconfig-block-inherits = b\n[b]\nconfig-block-inherits = a\n",
        ),
        ("broken", "[default\nkey \"unterminated = x\n= nokey\n"),
        ("args", "-aH --delete 'a b' \"c\\\"d\" e\\ f"),
    ];
    for (name, s) in confs {
        write(&dir, "confile_parse", name, s.as_bytes());
    }
}
