//! Handler results and timing (reference §2.4, §5): retries and exit codes, -x, --ignore-failures,
//! -k killing a hanging handler, SIGHUP reloading rules (and refusing a broken file), and the
//! big-file queue. Ordering is asserted, never durations.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::fs;
use std::path::{Path, PathBuf};

/// A handler that appends one line per call (its first list file's lines, or "call") to
/// `calls.log`, then runs `tail` (shell code) — e.g. `exit 5` or `sleep 30`.
fn handler(s: &Scratch, tail: &str) -> (PathBuf, PathBuf) {
    let log = s.path("calls.log");
    let h = s.path("handler.sh");
    write_script(
        &h,
        &format!(
            "#!/bin/sh\necho \"call $$ $*\" >> {log}\nfor a in \"$@\"; do case \"$a\" in {tmp}/*) cat \"$a\" >> {log};; esac; done\n{tail}\n",
            log = log.display(),
            tmp = s.tmp().display()
        ),
    );
    (h, log)
}

fn calls(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("call "))
        .map(str::to_string)
        .collect()
}

fn log_text(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn failing_handler_exits_with_its_code_after_r_tries() {
    let s = Scratch::new("res-retries");
    let (h, log) = handler(&s, "exit 5");
    let mut d = Daemon::start(
        &s,
        &handler_args(&s, "shell", &h, &["-w0", "-t0", "-r3"]),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert_eq!(st.code(), Some(5), "stderr:\n{}", d.stderr());
    assert_eq!(calls(&log).len(), 3, "{}", log_text(&log));
    assert!(d.stderr().contains("after 3 tries"), "{}", d.stderr());
}

#[test]
fn ignored_exit_codes_count_as_success() {
    let s = Scratch::new("res-x");
    let (h, log) = handler(&s, "exit 5");
    let mut d = Daemon::start(
        &s,
        &handler_args(
            &s,
            "shell",
            &h,
            &["-w0", "-t0", "-x", "23,5", "--exit-on-no-events"],
        ),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert_eq!(st.code(), Some(0), "stderr:\n{}", d.stderr());
    assert_eq!(calls(&log).len(), 1);
    // `-x 0` clears the list again: then 5 is a failure.
    let s = Scratch::new("res-x0");
    let (h, _) = handler(&s, "exit 5");
    let mut d = Daemon::start(
        &s,
        &handler_args(&s, "shell", &h, &["-w0", "-t0", "-x", "5", "-x", "0"]),
        &[],
    );
    assert_eq!(
        d.wait_exit(START_TIMEOUT).and_then(|s| s.code()),
        Some(5),
        "{}",
        d.stderr()
    );
}

#[test]
fn ignore_failures_keeps_the_daemon_running() {
    let s = Scratch::new("res-ignore");
    let (h, log) = handler(&s, "exit 5");
    let mut d = Daemon::start(
        &s,
        &handler_args(&s, "shell", &h, &["-w0", "-t0", "--ignore-failures"]),
        &[],
    );
    d.wait_ready();
    fs::write(s.src().join("after"), b"x").unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || log_text(&log).contains(" after")),
        "{}",
        log_text(&log)
    );
    assert!(d.try_wait().is_none(), "the daemon ended: {}", d.stderr());
    assert!(d.stderr().contains("--ignore-failures"), "{}", d.stderr());
    d.stop();
}

#[test]
fn timeout_kills_a_hanging_handler_and_its_children() {
    let s = Scratch::new("res-timeout");
    let (h, log) = handler(
        &s,
        "sleep 300 & echo \"child $!\" >> $(dirname $0)/calls.log; wait",
    );
    let mut d = Daemon::start(
        &s,
        &handler_args(&s, "shell", &h, &["-w0", "-t0", "-k1"]),
        &[],
    );
    let st = d
        .wait_exit(START_TIMEOUT)
        .expect("daemon did not exit after -k");
    assert_ne!(
        st.code(),
        Some(0),
        "a timed-out sync is a failure: {}",
        d.stderr()
    );
    assert!(d.stderr().contains("exceeded -k 1s"), "{}", d.stderr());
    let child: i32 = log_text(&log)
        .lines()
        .find_map(|l| l.strip_prefix("child ").and_then(|p| p.trim().parse().ok()))
        .expect("no child pid");
    assert!(
        wait_for(SYNC_TIMEOUT, || Proc::of(child).is_none_or(|p| !p.alive())),
        "sleep {child} survived"
    );
}

#[test]
fn sighup_reloads_rules_and_keeps_them_when_the_new_file_is_broken() {
    let s = Scratch::new("res-hup");
    let rules = s.path("rules");
    fs::write(&rules, "-f\\.tmp$\n+*\n").unwrap();
    let (h, log) = handler(&s, "exit 0");
    let mut d = Daemon::start(
        &s,
        &handler_args(
            &s,
            "shell",
            &h,
            &["-w0", "-t0", "-R", rules.to_str().unwrap()],
        ),
        &[],
    );
    d.wait_ready();
    // A broken file is refused and the old rules stay: a .tmp file is still not synced.
    fs::write(&rules, "+*\n?broken\n").unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_log(SYNC_TIMEOUT, "keeping the current rules");
    assert!(d.stderr().contains("line 2"), "{}", d.stderr());
    fs::write(s.src().join("one.tmp"), b"x").unwrap();
    fs::write(s.src().join("marker1"), b"x").unwrap();
    assert!(wait_for(SYNC_TIMEOUT, || log_text(&log).contains(" marker1")));
    assert!(!log_text(&log).contains("one.tmp"), "{}", log_text(&log));
    // A valid file takes effect.
    fs::write(&rules, "+*\n").unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_log(SYNC_TIMEOUT, "rules reloaded");
    fs::write(s.src().join("two.tmp"), b"x").unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || log_text(&log).contains(" two.tmp")),
        "{}",
        log_text(&log)
    );
    d.stop();
}

#[test]
fn a_big_file_waits_for_the_big_file_queue() {
    let s = Scratch::new("res-bigfile");
    let (h, log) = handler(&s, "exit 0");
    let mut d = Daemon::start(
        &s,
        &handler_args(&s, "shell", &h, &["-w0", "-t0", "-T3", "-B", "100"]),
        &[],
    );
    d.wait_ready();
    // Moved in whole, so its size is known at the event (a file still being written is
    // classified by the size it has when its event is read, as in clsync).
    fs::write(s.path("big"), vec![b'x'; 4096]).unwrap();
    fs::rename(s.path("big"), s.src().join("big")).unwrap();
    fs::write(s.src().join("small"), b"x").unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || log_text(&log).contains(" big")),
        "{}",
        log_text(&log)
    );
    let text = log_text(&log);
    let small = text.find(" small").expect("small synced");
    let big = text.find(" big").unwrap();
    assert!(small < big, "the small file must go first:\n{text}");
    // And in different passes: a "call" line sits between them.
    assert!(text[small..big].contains("call "), "same pass:\n{text}");
    d.stop();
}

/// `--modification-signature uid,gid` (plus `extra`): touch → sync (the first event on a path),
/// touch → skipped, chown → sync, touch → skipped; the daemon runs on after every skip. `then`
/// looks at the daemon before it is stopped.
fn signature_decides_which_events_sync(name: &str, extra: &[&str], then: impl FnOnce(&Daemon)) {
    let s = Scratch::new(name);
    fs::write(s.src().join("f"), b"x").unwrap();
    let (h, log) = handler(&s, "exit 0");
    let mut args = vec!["-w0", "-t0", "--modification-signature", "uid,gid"];
    args.extend_from_slice(extra);
    let mut d = Daemon::start(&s, &handler_args(&s, "shell", &h, &args), &[]);
    d.wait_ready();
    let f = s.src().join("f");
    let count = || log_text(&log).lines().filter(|l| l.ends_with(" f")).count();
    let base = count(); // the initial sync listed it once
    let touch = |p: &Path| set_mtime(p, 1_700_000_000 + count() as i64, 0);
    // Each step ends with a marker file; once the marker is synced, f's event was decided.
    let step = |n: u32| {
        let m = format!("marker{n}");
        fs::write(s.src().join(&m), b"m").unwrap();
        assert!(
            wait_for(SYNC_TIMEOUT, || log_text(&log).contains(&format!(" {m}"))),
            "{}",
            log_text(&log)
        );
    };
    touch(&f);
    step(1);
    assert_eq!(count(), base + 1, "the first event on a path always syncs");
    touch(&f);
    step(2);
    assert_eq!(count(), base + 1, "uid and gid unchanged: skipped");
    assert_eq!(d.try_wait(), None, "the daemon ended after a skipped sync");
    std::os::unix::fs::chown(&f, Some(TEST_UID), None).unwrap();
    step(3);
    assert_eq!(count(), base + 2, "uid changed: synced");
    touch(&f);
    step(4);
    assert_eq!(count(), base + 2, "skipped again");
    then(&d);
    d.stop();
}

#[test]
fn modification_signature_skips_events_that_change_no_selected_field() {
    signature_decides_which_events_sync("res-signature", &[], |_| ());
}

/// clsync 0.4.5 reads --exit-on-sync-skipping only in its BSM monitor; with inotify (observed with
/// /usr/bin/clsync) a sync that --modification-signature skips does not end it. Same here: the
/// option is accepted with an info line, the skips happen, the daemon goes on and syncs.
#[test]
fn exit_on_sync_skipping_does_not_end_the_daemon_when_a_sync_is_skipped() {
    let info = "Info: --exit-on-sync-skipping: accepted, changes nothing here";
    signature_decides_which_events_sync("res-skip-exit", &["--exit-on-sync-skipping"], |d| {
        assert!(d.stderr().contains(info), "{}", d.stderr())
    });
}

/// A handler that logs `start <pid> <paths…>` and, a moment later, `end <pid>`.
fn slow_handler(s: &Scratch) -> (PathBuf, PathBuf) {
    let log = s.path("calls.log");
    let h = s.path("slow.sh");
    write_script(
        &h,
        &format!(
            "#!/bin/sh\nl=\"\"; for a in \"$@\"; do case \"$a\" in {tmp}/*) l=$(cut -d' ' -f4- \"$a\" | tr '\\n' ' ');; esac; done\n\
             echo \"start $$ $l\" >> {log}\nsleep 1\necho \"end $$\" >> {log}\n",
            log = log.display(),
            tmp = s.tmp().display()
        ),
    );
    (h, log)
}

/// (start line index, end line index) of the call that listed `path`.
fn span(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let (i, l) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.starts_with("start ") && l.split(' ').any(|w| w == path))?;
    let pid = l.split(' ').nth(1)?;
    let j = lines.iter().position(|l| *l == format!("end {pid}"))?;
    Some((i, j))
}

#[test]
fn threading_safe_runs_other_paths_in_parallel_but_never_one_path_twice() {
    let s = Scratch::new("res-threading-safe");
    let (h, log) = slow_handler(&s);
    let mut d = Daemon::start(
        &s,
        &handler_args(&s, "shell", &h, &["-w0", "-t0", "-p", "safe"]),
        &[],
    );
    d.wait_ready();
    fs::write(s.src().join("f"), b"1").unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || log_text(&log).contains(" f ")),
        "{}",
        log_text(&log)
    );
    // While f's sync runs: f again (must wait) and g (may run at once).
    fs::write(s.src().join("f"), b"2").unwrap();
    fs::write(s.src().join("g"), b"1").unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || {
            let t = log_text(&log);
            t.lines()
                .filter(|l| l.starts_with("start") && l.contains(" f "))
                .count()
                == 2
                && span(&t, "g").is_some()
        }),
        "{}",
        log_text(&log)
    );
    let t = log_text(&log);
    let (f1s, f1e) = span(&t, "f").unwrap();
    let (gs, _) = span(&t, "g").unwrap();
    assert!(gs > f1s && gs < f1e, "g ran in parallel with f:\n{t}");
    let lines: Vec<&str> = t.lines().collect();
    let f2s = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("start") && l.contains(" f "))
        .nth(1)
        .unwrap()
        .0;
    assert!(f2s > f1e, "the second sync of f waited for the first:\n{t}");
    d.stop();
}

#[test]
fn threading_off_runs_one_sync_at_a_time() {
    let s = Scratch::new("res-threading-off");
    let (h, log) = slow_handler(&s);
    let mut d = Daemon::start(&s, &handler_args(&s, "shell", &h, &["-w0", "-t0"]), &[]);
    d.wait_ready();
    fs::write(s.src().join("f"), b"1").unwrap();
    assert!(wait_for(SYNC_TIMEOUT, || log_text(&log).contains(" f ")));
    fs::write(s.src().join("g"), b"1").unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || span(&log_text(&log), "g").is_some()),
        "{}",
        log_text(&log)
    );
    let t = log_text(&log);
    let (_, fe) = span(&t, "f").unwrap();
    let (gs, _) = span(&t, "g").unwrap();
    assert!(gs > fe, "g waited for f:\n{t}");
    d.stop();
}
