//! `--custom-signals` and the control socket's `set` (clsync 211): switching among configuration
//! blocks resolved and frozen at start, and the worker's run-time tunables. Each test runs the
//! real daemon with a recording shell handler and asserts what the handler was given.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The custom signal the tests use (a realtime signal: nix's `Signal` does not name it).
const SIG: i32 = 40;

/// A handler that appends one line per call: its arguments, then the list's paths.
fn recorder(s: &Scratch) -> (PathBuf, PathBuf) {
    let record = s.path("calls.log");
    let h = s.path("handler.sh");
    fs::write(
        &h,
        format!(
            "#!/bin/sh\nlast=\"\"\nfor a in \"$@\"; do last=\"$a\"; done\n\
             {{ printf 'CALL %s |' \"$*\"; tr '\\n' ' ' < \"$last\"; echo; }} >> {}\n",
            record.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&h, fs::Permissions::from_mode(0o755)).unwrap();
    (h, record)
}

fn calls(record: &Path) -> Vec<String> {
    fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A keyfile: block `default` (handler arguments A, destination d1, rules allowing all, events
/// collected for an hour) and block `b` inheriting it (arguments B, destination d2, rules that
/// refuse `*.secret`, no collect delay, and a watch dir of its own, which cannot change at run
/// time).
fn keyfile(s: &Scratch, handler: &Path) -> PathBuf {
    let d1 = s.mkdir("d1");
    let d2 = s.mkdir("d2");
    let other = s.mkdir("other-watch");
    let ra = s.path("rules-a");
    fs::write(&ra, "+*.*\n").unwrap();
    let rb = s.path("rules-b");
    fs::write(&rb, "-f\\.secret$\n+*.*\n").unwrap();
    let conf = s.path("clsync.conf");
    fs::write(
        &conf,
        format!(
            "[default]\n\
             watch-dir = {src}\n\
             mode = shell\n\
             sync-handler = {h}\n\
             destination-dir = {d1}\n\
             rules-file = {ra}\n\
             delay-sync = 0\n\
             delay-collect = 3600\n\
             -- = synclist A %destination-dir% %INCLUDE-LIST-PATH%\n\
             \n\
             [b]\n\
             config-block-inherits = default\n\
             destination-dir = {d2}\n\
             rules-file = {rb}\n\
             delay-collect = 0\n\
             watch-dir = {other}\n\
             -- = synclist B %destination-dir% %INCLUDE-LIST-PATH%\n",
            src = s.src().display(),
            h = handler.display(),
            d1 = d1.display(),
            d2 = d2.display(),
            ra = ra.display(),
            rb = rb.display(),
            other = other.display(),
        ),
    )
    .unwrap();
    conf
}

fn start(s: &Scratch, conf: &Path, sock: &Path) -> Daemon {
    let args: Vec<std::ffi::OsString> = vec![
        "-H".into(),
        conf.into(),
        "--custom-signals".into(),
        format!("{SIG}:b").into(),
        "-s".into(),
        sock.into(),
    ];
    let mut d = Daemon::start(s, &args, &[]);
    d.wait_ready();
    d
}

/// Waits until the daemon reports something queued (the event was read, not yet synced).
fn wait_queued(d: &mut Daemon, sock: &Path) {
    d.wait_until(SYNC_TIMEOUT, "a queued event", |_| {
        control_ask(sock, "status\n").contains("\"queued\":1")
    });
}

/// After the switch: the change queued before it and a new one are synced under block b (its
/// argv, destination and rules), nothing under block a; a secret file b's rules refuse is not.
fn assert_synced_under_b(d: &mut Daemon, s: &Scratch, record: &Path) {
    // The secret first: any call that could carry it is recorded before the one with after.txt.
    fs::write(s.src().join("x.secret"), "s").unwrap();
    fs::write(s.src().join("after.txt"), "2").unwrap();
    d.wait_until(SYNC_TIMEOUT, "both files synced by block b", |_| {
        let c = calls(record).join("\n");
        c.contains(" before.txt ") && c.contains(" after.txt ")
    });
    let d2 = s.path("d2").display().to_string();
    for c in calls(record).iter().skip(1) {
        assert!(
            c.starts_with(&format!("CALL synclist B {d2} ")),
            "a call after the initial sync is not block b's: {c}\nall: {:?}",
            calls(record)
        );
        assert!(!c.contains("x.secret"), "b's rules refuse it: {c}");
    }
    assert!(calls(record)[0].starts_with("CALL synclist A "));
}

#[test]
fn custom_signal_switches_to_its_block_and_keeps_what_was_queued() {
    let s = Scratch::new("sig-switch");
    let (h, record) = recorder(&s);
    let conf = keyfile(&s, &h);
    let sock = s.path("ctl.sock");
    let mut d = start(&s, &conf, &sock);
    let err = d.stderr();
    assert!(
        err.contains("block [b] sets watch-dir differently") && err.contains("start value is kept"),
        "{err}"
    );
    assert!(control_ask(&sock, "1 201\n").starts_with("1 301 default\x03/"));
    // Queued under block default, whose collect delay is an hour: it waits.
    fs::write(s.src().join("before.txt"), "1").unwrap();
    wait_queued(&mut d, &sock);
    assert_eq!(calls(&record).len(), 1, "{:?}", calls(&record));
    assert_eq!(std_kill(d.pid, SIG), 0);
    d.wait_log(
        SYNC_TIMEOUT,
        &format!("signal {SIG}: switched to config block b"),
    );
    assert_synced_under_b(&mut d, &s, &record);
    let status = control_ask(&sock, "status\n");
    assert!(status.contains("\"config_block\":\"b\""), "{status}");
    assert!(control_ask(&sock, "2 201\n").starts_with("2 301 b\x03/"));
    assert!(d.stderr().contains("audit: action=select-policy index=1"));
}

/// kill(2) through the `kill` program: the test crate has no unsafe code.
fn std_kill(pid: i32, sig: i32) -> i32 {
    Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

#[test]
fn socket_set_config_block_switches_like_the_signal() {
    let s = Scratch::new("sig-set-block");
    let (h, record) = recorder(&s);
    let conf = keyfile(&s, &h);
    let sock = s.path("ctl.sock");
    let mut d = start(&s, &conf, &sock);
    fs::write(s.src().join("before.txt"), "1").unwrap();
    wait_queued(&mut d, &sock);
    // An unknown block is clsync's EINVAL reply naming it, and nothing changes.
    let r = control_ask(&sock, "3 211 config-block nosuch\n");
    assert!(r.starts_with("3 162 ") && r.contains("\"nosuch\""), "{r}");
    // clsync's terminated form.
    assert_eq!(
        control_ask(&sock, "4 211 config-block\x03/ b\x03/\n"),
        "4 311  :Set\n"
    );
    d.wait_log(SYNC_TIMEOUT, "control socket: switched to config block b");
    assert_synced_under_b(&mut d, &s, &record);
}

#[test]
fn socket_set_changes_worker_tunables_and_refuses_policy_keys() {
    let s = Scratch::new("sig-set-tunables");
    let (h, record) = recorder(&s);
    let conf = keyfile(&s, &h);
    let sock = s.path("ctl.sock");
    let mut d = start(&s, &conf, &sock);
    // The handler is the helper's: refused (EPERM, saying why), nothing changes.
    let r = control_ask(&sock, "5 211 sync-handler /bin/sh\n");
    assert!(
        r.starts_with("5 164 sync-handler: ") && r.contains("privileged helper's policy"),
        "{r}"
    );
    let r = control_ask(&sock, "6 211 watch-dir /tmp\n");
    assert!(r.starts_with("6 164 watch-dir: fixed at run time"), "{r}");
    let r = control_ask(&sock, "7 211 no-such-key 1\n");
    assert!(r.starts_with("7 162 ") && r.contains("no-such-key"), "{r}");
    let r = control_ask(&sock, "8 211 delay-sync soon\n");
    assert!(r.starts_with("8 162 ") && r.contains("\"soon\""), "{r}");
    // A change waits for the hour-long collect delay, until `set delay-collect 0`. (Block
    // default's rules let x.secret through, block b's do not.)
    fs::write(s.src().join("x.secret"), "s").unwrap();
    fs::write(s.src().join("before.txt"), "1").unwrap();
    wait_queued(&mut d, &sock);
    assert_eq!(control_ask(&sock, "9 211 delay-sync 0\n"), "9 311  :Set\n");
    assert_eq!(
        control_ask(&sock, "10 211 delay-collect 0\n"),
        "10 311  :Set\n"
    );
    let status = control_ask(&sock, "status\n");
    assert!(
        status.contains("\"delay-sync\":0") && status.contains("\"delay-collect\":0"),
        "{status}"
    );
    d.wait_until(SYNC_TIMEOUT, "the queued files synced", |_| {
        let c = calls(&record).join("\n");
        c.contains(" before.txt ") && c.contains(" x.secret ")
    });
    // Still block default's handler and arguments.
    let d1 = s.path("d1").display().to_string();
    for c in calls(&record) {
        assert!(
            c.starts_with(&format!("CALL synclist A {d1} ")),
            "not the configured handler call: {c}"
        );
    }
    assert!(status.contains("\"config_block\":\"default\""), "{status}");
}

#[test]
fn custom_signals_naming_a_missing_block_refuse_the_start() {
    let s = Scratch::new("sig-missing");
    let (h, _) = recorder(&s);
    let conf = keyfile(&s, &h);
    let c = conf.to_str().unwrap();
    let (code, _, err) = check_config(&["-H", c, "--custom-signals", "41:nosuch"]);
    assert_eq!(code, 22, "{err}");
    assert!(
        err.contains("--custom-signals 41:nosuch") && err.contains("no block [nosuch]"),
        "{err}"
    );
    // The daemon does not start either.
    let mut d = Daemon::start(
        &s,
        &[
            "-H".into(),
            c.into(),
            "--custom-signals=40:b,41:nosuch".into(),
        ],
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("the daemon started");
    assert_eq!(st.code(), Some(22));
    assert!(d.stderr().contains("no block [nosuch]"), "{}", d.stderr());
    // A block that does not validate: named too.
    fs::write(
        &conf,
        fs::read_to_string(&conf).unwrap()
            + "\n[bad]\nconfig-block-inherits = default\ndelay-sync = soon\n",
    )
    .unwrap();
    let (code, _, err) = check_config(&["-H", c, "--custom-signals", "42:bad"]);
    assert_ne!(code, 0);
    assert!(err.contains("42:bad") && err.contains("soon"), "{err}");
    // `0` clears what came before; --check-config shows the signals and each block.
    let (code, out, err) = check_config(&["-H", c, "--custom-signals", "41:nosuch,0,40:b"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("custom-signals = 40:b\n"), "{out}");
    assert!(
        out.contains("[b] handler-argv = ") && out.contains(" synclist B "),
        "{out}"
    );
    // The fixed key kept the start value, with a warning naming key and block.
    assert!(
        out.contains(&format!("[b] watch-dir = {}\n", s.src().display())),
        "{out}"
    );
    assert!(
        err.contains("block [b] sets watch-dir differently"),
        "{err}"
    );
}

#[test]
fn custom_signals_refuse_signals_the_daemon_uses_or_cannot_catch() {
    let s = Scratch::new("sig-reserved");
    let (h, _) = recorder(&s);
    let conf = keyfile(&s, &h);
    let c = conf.to_str().unwrap();
    for (sig, why) in [
        ("9", "SIGKILL cannot be caught"),
        ("19", "SIGSTOP cannot be caught"),
        ("1", "already uses SIGHUP"),
        ("12", "already uses SIGUSR2"),
        ("29", "already uses signal 29"),
        ("16", "already uses signal 16"),
        ("17", "already uses SIGCHLD"),
        ("31", "SIGSYS"),
        ("100", "no signal above 64"),
        ("513", "out of range"),
    ] {
        let (code, _, err) = check_config(&["-H", c, "--custom-signals", &format!("{sig}:b")]);
        assert_eq!(code, 22, "{sig}: {err}");
        assert!(
            err.contains(&format!("\"{sig}:b\"")) && err.contains(why),
            "{sig}: {err}"
        );
    }
    // Without a config file there is no block to switch to.
    let (code, _, err) = check_config(&[
        "-H",
        "/NULL/",
        "-M",
        "shell",
        "-S",
        h.to_str().unwrap(),
        "-W",
        s.src().to_str().unwrap(),
        "--custom-signals",
        "40:b",
    ]);
    assert_eq!(code, 22, "{err}");
    assert!(err.contains("no configuration file"), "{err}");
}

/// A block with another mode is refused: its handler and arguments were written for it.
#[test]
fn a_block_with_another_mode_refuses_the_start() {
    let s = Scratch::new("sig-mode");
    let (h, _) = recorder(&s);
    let conf = keyfile(&s, &h);
    fs::write(
        &conf,
        fs::read_to_string(&conf).unwrap()
            + "\n[m]\nconfig-block-inherits = default\nmode = direct\n",
    )
    .unwrap();
    let (code, _, err) = check_config(&["-H", conf.to_str().unwrap(), "--custom-signals", "40:m"]);
    assert_eq!(code, 22, "{err}");
    assert!(
        err.contains("40:m") && err.contains("mode cannot change"),
        "{err}"
    );
}
