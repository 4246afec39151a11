//! Compliance with clsync 0.4.5, in the style of sudo-rs's compliance tests: each scenario runs
//! once with the real clsync (`/usr/bin/clsync`, Debian's 0.4.5; CI installs it) and once with
//! ours, with the same options, the same tree and the same events. The sync handler is a logging
//! script that records, for every call, the program it was run as, its working directory, its
//! uid and gid, argv (one element per line, escaped), the CLSYNC_* environment and the content
//! of every list file it was given. The two records are then compared after normalising only
//! what legitimately differs, each normalisation citing the man page section (man/clsync.1) or
//! the reference section (/work/shared/reference/clsync-behaviour.md, "reference §N") that
//! makes it legitimate:
//!
//! - the scratch directory (each run has its own) and the names of list files (pids, times,
//!   random numbers), see [`Record::normalise_paths`];
//! - line order in list files, and path order in an `%INCLUDE-LIST%`: clsync's is hash order;
//! - the documented differences of the man page, applied to clsync's record only.
//!
//! What we do differently without the man page saying so is not normalised: it is asserted on
//! both sides, separately, under a `// KNOWN DIFFERENCE:` comment.
//!
//! The events of a scenario start only once the initial sync's record is complete, and happen
//! while the daemon is suspended (SIGSTOP; then SIGCONT): both read them as one batch, whatever
//! the machine's load, and clsync's own timing (it reads events up to a second late) is
//! imposed on both. `-w1 -t1 -T1` then make it one sync pass.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The reference implementation: Debian's clsync package.
const REFERENCE: &str = "/usr/bin/clsync";

/// `/usr/bin/clsync`, checked once to be clsync 0.4.5. A missing reference fails the test: CI
/// installs it, so a green run always means the comparison took place.
fn reference_clsync() -> PathBuf {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        if !Path::new(REFERENCE).exists() {
            return Err(format!(
                "{REFERENCE} is missing: install clsync (apt-get install clsync)"
            ));
        }
        // -V prints "Info: clsync v0.4.5-release" and the build options on the log (stderr).
        let out = Command::new(REFERENCE)
            .arg("-V")
            .output()
            .map_err(|e| format!("cannot run {REFERENCE}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if !text.contains("clsync v0.4.5") {
            return Err(format!(
                "{REFERENCE} is not clsync 0.4.5 (install Debian's clsync): {text}"
            ));
        }
        Ok(())
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
    PathBuf::from(REFERENCE)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Clsync,
    Ours,
}

impl Impl {
    fn tag(self) -> &'static str {
        match self {
            Impl::Clsync => "clsync",
            Impl::Ours => "ours",
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The logging handler and its record

/// The logging handler (perl: no shell quoting to get wrong). One record per call, appended
/// under an exclusive lock: `call`, then `exec` (the handler's path as the kernel ran it; a
/// script cannot see its argv[0]), `cwd`, `ids` (uid gid), one `arg` line per argv element, one
/// `env` line per CLSYNC_* variable (sorted), and for each argument that is a list file
/// (`.clsync-list.*`, `.clsync-exclist.*`, the names both implementations use) `list N` and
/// one `line` per line of its content (split on \n, so a final newline gives a last empty
/// line); then `end`. Values are escaped: `\\`, `\n`, and `\xNN` for other non-printable bytes.
const LOGGER: &str = r#"#!/usr/bin/perl
use strict;
use warnings;
use Fcntl qw(:flock);
use Cwd qw(getcwd);

sub esc {
    my ($s) = @_;
    $s =~ s/\\/\\\\/g;
    $s =~ s/\n/\\n/g;
    $s =~ s/([^\x20-\x7e])/sprintf("\\x%02x", ord($1))/ge;
    return $s;
}

my $r = "call\n";
$r .= "exec " . esc($0) . "\n";
$r .= "cwd " . esc(getcwd() // "?") . "\n";
$r .= "ids $< " . (split(' ', $())[0] . "\n";
$r .= "arg " . esc($_) . "\n" for @ARGV;
for my $k (sort grep { /^CLSYNC_/ } keys %ENV) {
    $r .= "env " . esc("$k=$ENV{$k}") . "\n";
}
for my $i (0 .. $#ARGV) {
    my $a = $ARGV[$i];
    next unless $a =~ m{/\.clsync-(?:list|exclist)\.[^/]*\z} && -f $a;
    open(my $f, '<', $a) or die "open $a: $!";
    my $c = do { local $/; <$f> };
    close($f);
    $r .= "list $i\n";
    $r .= "line " . esc($_) . "\n" for split(/\n/, $c, -1);
}
$r .= "end\n";
open(my $log, '>>', '@LOG@') or die "open log: $!";
flock($log, LOCK_EX) or die "flock: $!";
print $log $r;
close($log) or die "close log: $!";
exit 0;
"#;

/// Writes the logging handler into the scenario's scratch dir; it appends to `log`.
fn write_logger(s: &Scratch, log: &Path) -> PathBuf {
    let h = s.path("handler.pl");
    write_script(&h, &LOGGER.replace("@LOG@", &log.display().to_string()));
    h
}

/// One recorded handler call.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    exec: String,
    cwd: String,
    ids: String,
    /// argv[1..], escaped.
    argv: Vec<String>,
    /// CLSYNC_* variables.
    env: BTreeMap<String, String>,
    /// argv index (into `argv`) -> the list file's lines.
    lists: BTreeMap<usize, Vec<String>>,
}

/// The complete calls in the log so far (a record being written is not complete).
fn read_calls(log: &Path) -> Vec<Call> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut calls = Vec::new();
    let mut cur: Option<Call> = None;
    let mut list: Option<usize> = None;
    for line in text.lines() {
        let (tag, val) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "call" => {
                cur = Some(Call {
                    exec: String::new(),
                    cwd: String::new(),
                    ids: String::new(),
                    argv: Vec::new(),
                    env: BTreeMap::new(),
                    lists: BTreeMap::new(),
                });
                list = None;
            }
            "end" => calls.extend(cur.take()),
            _ => {
                let Some(c) = cur.as_mut() else { continue };
                match tag {
                    "exec" => c.exec = val.to_string(),
                    "cwd" => c.cwd = val.to_string(),
                    "ids" => c.ids = val.to_string(),
                    "arg" => c.argv.push(val.to_string()),
                    "env" => {
                        let (k, v) = val.split_once('=').unwrap_or((val, ""));
                        c.env.insert(k.to_string(), v.to_string());
                    }
                    "list" => {
                        let i = val.parse().expect("list index");
                        c.lists.insert(i, Vec::new());
                        list = Some(i);
                    }
                    "line" => {
                        let i = list.expect("line before list");
                        c.lists.get_mut(&i).unwrap().push(val.to_string());
                    }
                    _ => panic!("bad record line {line:?} in {}", log.display()),
                }
            }
        }
    }
    calls
}

/// A run's calls; the first `initial` are the initial sync's.
#[derive(Clone, Debug)]
struct Record {
    calls: Vec<Call>,
    initial: usize,
}

impl Record {
    /// Normalisation that applies to both sides: the runs have their own scratch dirs (so the
    /// watch dir, handler and destination paths differ by their prefix, replaced by `<ROOT>`),
    /// and list files have names made of pids, times and random numbers (replaced by `<list>`
    /// and `<exclist>`, after checking that both are in a private `$TMPDIR/clsync-XXXXXX`
    /// directory, as reference §4.1 describes).
    fn normalise_paths(&mut self, root: &Path, tmp: &Path) {
        let root = root.display().to_string();
        let lists_dir = format!("{}/clsync-", tmp.display());
        for c in &mut self.calls {
            for (i, a) in c.argv.iter_mut().enumerate() {
                let name = a.rsplit('/').next().unwrap_or("");
                let kind = if name.starts_with(".clsync-list.") {
                    "<list>"
                } else if name.starts_with(".clsync-exclist.") {
                    "<exclist>"
                } else {
                    *a = a.replace(&root, "<ROOT>");
                    continue;
                };
                assert!(
                    a.starts_with(&lists_dir) && a[lists_dir.len()..].split('/').count() == 2,
                    "list file outside a private $TMPDIR/clsync-XXXXXX: {a}"
                );
                assert!(c.lists.contains_key(&i), "list {a} was not readable");
                *a = kind.to_string();
            }
            c.exec = c.exec.replace(&root, "<ROOT>");
            c.cwd = c.cwd.replace(&root, "<ROOT>");
        }
    }

    /// clsync writes list lines in hash-table order, not event order (reference §4.4: "the
    /// same holds for every list"): lines are compared as sorted multisets.
    fn sort_list_lines(&mut self) {
        for c in &mut self.calls {
            for lines in c.lists.values_mut() {
                lines.sort();
            }
        }
    }

    /// An `%INCLUDE-LIST%` expands to the paths in the order of clsync's hash table too
    /// (reference §4.3, §4.4): the path arguments, all but `before` leading and `after`
    /// trailing fixed arguments, are sorted.
    fn sort_include_list(&mut self, before: usize, after: usize) {
        for c in &mut self.calls {
            let end = c.argv.len() - after;
            c.argv[before..end].sort();
        }
    }

    /// Takes CLSYNC_ITERATION out of every call (for a separate assertion) and returns it.
    fn take_iterations(&mut self) -> Vec<String> {
        self.calls
            .iter_mut()
            .map(|c| c.env.remove("CLSYNC_ITERATION").unwrap_or_default())
            .collect()
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (n, c) in self.calls.iter().enumerate() {
            let phase = if n < self.initial {
                "initial"
            } else {
                "events"
            };
            out += &format!(
                "call {n} ({phase}): exec {} cwd {} ids {}\n",
                c.exec, c.cwd, c.ids
            );
            for (i, a) in c.argv.iter().enumerate() {
                out += &format!("  argv[{}] {a}\n", i + 1);
            }
            for (k, v) in &c.env {
                out += &format!("  env {k}={v}\n");
            }
            for (i, lines) in &c.lists {
                out += &format!("  list argv[{}]:\n", i + 1);
                for l in lines {
                    out += &format!("    |{l}|\n");
                }
            }
        }
        out
    }
}

/// Panics, showing both records in full, unless they are equal.
#[track_caller]
fn assert_same(clsync: &Record, ours: &Record) {
    let (a, b) = (clsync.render(), ours.render());
    if a != b {
        let first = a
            .lines()
            .zip(b.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(a.lines().count().min(b.lines().count()));
        panic!(
            "records differ (first at line {}):\n---- clsync 0.4.5 (normalised):\n{a}---- ours (normalised):\n{b}----",
            first + 1
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Running a scenario

/// One scenario: the same for both implementations, except where `options`/`setup` look at
/// the [`Impl`] (only to feed a documented difference).
struct Scenario {
    name: &'static str,
    mode: &'static str,
    /// Options after `-M mode -W src -S handler -H /NULL/ -w1 -t1 -T1` (handler arguments go
    /// after a `--`).
    options: fn(&Scratch, Impl) -> Vec<OsString>,
    /// Builds the tree (and files the options name) before the daemon starts.
    setup: fn(&Scratch, Impl),
    /// How many calls the initial sync makes: 1, or one per node in mode simple.
    initial_calls: fn(&Scratch) -> usize,
    /// The events, done once the initial sync's record is complete.
    events: fn(&Scratch),
    /// Whether the record (raw) shows the events' calls; then the daemon is stopped.
    done: fn(&[Call]) -> bool,
}

/// The initial sync is one pass.
fn one_call(_: &Scratch) -> usize {
    1
}

/// The events went into one pass after the initial one.
fn second_call(c: &[Call]) -> bool {
    c.len() >= 2
}

fn os_args(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// Runs `sc` with one implementation in its own scratch dir; returns the record with the
/// common normalisation applied (scratch paths, list names, list line order).
fn run(sc: &Scenario, which: Impl) -> Record {
    let s = Scratch::new(&format!("compl-{}-{}", sc.name, which.tag()));
    // clsync creates its list directory as nobody, its default --uid when started as root
    // (reference §4.1, §8); ours as root. TMPDIR is the same sticky, world-writable dir for both.
    fs::set_permissions(s.tmp(), fs::Permissions::from_mode(0o1777)).unwrap();
    (sc.setup)(&s, which);
    let log = s.path("calls.log");
    let handler = write_logger(&s, &log);
    let mut args = handler_args(&s, sc.mode, &handler, &["-w1", "-t1", "-T1"]);
    args.extend((sc.options)(&s, which));
    let mut d = match which {
        Impl::Clsync => Daemon::spawn(&reference_clsync(), &s, &args, &[INHERITED]),
        Impl::Ours => Daemon::start(&s, &args, &[INHERITED]),
    };
    let initial = (sc.initial_calls)(&s);
    d.wait_until(START_TIMEOUT, "the initial sync's record", |_| {
        read_calls(&log).len() >= initial
    });
    if which == Impl::Ours {
        d.wait_ready();
    }
    assert_eq!(
        read_calls(&log).len(),
        initial,
        "{}: initial sync's calls",
        which.tag()
    );
    d.suspend();
    (sc.events)(&s);
    d.resume();
    d.wait_until(SYNC_TIMEOUT, "the events' record", |_| {
        (sc.done)(&read_calls(&log))
    });
    // Then for a second without a new call: a late call (a second pass) shows in the record.
    let mut last = (read_calls(&log).len(), Instant::now());
    d.wait_until(SYNC_TIMEOUT, "a second without a new call", |_| {
        let n = read_calls(&log).len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        last.1.elapsed() >= Duration::from_secs(1)
    });
    let st = d.stop();
    assert!(
        st.success(),
        "{} exited with {st}; stderr:\n{}",
        which.tag(),
        d.stderr()
    );
    drop(d);
    let mut r = Record {
        calls: read_calls(&log),
        initial,
    };
    r.normalise_paths(s.root(), &s.tmp());
    r.sort_list_lines();
    r
}

/// A CLSYNC_* variable both daemons are started with (see [`run_both`]).
const INHERITED: (&str, &str) = ("CLSYNC_COMPLIANCE_INHERITED", "1");

/// Runs `sc` with clsync, then with ours.
fn run_both(sc: &Scenario) -> (Record, Record) {
    let mut c = run(sc, Impl::Clsync);
    let mut o = run(sc, Impl::Ours);
    // KNOWN DIFFERENCE: the handler's environment (reference §4.1: "environment = clsync's
    // plus CLSYNC_STATUS/CLSYNC_ITERATION"). clsync passes its own environment on, so its
    // handler sees every CLSYNC_* variable the daemon was started with (INHERITED, and
    // CLSYNC_TEST_* of the test run); ours builds the handler's environment from scratch
    // (SECURITY.md: a fixed PATH, CLSYNC_STATUS and CLSYNC_ITERATION), so it sees none. Those
    // variables are asserted on each side, then taken out of clsync's record.
    let started_with: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("CLSYNC_"))
        .chain([INHERITED.0.to_string()])
        .collect();
    for (r, inherits) in [(&mut c, true), (&mut o, false)] {
        for call in &mut r.calls {
            let from_daemon: Vec<(String, String)> = started_with
                .iter()
                .filter_map(|k| Some((k.clone(), call.env.remove(k)?)))
                .collect();
            let marker = from_daemon
                .iter()
                .any(|(k, v)| k == INHERITED.0 && v == INHERITED.1);
            assert!(
                (marker == inherits) && (inherits || from_daemon.is_empty()),
                "inherited environment {from_daemon:?} in {call:#?}"
            );
        }
    }
    (c, o)
}

fn write(path: impl AsRef<Path>, content: &str) {
    fs::write(path.as_ref(), content)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.as_ref().display()));
}

fn append(path: impl AsRef<Path>, content: &str) {
    fs::OpenOptions::new()
        .append(true)
        .open(path.as_ref())
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .unwrap_or_else(|e| panic!("append {}: {e}", path.as_ref().display()));
}

fn mkdirs(path: impl AsRef<Path>) {
    fs::create_dir_all(path.as_ref()).unwrap();
}

/// A directory with files is moved into the tree: built next to it (same file system), then
/// renamed in.
fn move_in(s: &Scratch, name: &str, files: &[&str]) {
    let staged = s.path(format!("staging/{name}"));
    for f in files {
        let p = staged.join(f);
        mkdirs(p.parent().unwrap());
        write(&p, "staged\n");
    }
    fs::rename(&staged, s.src().join(name)).unwrap();
}

// ------------------------------------------------------------------------------------------------
// Documented differences (applied to clsync's record only)

/// man/clsync.1, MODES: "a path argument that begins with - is passed as ./-name, so no file
/// name can be read as an option (clsync 0.4.5 passes it as it is)". Applies to the path
/// arguments between `before` and `after` fixed ones.
fn dash_paths_as_ours(r: &mut Record, before: usize, after: usize) {
    for c in &mut r.calls {
        let end = c.argv.len() - after;
        for a in &mut c.argv[before..end] {
            if a.starts_with('-') {
                *a = format!("./{a}");
            }
        }
    }
}

/// man/clsync.1, MODES: "file names are never macro-expanded (clsync 0.4.5 expands %TYPE%
/// inside them)" (also reference §9.2): clsync's expansion of each of `names` (a path argument
/// of type `ty`) is mapped back to the name itself.
fn unexpanded_names_as_ours(r: &mut Record, names: &[&str], ty: &str) {
    for c in &mut r.calls {
        for a in &mut c.argv {
            for n in names {
                if *a == n.replace("%TYPE%", ty) {
                    *a = n.to_string();
                }
            }
        }
    }
}

/// man/clsync.1, LIST FILES: "a removed directory is listed recursively so rsync deletes its
/// content at the destination": clsync's `/dir` line for each of `dirs` (removed or renamed
/// away by the events) in the include lists of the calls after the initial sync becomes
/// `/dir/***`.
fn removed_dirs_recursive_as_ours(r: &mut Record, dirs: &[&str]) {
    let initial = r.initial;
    for c in r.calls.iter_mut().skip(initial) {
        // The include list is the first list argument (reference §4.5).
        if let Some(lines) = c.lists.values_mut().next() {
            for l in lines.iter_mut() {
                if dirs.iter().any(|d| *l == format!("/{d}")) {
                    l.push_str("/***");
                }
            }
            lines.sort();
        }
    }
}

/// man/clsync.1, --status-file: the state is "updated whenever it changes (clsync 0.4.5 lets it
/// go stale)"; CLSYNC_STATUS follows the status file's updates (reference §6). In mode simple
/// clsync never leaves `initsync` (no sync pass ever rewrites it), so its `initsync` after the
/// initial sync reads `running`, as ours says.
fn stale_status_as_ours(r: &mut Record) {
    let initial = r.initial;
    for c in r.calls.iter_mut().skip(initial) {
        if let Some(v) = c.env.get_mut("CLSYNC_STATUS") {
            if v == "initsync" {
                *v = "running".to_string();
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Scenarios

/// The tree of the shell and simple scenarios.
fn small_tree(s: &Scratch, _: Impl) {
    let src = s.src();
    mkdirs(src.join("d/e"));
    mkdirs(src.join("od"));
    write(src.join("a"), "a\n");
    write(src.join("d/b"), "b\n");
    write(src.join("d/e/f"), "f\n");
    write(src.join("od/o"), "o\n");
    write(src.join("mv1"), "m\n");
    write(src.join("with space"), "s\n");
}

/// The batch of events of the shell and simple scenarios: create a file, modify one, delete
/// one, mkdir with files (their events happen before the daemon reads the mkdir, so both find
/// the files by walking the new directory), a directory with files moved in, rename a file,
/// rename a directory, remove a directory with its content, and (last) an empty new directory.
fn small_events(s: &Scratch) {
    let src = s.src();
    write(src.join("c"), "new\n");
    append(src.join("a"), "more\n");
    fs::remove_file(src.join("d/b")).unwrap();
    mkdirs(src.join("md/m2"));
    write(src.join("md/f"), "f\n");
    write(src.join("md/m2/g"), "g\n");
    move_in(s, "nd", &["f", "n2/g"]);
    fs::rename(src.join("mv1"), src.join("mv2")).unwrap();
    fs::rename(src.join("d/e"), src.join("d/e2")).unwrap();
    fs::remove_dir_all(src.join("od")).unwrap();
    fs::create_dir(src.join("empty")).unwrap();
}

#[test]
fn shell_initial_sync_and_a_batch_of_events_give_clsyncs_lists() {
    let sc = Scenario {
        name: "shell",
        mode: "shell",
        options: |_, _| vec![],
        setup: small_tree,
        initial_calls: one_call,
        events: small_events,
        done: second_call,
    };
    let (mut clsync, mut ours) = run_both(&sc);
    // KNOWN DIFFERENCE: CLSYNC_ITERATION (reference §6, "Iteration counter"). clsync also
    // counts every new directory's sub-initial-sync (md, nd, d/e2, empty: 2 + 4); we count
    // sync passes only.
    assert_eq!(clsync.take_iterations(), ["1", "6"]);
    assert_eq!(ours.take_iterations(), ["1", "2"]);
    assert_same(&clsync, &ours);
    // And what reference §4.4 documents, on the records that are now known to be equal: the
    // watch dir's line ends in a space; a file's events aggregate (2|8); a new directory is
    // IN_CREATE|IN_ISDIR and so is what its walk found; rm -r gives IN_DELETE|IN_ISDIR|
    // IN_DELETE_SELF (§2.2).
    assert!(ours.calls[0].lists[&2].contains(&"sync nolabel 1073742080 ".to_string()));
    let batch = &ours.calls[1].lists[&2];
    for line in [
        "sync nolabel 10 a",
        "sync nolabel 266 c",
        "sync nolabel 512 d/b",
        "sync nolabel 1073742080 md",
        "sync nolabel 1073742080 md/m2",
        "sync nolabel 256 md/m2/g",
        "sync nolabel 1073743360 od",
    ] {
        assert!(
            batch.contains(&line.to_string()),
            "no {line:?} in {batch:#?}"
        );
    }
}

#[test]
fn direct_passes_the_include_list_in_argv_like_clsyncs_cp_call() {
    const MACRO_NAME: &str = "pct%TYPE%x";
    let sc = Scenario {
        name: "direct",
        mode: "direct",
        // The default arguments (%INCLUDE-LIST% %destination-dir%/), the logger instead of cp.
        options: |s, _| vec!["-D".into(), s.dst().into()],
        setup: |s, _| {
            let src = s.src();
            mkdirs(src.join("sub"));
            for f in ["f1", "f2", "-rf", MACRO_NAME, "sub/g"] {
                write(src.join(f), "x\n");
            }
        },
        initial_calls: one_call,
        events: |s| {
            let src = s.src();
            write(src.join("-new"), "new\n");
            append(src.join("f1"), "more\n");
            fs::remove_file(src.join("sub/g")).unwrap();
            fs::rename(src.join("f2"), src.join("f3")).unwrap();
            fs::create_dir(src.join("nd")).unwrap();
        },
        done: second_call,
    };
    let (mut clsync, mut ours) = run_both(&sc);
    dash_paths_as_ours(&mut clsync, 0, 1);
    unexpanded_names_as_ours(&mut clsync, &[MACRO_NAME], "synclist");
    clsync.sort_include_list(0, 1);
    ours.sort_include_list(0, 1);
    // KNOWN DIFFERENCE: CLSYNC_ITERATION (reference §6): clsync adds one for the new
    // directory nd.
    assert_eq!(clsync.take_iterations(), ["1", "3"]);
    assert_eq!(ours.take_iterations(), ["1", "2"]);
    assert_same(&clsync, &ours);
    // Reference §4.3: relative paths, the watch dir as `.`, deleted paths listed too, then
    // %destination-dir%/.
    let init = &ours.calls[0].argv;
    assert!(init.contains(&".".to_string()), "{init:?}");
    assert_eq!(init.last().unwrap(), "<ROOT>/dst/");
    assert!(ours.calls[1].argv.contains(&"sub/g".to_string()));
}

#[test]
fn rsyncshell_lists_ancestors_new_dirs_recursively_and_excludes_from_rules() {
    let sc = Scenario {
        name: "rsyncshell",
        mode: "rsyncshell",
        options: |s, _| vec!["-R".into(), s.path("rules").into()],
        setup: |s, _| {
            // Reference §4.5's tree and rules, plus a deep directory and one to remove.
            write(s.path("rules"), "-f\\.tmp$\n-d^sub/deep$\n+*\n");
            let src = s.src();
            for d in ["sub/deep", "keep", "x/y/z", "gone"] {
                mkdirs(src.join(d));
            }
            for f in [
                "a.tmp",
                "b.txt",
                "sub/deep/x",
                "keep/k.tmp",
                "x/y/z/old",
                "gone/g",
            ] {
                write(src.join(f), "x\n");
            }
        },
        initial_calls: one_call,
        events: |s| {
            let src = s.src();
            for f in ["c.tmp", "d.txt", "sub/deep/z", "x/y/z/new", "new*[x]\\y"] {
                write(src.join(f), "e\n");
            }
            move_in(s, "newd", &["q.tmp", "r"]);
            fs::create_dir(src.join("e")).unwrap();
            fs::remove_file(src.join("b.txt")).unwrap();
            // Excluded by the rules, deleted: not synced (a deletion is typed as a file).
            fs::remove_file(src.join("a.tmp")).unwrap();
            fs::remove_dir_all(src.join("gone")).unwrap();
        },
        done: second_call,
    };
    let (mut clsync, mut ours) = run_both(&sc);
    removed_dirs_recursive_as_ours(&mut clsync, &["gone"]);
    // KNOWN DIFFERENCE: CLSYNC_ITERATION (reference §6): clsync adds one per new directory
    // (newd, e).
    assert_eq!(clsync.take_iterations(), ["1", "4"]);
    assert_eq!(ours.take_iterations(), ["1", "2"]);
    assert_same(&clsync, &ours);
    // Reference §4.5 and §4.9 on the (equal) records: the initial sync is `/***` with the
    // rules' excludes; a new directory is `/dir/***`, with its own excluded files in the
    // exclude list; every include has its ancestors; an excluded file (c.tmp) and anything in
    // an unwalked directory (sub/deep/z) are left out; wildcards are escaped.
    let lines = |c: usize, i: usize| ours.calls[c].lists[&i].clone();
    assert_eq!(lines(0, 2), ["", "/***"]);
    assert_eq!(lines(0, 3), ["", "/a.tmp", "/keep/k.tmp", "/sub/deep"]);
    let batch = lines(1, 2);
    for l in [
        "/newd/***",
        "/e/***",
        "/d.txt",
        "/b.txt",
        "/x",
        "/x/y",
        "/x/y/z",
        "/x/y/z/new",
    ] {
        assert!(batch.contains(&l.to_string()), "no {l:?} in {batch:#?}");
    }
    assert!(
        batch.contains(&r"/new\\*\\[x\\]\\\\y".to_string()),
        "{batch:#?}"
    );
    assert!(!batch
        .iter()
        .any(|l| l.contains(".tmp") || l.contains("sub/deep")));
    assert_eq!(lines(1, 3), ["", "/newd/q.tmp"]);
}

#[test]
fn simple_runs_once_per_event_with_event_mask_and_type() {
    let sc = Scenario {
        name: "simple",
        mode: "simple",
        options: |_, _| {
            os_args(&[
                "-l",
                "lbl",
                "--",
                "%TYPE%",
                "%label%",
                "mask=%EVENT-MASK%",
                "%EVENT-MASK%",
                "%INCLUDE-LIST%",
            ])
        },
        setup: small_tree,
        // One call per node, the watch dir included.
        initial_calls: |s| snapshot(&s.src()).len(),
        events: small_events,
        done: |c| {
            c.iter()
                .any(|c| c.argv.last().is_some_and(|p| p.ends_with("/src/empty")))
        },
    };
    let (mut clsync, mut ours) = run_both(&sc);
    stale_status_as_ours(&mut clsync);
    walks_in_preorder_then_sorted(&mut clsync, "clsync", 3);
    walks_in_preorder_then_sorted(&mut ours, "ours", 3);
    // KNOWN DIFFERENCE: CLSYNC_ITERATION (reference §6, §9.8). In mode simple clsync's initial
    // calls see 0 and later calls 1 plus the new directories walked so far: c, a, d/b and md's
    // walk see 1; nd's walk 2; mv1, mv2, d/e and d/e2's walk 3; the rest 4. Ours counts every
    // call as a pass (the initial sync's calls are one pass, 1).
    let n = clsync.initial;
    let mut want_clsync = vec!["0".to_string(); n];
    for (value, calls) in [("1", 10), ("2", 4), ("3", 5), ("4", 5)] {
        want_clsync.extend(std::iter::repeat_n(value.to_string(), calls));
    }
    let mut want_ours = vec!["1".to_string(); n];
    want_ours.extend((0..ours.calls.len() - n).map(|i| (i + 2).to_string()));
    assert_eq!(clsync.take_iterations(), want_clsync);
    assert_eq!(ours.take_iterations(), want_ours);
    assert_same(&clsync, &ours);
    // Reference §4.2: the walk's masks (directories 1073742080, files 256), and one call per
    // raw event, so the append to `a` is two calls, IN_MODIFY then IN_CLOSE_WRITE.
    let calls: Vec<(&str, &str)> = ours
        .calls
        .iter()
        .map(|c| (c.argv[3].as_str(), c.argv[4].as_str()))
        .collect();
    assert_eq!(calls[0], ("1073742080", "<ROOT>/src"));
    let a = "<ROOT>/src/a";
    assert!(
        calls.windows(2).any(|w| w == [("2", a), ("8", a)]),
        "{calls:#?}"
    );
    assert!(ours.calls.iter().all(|c| c.argv[0] == "sync"
        && c.argv[1] == "lbl"
        && c.argv[2] == format!("mask={}", c.argv[3])));
}

/// Mode simple: a walk's calls (a new directory, or the watch dir at the initial sync, with
/// IN_CREATE|IN_ISDIR, then everything found below it, with IN_CREATE or IN_CREATE|IN_ISDIR)
/// come in pre-order, as clsync's fts walk gives them (reference §4.2), but with siblings in
/// readdir order, which is no order a handler can rely on: each such run of calls is checked
/// to be a pre-order walk, then sorted by path. `mask_at` is the %EVENT-MASK% argument's index.
fn walks_in_preorder_then_sorted(r: &mut Record, who: &str, mask_at: usize) {
    const CREATED_DIR: &str = "1073742080";
    const CREATED_FILE: &str = "256";
    fn path_of(c: &Call) -> String {
        c.argv.last().cloned().unwrap_or_default()
    }
    let mut i = 0;
    while i < r.calls.len() {
        if r.calls[i].argv[mask_at] != CREATED_DIR {
            i += 1;
            continue;
        }
        let below = format!("{}/", path_of(&r.calls[i]));
        // The initial sync's walk ends where the events start (a file created in the watch
        // dir is an IN_CREATE below it too).
        let end = if i < r.initial {
            r.initial
        } else {
            r.calls.len()
        };
        let mut j = i + 1;
        while j < end
            && path_of(&r.calls[j]).starts_with(&below)
            && [CREATED_DIR, CREATED_FILE].contains(&r.calls[j].argv[mask_at].as_str())
        {
            j += 1;
        }
        let paths: Vec<String> = r.calls[i..j].iter().map(path_of).collect();
        assert_preorder(&paths, who);
        r.calls[i + 1..j].sort_by_key(path_of);
        i = j;
    }
}

/// Panics unless `paths` (the first one the walk's top) is a pre-order walk: every path's
/// parent is on the branch that leads to the path before it.
#[track_caller]
fn assert_preorder(paths: &[String], who: &str) {
    let mut branch: Vec<&str> = Vec::new();
    for p in paths {
        while branch
            .last()
            .is_some_and(|top| !p.starts_with(&format!("{top}/")))
        {
            branch.pop();
        }
        let parent = p.rsplit_once('/').map_or("", |(d, _)| d);
        assert!(
            (branch.is_empty() && p == &paths[0]) || branch.last() == Some(&parent),
            "{who}: not a pre-order walk at {p:?}: {paths:#?}"
        );
        branch.push(p);
    }
}

/// The authorized_keys example of clsync's manual (EXAMPLES, "Syncing 'authorized_keys'
/// files"): only each user's ~/.ssh/authorized_keys is synced, with
/// `-Mdirect -Scp ... -- -Pfp --parents %INCLUDE-LIST% %destination-dir%` (the logger instead
/// of cp). The manual writes the rules with printf and no final newline.
const AUTHORIZED_KEYS_RULES: &str =
    "+w^$\n+w^[^/]+$\n+W^[^/]+/.ssh$\n+f^[^/]+/.ssh/authorized_keys$\n-*";

fn authorized_keys_scenario(name: &'static str, setup: fn(&Scratch, Impl)) -> Scenario {
    Scenario {
        name,
        mode: "direct",
        options: |s, _| {
            let mut v = vec![
                "-D".into(),
                s.dst().into(),
                "-R".into(),
                s.path("rules").into(),
            ];
            v.extend(os_args(&[
                "--",
                "-Pfp",
                "--parents",
                "%INCLUDE-LIST%",
                "%destination-dir%",
            ]));
            v
        },
        setup,
        initial_calls: one_call,
        events: |s| {
            let src = s.src();
            append(src.join("alice/.ssh/authorized_keys"), "key2\n");
            append(src.join("alice/.ssh/id_rsa"), "secret2\n");
            write(src.join("alice/docs/y"), "y\n");
            move_in(
                s,
                "carol",
                &[".ssh/authorized_keys", ".ssh/id_rsa", "notes"],
            );
            fs::remove_file(src.join("bob/.ssh/authorized_keys")).unwrap();
            write(src.join("top2"), "t\n");
            // Deletions the rules exclude are not synced either (cp would fail on them).
            fs::remove_file(src.join("alice/.bashrc")).unwrap();
            fs::remove_dir_all(src.join("alice/docs")).unwrap();
            fs::remove_file(src.join("top")).unwrap();
        },
        done: second_call,
    }
}

fn homes(s: &Scratch) {
    let src = s.src();
    for d in ["alice/.ssh", "alice/docs", "bob/.ssh"] {
        mkdirs(src.join(d));
    }
    for f in [
        "alice/.ssh/authorized_keys",
        "alice/.ssh/id_rsa",
        "alice/.bashrc",
        "alice/docs/x",
        "bob/.ssh/authorized_keys",
        "top",
    ] {
        write(src.join(f), "x\n");
    }
}

fn check_authorized_keys(sc: &Scenario) {
    let (mut clsync, mut ours) = run_both(sc);
    clsync.sort_include_list(2, 1);
    ours.sort_include_list(2, 1);
    // KNOWN DIFFERENCE: CLSYNC_ITERATION (reference §6): clsync adds one for the new home
    // directory carol.
    assert_eq!(clsync.take_iterations(), ["1", "3"]);
    assert_eq!(ours.take_iterations(), ["1", "2"]);
    assert_same(&clsync, &ours);
    // And the example does what it says: only authorized_keys files, each time.
    for c in &ours.calls {
        let paths = &c.argv[2..c.argv.len() - 1];
        assert!(
            !paths.is_empty() && paths.iter().all(|p| p.ends_with("/.ssh/authorized_keys")),
            "{paths:?}"
        );
    }
}

#[test]
fn rules_file_authorized_keys_example_from_the_manual() {
    // Both read the example's rules with a final newline: clsync 0.4.5 cuts the last character
    // of every line, so without it the final -* is lost and everything is synced (reference
    // §3.1); the next test covers the manual's exact bytes.
    check_authorized_keys(&authorized_keys_scenario("rules", |s, _| {
        write(s.path("rules"), &format!("{AUTHORIZED_KEYS_RULES}\n"));
        homes(s);
    }));
}

#[test]
fn rules_file_without_final_newline_keeps_its_last_rule() {
    // man/clsync.1, RULES: "a trailing newline and carriage return are stripped (clsync cuts the
    // last character, so a final rule without newline was lost)". Ours reads the manual's
    // rules exactly as its printf writes them, without the final newline, and must do what
    // clsync does with the rules the manual means (the same rules with the newline).
    check_authorized_keys(&authorized_keys_scenario("rules-nonl", |s, which| {
        let rules = match which {
            Impl::Clsync => format!("{AUTHORIZED_KEYS_RULES}\n"),
            Impl::Ours => AUTHORIZED_KEYS_RULES.to_string(),
        };
        write(s.path("rules"), &rules);
        homes(s);
    }));
}
