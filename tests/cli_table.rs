//! Command-line and configuration-file parsing, table-driven against the real clsync 0.4.5
//! (`/usr/bin/clsync`, Debian's; CI installs it): "an existing clsync command line or keyfile
//! config runs unchanged on ours". Each row is a command line (and optionally a keyfile given
//! with `-H @CONF@`) that both binaries run, each in a fresh scratch tree, with a handler that
//! logs its argv, CLSYNC_STATUS, CLSYNC_ITERATION and the lines of its list file, then exits
//! with the row's code. Rows that start use `--only-initialsync`, so a run is one handler call.
//!
//! A row states the outcome clsync 0.4.5 was seen to give, and both binaries are held to it:
//! - the exit code (for an error row: both fail with this code; clsync exits with the errno of
//!   the first failure: 22, 2, 13, 14, 20, or 255 for `-H` problems; messages may differ);
//! - for a row that starts, the handler's argv (normalised: the scratch root is `<ROOT>`, a list
//!   file `<list>`, the daemon's pid `<PID>`), when the row gives it;
//! - and the two normalised records (every call: argv, the two variables, the list's lines) must
//!   be equal.
//!
//! Rows marked `ours_only` are where clsync 0.4.5 crashes or hangs (reference §1.4, §1.5, §9:
//! a value starting with `%%` or a lone `%` segfaults, a quoted last `--` word is dropped, `\"`
//! hangs, an inheritance cycle hangs, an empty `--add-permitted-hook-files` hangs, a
//! `config-block` key segfaults) or where man clsync.1 documents a deliberate difference: only
//! our outcome is checked there. Every run starts in its scratch root (through `env -C`), so
//! rows can use relative paths.

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const REFERENCE: &str = "/usr/bin/clsync";

/// `/usr/bin/clsync`, checked once to be clsync 0.4.5 (a missing reference fails the test).
fn reference_clsync() -> PathBuf {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let out = Command::new(REFERENCE)
            .arg("-V")
            .output()
            .map_err(|e| format!("cannot run {REFERENCE} (apt-get install clsync): {e}"))?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if !text.contains("clsync v0.4.5") {
            return Err(format!("{REFERENCE} is not clsync 0.4.5: {text}"));
        }
        Ok(())
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
    PathBuf::from(REFERENCE)
}

/// One row of the table.
struct Row {
    name: &'static str,
    /// The arguments: `@SRC@` is the watch dir, `@H@` the logging handler, `@CONF@` the keyfile,
    /// `@ROOT@` the scratch root.
    args: &'static [&'static str],
    /// The keyfile's text (the same placeholders), written to `@CONF@`.
    conf: Option<&'static str>,
    /// The handler's exit code.
    handler_exit: i32,
    /// The exit code clsync 0.4.5 gives, and ours must.
    exit: i32,
    /// The first handler call's argv (normalised), if the row pins it.
    argv: Option<&'static [&'static str]>,
    /// Only ours is run (clsync crashes or hangs, or a documented difference).
    ours_only: bool,
}

const fn row(name: &'static str, args: &'static [&'static str], exit: i32) -> Row {
    Row {
        name,
        args,
        conf: None,
        handler_exit: 0,
        exit,
        argv: None,
        ours_only: false,
    }
}

impl Row {
    const fn argv(mut self, argv: &'static [&'static str]) -> Row {
        self.argv = Some(argv);
        self
    }
    const fn conf(mut self, conf: &'static str) -> Row {
        self.conf = Some(conf);
        self
    }
    const fn handler_exit(mut self, code: i32) -> Row {
        self.handler_exit = code;
        self
    }
    const fn ours_only(mut self) -> Row {
        self.ours_only = true;
        self
    }
}

/// The mode shell defaults: `synclist %label% %INCLUDE-LIST-PATH%`.
const DEFAULT_ARGS: &[&str] = &["synclist", "nolabel", "<list>"];

/// The logging handler: `call`, one `arg` line per argument, the two variables, one `line` per
/// line of a list file argument (sorted: clsync writes hash order), `end`.
fn handler_script(log: &Path, exit: i32) -> String {
    format!(
        r#"#!/bin/sh
{{
echo call
for a in "$@"; do printf 'arg %s\n' "$a"; done
printf 'env CLSYNC_STATUS=%s\n' "$CLSYNC_STATUS"
printf 'env CLSYNC_ITERATION=%s\n' "$CLSYNC_ITERATION"
for a in "$@"; do
    case "$a" in */.clsync-list.*) sort "$a" | sed 's/^/line /';; esac
done
echo end
}} >> '{}'
exit {exit}
"#,
        log.display()
    )
}

/// What a run gave: the exit code (-1 for a signal or a run that had to be killed) and the
/// normalised record.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    exit: i32,
    record: Vec<String>,
}

impl Outcome {
    /// The first call's argv.
    fn first_argv(&self) -> Option<Vec<&str>> {
        let start = self.record.iter().position(|l| l == "call")?;
        Some(
            self.record[start + 1..]
                .iter()
                .take_while(|l| *l != "end")
                .filter_map(|l| l.strip_prefix("arg "))
                .collect(),
        )
    }
}

fn fill(text: &str, s: &Scratch) -> String {
    text.replace("@SRC@", &s.src().display().to_string())
        .replace("@H@", &s.path("handler.sh").display().to_string())
        .replace("@CONF@", &s.path("conf").display().to_string())
        .replace("@ROOT@", &s.root().display().to_string())
}

/// Runs `row` with `program` in a fresh scratch tree, from its root.
fn run(row: &Row, program: &Path, tag: &str) -> Outcome {
    let s = Scratch::new(&format!("clitab-{}-{tag}", row.name));
    // clsync makes its list dir as nobody (its default --uid); TMPDIR is shared and sticky.
    fs::set_permissions(s.tmp(), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(s.src().join("file"), "x\n").unwrap();
    let log = s.path("calls.log");
    write_script(
        &s.path("handler.sh"),
        &handler_script(&log, row.handler_exit),
    );
    if let Some(c) = row.conf {
        fs::write(s.path("conf"), fill(c, &s)).unwrap();
    }
    // Started in the scratch root (env -C execs it there, so the pid stays), for relative paths.
    let mut args: Vec<OsString> = vec!["-C".into(), s.root().into(), program.into()];
    args.extend(row.args.iter().map(|a| fill(a, &s).into()));
    let mut d = Daemon::spawn(Path::new("/usr/bin/env"), &s, &args, &[]);
    let exit = match d.wait_exit(Duration::from_secs(30)) {
        Some(st) => st.code().unwrap_or(-1),
        None => -1,
    };
    let pid = d.pid.to_string();
    drop(d);
    let root = s.root().display().to_string();
    let record = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            if l.starts_with("arg ") && l.contains("/.clsync-list.") {
                return "arg <list>".to_string();
            }
            let l = l.replace(&root, "<ROOT>");
            // The pid of a %PID% expansion, only inside arguments and list lines.
            if l.starts_with("arg ") || l.starts_with("line ") {
                l.replace(&pid, "<PID>")
            } else {
                l
            }
        })
        .collect();
    Outcome { exit, record }
}

/// Checks one row; an error message if it does not hold.
fn check(row: &Row) -> Result<(), String> {
    let ours = run(row, &clsync_bin(), "ours");
    let clsync = (!row.ours_only).then(|| run(row, &reference_clsync(), "clsync"));
    let mut errs = Vec::new();
    let mut sides = vec![("ours", &ours)];
    if let Some(c) = &clsync {
        sides.push(("clsync 0.4.5", c));
    }
    for (who, o) in &sides {
        if o.exit != row.exit {
            errs.push(format!("{who} exited {} (want {})", o.exit, row.exit));
        }
        if let Some(want) = row.argv {
            if o.first_argv().as_deref() != Some(want) {
                errs.push(format!(
                    "{who}: first handler argv {:?} (want {want:?})",
                    o.first_argv()
                ));
            }
        }
    }
    if let Some(c) = &clsync {
        if c.record != ours.record {
            errs.push(format!(
                "records differ:\n  clsync 0.4.5: {:?}\n  ours:         {:?}",
                c.record, ours.record
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "row {} ({}):\n  {}",
            row.name,
            row.args.join(" "),
            errs.join("\n  ")
        ))
    }
}

/// Runs every row (four at a time) and fails with every row that does not hold.
fn check_table(rows: &[Row]) {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(r) = rows.get(i) else { break };
                if let Err(e) = check(r) {
                    failures.lock().unwrap().push(e);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// `-M shell -W @SRC@ -S @H@ -H /NULL/ --only-initialsync`, then the row's own arguments.
macro_rules! base {
    ($($a:expr),* $(,)?) => {
        &["-Mshell", "-W", "@SRC@", "-S", "@H@", "-H", "/NULL/", "--only-initialsync", $($a),*]
    };
}

/// `-M shell -W @SRC@ -S @H@ -H @CONF@ --only-initialsync`, then the row's own arguments.
macro_rules! run {
    ($($a:expr),* $(,)?) => {
        &["-Mshell", "-W", "@SRC@", "-S", "@H@", "-H", "@CONF@", "--only-initialsync", $($a),*]
    };
}

#[test]
fn command_lines_behave_like_clsync_0_4_5() {
    let rows = [
        row("baseline", base!(), 0).argv(DEFAULT_ARGS),
        // Long options by unambiguous prefixes; ambiguous ones are errors.
        row(
            "prefixes",
            &[
                "--mode=shell",
                "--watch=@SRC@",
                "--sync-handler=@H@",
                "--config-f=/NULL/",
                "--only-init",
                "--lab=x",
                "--sync-handler-u=0",
            ],
            0,
        )
        .argv(&["synclist", "x", "<list>"]),
        row("ambiguous-prefix", base!("--sync=x"), 22),
        row("ambiguous-sync-h", base!("--sync-h=@H@"), 22),
        // help and version take part (--v, --ver: verbose or version; --h: have-recursive-sync
        // or help), options only this build has do not (--check-: check-execvp-arguments,
        // not also check-config; --for: forget-privthread-info, not also forbid-devices).
        row("ambiguous-v", base!("--v"), 22),
        row("ambiguous-ver", base!("--ver"), 22),
        row("ambiguous-h", base!("--h"), 22),
        row("prefix-vers", base!("--vers"), 0),
        row(
            "prefix-ours-only-options-ignored",
            base!("--check-", "--for"),
            0,
        )
        .argv(DEFAULT_ARGS),
        // Optional arguments attach; a separate one is a handler argument.
        row("debug-attached", base!("-d5"), 0).argv(DEFAULT_ARGS),
        row("debug-separate", base!("-d", "5"), 0).argv(&["5"]),
        row("debug-twice", base!("-d", "-d", "-v0"), 0).argv(DEFAULT_ARGS),
        row("debug-empty", base!("--debug="), 0).argv(DEFAULT_ARGS),
        row("quiet", base!("-q"), 0).argv(DEFAULT_ARGS),
        row("debug-base-0", base!("-d0x5", "--debug=010"), 0).argv(DEFAULT_ARGS),
        row("debug-not-a-number", base!("--debug=x"), 22),
        // What follows a flag's letter is its number: no clusters of flags.
        row("cluster-dd", base!("-dd"), 22),
        row("cluster-qd", base!("-qd"), 22),
        row("cluster-vvv", base!("-vvv"), 22),
        row("cluster-flag-option", base!("-Ulx"), 22),
        // What follows an option's letter is its value, `=` included.
        row("short-equals-value", base!("-l=x"), 0).argv(&["synclist", "=x", "<list>"]),
        row("short-equals-number", base!("-w=3"), 22),
        // -x: comma lists, repeats accumulate, a 0 element clears what came before.
        row("x-none", base!(), 23).handler_exit(23),
        row("x-0-23", base!("-x", "0,23"), 0).handler_exit(23),
        row("x-23-0", base!("-x", "23,0"), 23).handler_exit(23),
        row("x-0-x-23", base!("-x", "0", "-x", "23"), 0).handler_exit(23),
        row("x-23-x-0", base!("-x", "23", "-x", "0"), 23).handler_exit(23),
        row("x-attached", base!("-x23"), 0).handler_exit(23),
        row("x-long", base!("--ignore-exitcode=24,23"), 0).handler_exit(23),
        row("x-empty", base!("-x", ""), 23).handler_exit(23),
        // -x is decimal (atoi), modulo 256, and an empty element clears like 0.
        row("x-leading-zero", base!("-x", "023"), 0).handler_exit(23),
        row("x-modulo", base!("-x", "279"), 0).handler_exit(23),
        row("x-empty-element", base!("-x", "23,,24"), 23).handler_exit(23),
        row("x-hex", base!("-x", "0x17"), 22).handler_exit(23),
        row("x-sign", base!("-x", "+23"), 22).handler_exit(23),
        // Flags with attached numbers; =0 and = turn them off.
        row("b0", base!("-b0"), 0).argv(DEFAULT_ARGS),
        row("background-empty", base!("--background="), 0),
        row("exit-on-no-events-0", base!("--exit-on-no-events=0"), 0),
        row("exit-on-no-events-empty", base!("--exit-on-no-events="), 0),
        row("exit-on-no-events-1", base!("--exit-on-no-events=1"), 22),
        row("exit-on-no-events", base!("--exit-on-no-events"), 22),
        // Labels in every spelling; a separate value is taken as it is.
        row("label-empty", base!("--label="), 0).argv(&["synclist", "", "<list>"]),
        row("label-long-separate", base!("--label", "x"), 0).argv(&["synclist", "x", "<list>"]),
        row("label-short-separate", base!("-l", "x"), 0).argv(&["synclist", "x", "<list>"]),
        row("label-short-attached", base!("-lx"), 0).argv(&["synclist", "x", "<list>"]),
        row("label-dash-value", base!("-l", "-x"), 0).argv(&["synclist", "-x", "<list>"]),
        row("label-missing-value", base!("-l"), 22),
        row("mode-missing-value", base!("-M"), 22),
        // %name% in values.
        row("expand-option", base!("--label=%mode%x"), 0).argv(&["synclist", "shellx", "<list>"]),
        row("expand-pid", base!("--label=a%PID%b"), 0).argv(&["synclist", "a<PID>b", "<list>"]),
        row("expand-unknown", base!("--label=a%nonexistent%b"), 0)
            .argv(&["synclist", "ab", "<list>"]),
        row("expand-unset", base!("--label=a%status-file%b"), 0)
            .argv(&["synclist", "ab", "<list>"]),
        row("expand-only-unknown", base!("--label=%nonexistent%"), 0).argv(&[
            "synclist",
            "%nonexistent%",
            "<list>",
        ]),
        row("expand-nothing-emitted", base!("--label=%a%%b%"), 0)
            .argv(&["synclist", "%a%%b%", "<list>"]),
        row("expand-truncated", base!("--label=100%"), 0).argv(&["synclist", "100", "<list>"]),
        row("expand-percent", base!("--label=a%%b"), 0).argv(&["synclist", "a%b", "<list>"]),
        // Values are expanded as they are read: only what was given before counts (the label
        // is nolabel from the start; defaults and flags are not stored values).
        row("expand-default-number", base!("--label=x%delay-sync%y"), 0)
            .argv(&["synclist", "xy", "<list>"]),
        row("expand-flag", base!("--label=x%only-initialsync%y"), 0)
            .argv(&["synclist", "xy", "<list>"]),
        row(
            "expand-given-later",
            base!("--label=x%output%y", "-Ystderr"),
            0,
        )
        .argv(&["synclist", "xy", "<list>"]),
        row(
            "expand-given-earlier",
            base!("-Ystderr", "--label=x%output%y"),
            0,
        )
        .argv(&["synclist", "xstderry", "<list>"]),
        row(
            "expand-repeated-option",
            base!("-l", "a", "-l", "%label%b"),
            0,
        )
        .argv(&["synclist", "ab", "<list>"]),
        // -S sees the label of its time: nolabel, so @ROOT@/nolabel.sh, which does not exist.
        row(
            "expand-label-after-handler",
            &[
                "-Mshell",
                "-W",
                "@SRC@",
                "-S",
                "@ROOT@/%label%.sh",
                "-l",
                "handler",
                "-H",
                "/NULL/",
                "--only-initialsync",
            ],
            2,
        ),
        row(
            "expand-label-before-handler",
            &[
                "-Mshell",
                "-W",
                "@SRC@",
                "-l",
                "handler",
                "-S",
                "@ROOT@/%label%.sh",
                "-H",
                "/NULL/",
                "--only-initialsync",
            ],
            0,
        )
        .argv(&["synclist", "handler", "<list>"]),
        // Positional arguments, before and after --, and '' for the defaults.
        row("positional", base!("p1", "--", "p2", "%label%", "-W"), 0)
            .argv(&["p1", "p2", "nolabel", "-W"]),
        row("positional-empty", base!(""), 0).argv(DEFAULT_ARGS),
        row("positional-mixed", base!("p1", "-l", "x", "%label%"), 0).argv(&["p1", "x"]),
        row(
            "label-double-dash-value",
            base!("--label", "--", "%label%"),
            0,
        )
        .argv(&["--"]),
        // clsync's long options `--` and `---`: `----=ARGS` is split like the config key, and
        // repeats append; positional arguments replace them.
        row("double-dash-option", base!("----=a \"b c\" d", "----=e"), 0)
            .argv(&["a", "b c", "d", "e"]),
        row(
            "double-dash-option-and-positional",
            base!("----=a", "p1"),
            0,
        )
        .argv(&["p1"]),
        // Relative paths from the start directory; a bare -S name found there is that file.
        row(
            "relative-paths",
            &[
                "-Mshell",
                "-W",
                "src",
                "-S",
                "handler.sh",
                "-H",
                "/NULL/",
                "--only-initialsync",
            ],
            0,
        )
        .argv(DEFAULT_ARGS),
        row(
            "options-after-double-dash",
            &["-Mshell", "--", "-W", "@SRC@", "-S", "@H@", "-H", "/NULL/"],
            14,
        ),
        // Empty values (reference §1.3).
        row("pid-file-empty", base!("--pid-file="), 2),
        row("status-file-empty", base!("--status-file="), 2),
        row("lists-dir-empty", base!("--lists-dir="), 2),
        row("destination-empty", base!("--destination-dir="), 2),
        row(
            "watch-dir-empty",
            &["-Mshell", "--watch-dir=", "-S", "@H@", "-H", "/NULL/"],
            2,
        ),
        row(
            "sync-handler-empty",
            &["-Mshell", "-W", "@SRC@", "--sync-handler=", "-H", "/NULL/"],
            2,
        ),
        row("output-empty", base!("-Ysyslog", "--output="), 0).argv(DEFAULT_ARGS),
        row("threading-empty", base!("--threading="), 0).argv(DEFAULT_ARGS),
        row("monitor-empty", base!("--monitor="), 0).argv(DEFAULT_ARGS),
        row(
            "numbers-empty",
            base!("--delay-sync=", "--retries=", "-k", " "),
            0,
        ),
        row("uid-gid-empty", base!("--uid=", "--gid="), 0).argv(DEFAULT_ARGS),
        row("splitting-empty", base!("--splitting="), 0).argv(DEFAULT_ARGS),
        row("dump-dir-empty", base!("--dump-dir="), 0).argv(DEFAULT_ARGS),
        row("rules-file-empty", base!("--rules-file="), 0).argv(DEFAULT_ARGS),
        row(
            "preserve-capabilities-empty",
            base!("--preserve-capabilities="),
            0,
        ),
        row(
            "empty-unsets",
            base!(
                "--config-block=",
                "--exit-hook=",
                "--pre-exit-hook=",
                "--standby-file=",
                "--modification-signature=",
                "--cancel-syscalls=",
                "--detach-network=",
                "--inherit-capabilities="
            ),
            0,
        ),
        // Numbers: strtol base 0.
        row("numbers-bases", base!("-w", "0x10", "-t", "010"), 0),
        row("number-garbage", base!("-w", "abc"), 22),
        // Required options and bad values: the errno of the first failure.
        row(
            "no-watch-dir",
            &["-Mshell", "-S", "@H@", "-H", "/NULL/"],
            14,
        ),
        row("nothing", &["-H", "/NULL/"], 14),
        row("no-mode", &["-W", "@SRC@", "-S", "@H@", "-H", "/NULL/"], 22),
        row(
            "no-sync-handler",
            &["-Mshell", "-W", "@SRC@", "-H", "/NULL/"],
            22,
        ),
        row(
            "rsyncdirect-no-destination",
            &["-Mrsyncdirect", "-W", "@SRC@", "-H", "/NULL/"],
            22,
        ),
        // Paths fail with their errno, and before a missing --mode (clsync resolves them first).
        row(
            "watch-dir-a-file",
            &["-Mshell", "-W", "@H@", "-S", "@H@", "-H", "/NULL/"],
            20,
        ),
        row(
            "watch-dir-through-a-file",
            &["-Mshell", "-W", "@H@/x", "-S", "@H@", "-H", "/NULL/"],
            20,
        ),
        row("handler-not-executable", base!("-S", "/etc/passwd"), 13),
        row("handler-a-directory", base!("-S", "@SRC@"), 13),
        row("handler-through-a-file", base!("-S", "@H@/x"), 20),
        row(
            "exit-hook-not-executable",
            base!("--exit-hook=/etc/passwd"),
            13,
        ),
        row(
            "no-mode-watch-dir-missing",
            &["-W", "nonexistent", "-S", "@H@", "-H", "/NULL/"],
            2,
        ),
        row(
            "no-mode-destination-missing",
            &[
                "-W",
                "@SRC@",
                "-S",
                "@H@",
                "-D",
                "nonexistent",
                "-H",
                "/NULL/",
            ],
            2,
        ),
        row("mode-bad", base!("--mode=bogus"), 22),
        row("mode-empty", base!("--mode="), 22),
        row("unknown-long", base!("--bogus"), 22),
        row("unknown-short", base!("-j"), 22),
        row("version", base!("-V"), 0),
        row(
            "check-execvp-direct",
            base!("-Mdirect", "--check-execvp-arguments"),
            22,
        ),
        row("version-0", base!("--version=0"), 0),
        // Where clsync 0.4.5 crashes or hangs: our sane outcome only.
        row("ours-percent-percent-first", base!("--label=%%x"), 0)
            .argv(&["synclist", "%x", "<list>"])
            .ours_only(),
        row("ours-lone-percent", base!("--label=%"), 0)
            .argv(&["synclist", "%", "<list>"])
            .ours_only(),
        row(
            "ours-permitted-hooks-empty",
            base!("--add-permitted-hook-files="),
            0,
        )
        .ours_only(),
        // clsync 0.4.5 appends its default initialsync set to a `-----=` set when no handler
        // arguments are given (man clsync.1, --have-recursive-sync).
        row(
            "ours-initialsync-set-alone",
            base!("--have-recursive-sync", "-----=a %label% b"),
            0,
        )
        .argv(&["a", "nolabel", "b"])
        .ours_only(),
        // Documented differences (man clsync.1): a rules file that cannot be read stops the
        // start (clsync runs without rules when a relative one does not resolve); a file the
        // daemon writes may not lie in the watched tree (clsync writes src/pf).
        row(
            "ours-rules-file-missing",
            base!("-R", "nonexistent-rules"),
            2,
        )
        .ours_only(),
        row("ours-pid-file-in-tree", base!("--pid-file=pf"), 22).ours_only(),
        // A negative number is refused (clsync 0.4.5 wraps it: --retries=-1 is 4294967295).
        row("ours-negative-number", base!("--retries=-1"), 22).ours_only(),
    ];
    check_table(&rows);
}

#[test]
fn keyfile_configs_behave_like_clsync_0_4_5() {
    let rows = [
        // Comma lists; `--` split on blanks with quotes; CLI positional arguments first.
        row("lists-and-args", run!("p1"), 0)
            .conf("[default]\nlabel = fromfile\nignore-exitcode = 23,24\n-- = a \"b c\" d %label%\n")
            .handler_exit(24)
            .argv(&["p1", "a", "b c", "d", "fromfile"]),
        row("file-key-cli-wins", run!("-l", "cli"), 0)
            .conf("[default]\nlabel = fromfile\n")
            .argv(&["synclist", "cli", "<list>"]),
        row("file-args-after-double-dash-option", run!("----=a"), 0)
            .conf("[default]\n-- = c1 c2\n")
            .argv(&["a"]),
        row("file-list-cli-wins", run!("-x", "24"), 23)
            .conf("[default]\nignore-exitcode = 23\n")
            .handler_exit(23),
        row(
            "block-inherits",
            &["-W", "@SRC@", "-S", "@H@", "-H", "@CONF@", "--only-initialsync", "-K", "kid"],
            0,
        )
        .conf("[base]\nlabel = base\nmode = shell\n[kid]\nconfig-block-inherits = base\n-- = kid %label%\n")
        .argv(&["kid", "base"]),
        row(
            "no-implicit-inheritance",
            &["-W", "@SRC@", "-S", "@H@", "-H", "@CONF@", "--only-initialsync", "-K", "kid"],
            22,
        )
        .conf("[default]\nmode = shell\n[kid]\n-- = kid\n"),
        row(
            "inherits-on-cli",
            &[
                "-W",
                "@SRC@",
                "-S",
                "@H@",
                "-H",
                "@CONF@",
                "--only-initialsync",
                "-Kkid",
                "--config-block-inherits=base",
            ],
            0,
        )
        .conf("[base]\nmode = shell\n[kid]\n-- = kid\n")
        .argv(&["kid"]),
        row("block-missing", run!("-K", "nosuch"), 0)
            .conf("[default]\nlabel = x\n")
            .argv(DEFAULT_ARGS),
        // `-K ''` names the block "", which is missing: nothing is read.
        row("block-empty-name", run!("-K", ""), 0)
            .conf("[default]\nlabel = x\n")
            .argv(DEFAULT_ARGS),
        // `-H ''` is no -H: the search list (none of its files on a test machine, or the same
        // for both).
        row(
            "file-empty-name",
            &["-Mshell", "-W", "@SRC@", "-S", "@H@", "-H", "", "--only-initialsync"],
            0,
        ),
        row("parent-missing", run!(), 0)
            .conf("[default]\nconfig-block-inherits = nosuch\nlabel = x\n")
            .argv(&["synclist", "x", "<list>"]),
        row("file-missing", &["-Mshell", "-W", "@SRC@", "-S", "@H@", "-H", "@ROOT@/nonexistent"], 255),
        row("file-broken", run!(), 255).conf("[default]\ngarbage line\n"),
        row("file-empty-key", run!(), 255).conf("[default]\n= x\n"),
        row("file-key-before-block", run!(), 255).conf("label = x\n[default]\n"),
        row("file-empty-block-name", run!(), 255).conf("[]\nlabel = x\n"),
        row("file-bracket-in-block-name", run!("-K", "de]fault"), 255)
            .conf("[de]fault]\nlabel = x\n"),
        row(
            "file-not-regular",
            &["-Mshell", "-W", "@SRC@", "-S", "@H@", "-H", "/dev/null", "--only-initialsync"],
            255,
        ),
        row("file-empty", run!(), 0).conf("").argv(DEFAULT_ARGS),
        // GKeyFile drops the blanks after `=` and keeps trailing ones; CRLF lines are read.
        row("file-value-blanks", run!(), 0)
            .conf("[default]\r\n  label = \t x \t\r\n")
            .argv(&["synclist", "x \t", "<list>"]),
        row("file-word-trailing-blank", &["-W", "@SRC@", "-S", "@H@", "-H", "@CONF@"], 22)
            .conf("[default]\nmode = shell \n"),
        row("null-file", base!(), 0).conf("[default]\nlabel = x\n").argv(DEFAULT_ARGS),
        row("unknown-key", run!(), 0)
            .conf("[default]\nbogus-key = 1\nlabel = x\n")
            .argv(&["synclist", "x", "<list>"]),
        row("repeated-key", run!(), 0)
            .conf("[default]\nlabel = x\nlabel = y\n")
            .argv(&["synclist", "y", "<list>"]),
        row("repeated-block", run!(), 0)
            .conf("[default]\nlabel = x\n[other]\n[default]\nlabel = y\n")
            .argv(&["synclist", "y", "<list>"]),
        row("everything-in-file", &["-H", "@CONF@"], 0)
            .conf("[default]\n# comment\n\nwatch-dir = @SRC@\nsync-handler = @H@\nmode = shell\nonly-initialsync = 1\n")
            .argv(DEFAULT_ARGS),
        row("expand-in-file", run!(), 0)
            .conf("[default]\nlabel = %mode%-x\nexit-on-no-events = 0\n")
            .argv(&["synclist", "shell-x", "<list>"]),
        row("levels-in-file", run!(), 0).conf("[default]\ndebug = 2\nverbose = 0\n"),
        row("empty-words-in-file", run!(), 0).conf("[default]\noutput =\nthreading =\ndelay-sync =\n"),
        row("empty-handler-args-in-file", run!(), 0)
            .conf("[default]\n-- =\n")
            .argv(DEFAULT_ARGS),
        row("mode-bad-in-file", &["-W", "@SRC@", "-S", "@H@", "-H", "@CONF@"], 22)
            .conf("[default]\nmode = bogus\n"),
        row("number-bad-in-file", run!(), 22).conf("[default]\ndelay-sync = abc\n"),
        // Keys are expanded in clsync's option-table order (sync-handler before mode before
        // label), after the command line.
        row(
            "expand-in-table-order-handler",
            &["-Mshell", "-W", "@SRC@", "-H", "@CONF@", "--only-initialsync"],
            2,
        )
        .conf("[default]\nlabel = handler\nsync-handler = @ROOT@/%label%.sh\n"),
        row(
            "expand-in-table-order-mode",
            &["-W", "@SRC@", "-S", "@H@", "-H", "@CONF@", "--only-initialsync"],
            0,
        )
        .conf("[default]\nlabel = x%mode%\nmode = shell\n")
        .argv(&["synclist", "xshell", "<list>"]),
        row("expand-cli-value-in-file", run!("-w", "7"), 0)
            .conf("[default]\nlabel = %delay-sync%\n")
            .argv(&["synclist", "7", "<list>"]),
        row("version-in-file", run!(), 0).conf("[default]\nversion = 1\n"),
        // Whatever the value: the version, no sync (the records, both empty, are compared).
        row("version-0-in-file", run!(), 0).conf("[default]\nversion = 0\n"),
        // Flags and levels in a file are numbers as strtol reads them.
        row("flag-false-in-file", run!(), 22).conf("[default]\nexit-on-no-events = false\n"),
        row("flag-hex-0-in-file", run!(), 0).conf("[default]\nexit-on-no-events = 0x0\n"),
        row("flag-octal-0-in-file", run!(), 0).conf("[default]\nexit-on-no-events = 00\n"),
        row("flag-2-in-file", run!(), 22).conf("[default]\nexit-on-no-events = 2\n"),
        row("level-not-a-number-in-file", run!(), 22).conf("[default]\ndebug = x\n"),
        row("flag-0-in-file", &["-Mshell", "-W", "@SRC@", "-S", "@H@", "-H", "@CONF@"], 0)
            .conf("[default]\nexit-on-no-events = 0\nonly-initialsync = 1\n"),
        // Where clsync 0.4.5 drops or hangs: our sane outcome only.
        row("ours-quoted-last-word", run!(), 0)
            .conf("[default]\n-- = a \"b c\"\n")
            .argv(&["a", "b c"])
            .ours_only(),
        row("ours-escaped-quote", run!(), 0)
            .conf("[default]\n-- = a \\\"b\n")
            .argv(&["a", "\"b"])
            .ours_only(),
        // clsync 0.4.5 crashes on a config-block key; here it is ignored (the block is -K's).
        row("ours-config-block-key", run!(), 0)
            .conf("[default]\nconfig-block = x\n[x]\nlabel = x\n")
            .argv(DEFAULT_ARGS)
            .ours_only(),
        row("ours-percent-percent-first-in-file", run!(), 0)
            .conf("[default]\nlabel = %%x\n")
            .argv(&["synclist", "%x", "<list>"])
            .ours_only(),
        row("ours-inheritance-cycle", run!(), 255)
            .conf("[default]\nconfig-block-inherits = b\n[b]\nconfig-block-inherits = default\n")
            .ours_only(),
    ];
    check_table(&rows);
}
