//! Each layer of the worker's sandbox shown by itself: with the `test-hooks` feature a test
//! build can switch single layers off (CLSYNC_TEST_DISABLE) and make the worker try what a tenant
//! who took it over would try (CLSYNC_TEST_WORKER_ACTION). Every test runs the attack twice:
//! with the layer on it fails, with only that layer off it succeeds — so the test fails if the
//! layer is removed or stops working.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

/// Starts the daemon with the given test switches and waits for `ready:`.
fn start(s: &Scratch, env: &[(&str, &str)]) -> Daemon {
    let mut d = Daemon::start(s, &rsyncdirect_args(s, 0, &[]), env);
    d.wait_ready();
    d
}

/// Runs `action` in a worker with `disabled` layers off; returns the action's log line.
fn attempt(name: &str, disabled: &str, action: &str) -> String {
    let s = Scratch::new(name);
    let mut d = start(
        &s,
        &[
            ("CLSYNC_TEST_DISABLE", disabled),
            ("CLSYNC_TEST_WORKER_ACTION", action),
        ],
    );
    d.wait_log(START_TIMEOUT, "test action");
    let line = d
        .stderr()
        .lines()
        .find(|l| l.contains("test action"))
        .unwrap_or_default()
        .to_string();
    d.stop();
    line
}

/// A root-owned, world-readable file outside the watch root: readable by `nobody` by DAC.
fn world_readable_secret(s: &Scratch) -> String {
    let p = s.path("secret");
    fs::write(&p, b"not for tenants\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn landlock_alone_stops_reading_a_world_readable_file() {
    // seccomp is off in both runs so the open reaches landlock.
    let s = Scratch::new("landlock-file");
    let secret = world_readable_secret(&s);
    let action = format!("read:{secret}");
    let on = attempt("landlock-on", "seccomp", &action);
    assert!(on.contains("denied"), "landlock on: {on}");
    let off = attempt("landlock-off", "seccomp,landlock", &action);
    assert!(off.contains("allowed (16 bytes)"), "landlock off: {off}");
}

#[test]
fn seccomp_alone_stops_reading_a_file() {
    // landlock is off: the open must be trapped by the seccomp allowlist (openat is not on it).
    let s = Scratch::new("seccomp-file");
    let secret = world_readable_secret(&s);
    let mut d = Daemon::start(
        &s,
        &rsyncdirect_args(&s, 0, &[]),
        &[
            ("CLSYNC_TEST_DISABLE", "landlock"),
            ("CLSYNC_TEST_WORKER_ACTION", &format!("read:{secret}")),
        ],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("the worker did not end");
    assert_eq!(st.code(), Some(159), "stderr:\n{}", d.stderr());
    assert!(
        d.stderr()
            .contains("audit: action=violation who=worker syscall="),
        "{}",
        d.stderr()
    );
    assert!(
        !d.stderr().contains("test action read"),
        "the read was not stopped: {}",
        d.stderr()
    );
}

#[test]
fn pids_cgroup_stops_a_fork_bomb_that_seccomp_would_otherwise_stop_first() {
    // seccomp (which denies clone) is off in both runs, so the pids limit is what stops it.
    let on = attempt("forkbomb-on", "seccomp", "forkbomb");
    let allowed: usize = on
        .split("forkbomb: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {on:?}"));
    assert!(allowed < 8 && on.contains("EAGAIN"), "pids cgroup on: {on}");
    let off = attempt("forkbomb-off", "seccomp,cgroup", "forkbomb");
    assert!(
        off.contains("64 forks allowed, then cap reached"),
        "pids cgroup off: {off}"
    );
}

#[test]
fn seccomp_alone_stops_a_fork_bomb() {
    let s = Scratch::new("forkbomb-seccomp");
    let mut d = Daemon::start(
        &s,
        &rsyncdirect_args(&s, 0, &[]),
        &[
            ("CLSYNC_TEST_DISABLE", "cgroup"),
            ("CLSYNC_TEST_WORKER_ACTION", "forkbomb"),
        ],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("the worker did not end");
    assert_eq!(st.code(), Some(159), "stderr:\n{}", d.stderr());
}

fn net_interfaces(pid: i32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
        .collect()
}

#[test]
fn network_namespace_has_only_loopback() {
    let s = Scratch::new("netns-on");
    let mut d = start(&s, &[]);
    assert_eq!(net_interfaces(d.pid), vec!["lo".to_string()]);
    let own = fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        fs::read_link(format!("/proc/{}/ns/net", d.pid)).unwrap(),
        own
    );
    d.stop();

    let s = Scratch::new("netns-off");
    let mut d = start(&s, &[("CLSYNC_TEST_DISABLE", "netns")]);
    assert_eq!(
        fs::read_link(format!("/proc/{}/ns/net", d.pid)).unwrap(),
        own
    );
    assert_eq!(
        net_interfaces(d.pid),
        net_interfaces(std::process::id() as i32)
    );
    d.stop();
}

#[test]
fn identity_capability_and_no_new_privs_layers_show_in_proc() {
    let s = Scratch::new("ids-on");
    let mut d = start(&s, &[]);
    let on = status_of(d.pid);
    d.stop();
    assert_eq!(ids(&on["Uid"]), vec![NOBODY; 4]);
    assert_eq!(cap_mask(&on["CapBnd"]), 0);
    assert_eq!(on["NoNewPrivs"], "1");

    let s = Scratch::new("ids-off");
    let mut d = start(&s, &[("CLSYNC_TEST_DISABLE", "identity")]);
    let off = status_of(d.pid);
    d.stop();
    assert_eq!(
        ids(&off["Uid"]),
        vec![0; 4],
        "identity layer off: still root"
    );

    let s = Scratch::new("caps-off");
    let mut d = start(&s, &[("CLSYNC_TEST_DISABLE", "caps")]);
    let off = status_of(d.pid);
    d.stop();
    assert_ne!(
        cap_mask(&off["CapBnd"]),
        0,
        "caps layer off: bounding set kept"
    );

    // seccomp and landlock set no_new_privs too, so all three must be off to see it alone.
    let s = Scratch::new("nnp-off");
    let mut d = start(&s, &[("CLSYNC_TEST_DISABLE", "nnp,seccomp,landlock")]);
    let off = status_of(d.pid);
    d.stop();
    assert_eq!(off["NoNewPrivs"], "0", "nnp layer off");
}

/// `--splitting=off` is a real option (not a test hook): what each layer stops above, an
/// unconfined worker is allowed to do — read a world-readable file outside the tree (no
/// landlock, no seccomp), fork freely (no seccomp, no pids cgroup).
#[test]
fn splitting_off_lets_the_worker_do_what_the_layers_stop() {
    let s = Scratch::new("splitting-off-read");
    let secret = world_readable_secret(&s);
    for (name, action, want) in [
        (
            "splitting-off-read",
            format!("read:{secret}"),
            "allowed (16 bytes)",
        ),
        (
            "splitting-off-fork",
            "forkbomb".to_string(),
            "64 forks allowed, then cap reached",
        ),
    ] {
        let s = Scratch::new(name);
        let mut d = Daemon::start(
            &s,
            &rsyncdirect_args(&s, 0, &["--splitting=off"]),
            &[("CLSYNC_TEST_WORKER_ACTION", &action)],
        );
        d.wait_ready();
        d.wait_log(START_TIMEOUT, "test action");
        let log = d.stderr();
        assert!(
            !log.contains("test hook: sandbox layer"),
            "no test hook was used:\n{log}"
        );
        let line = log
            .lines()
            .find(|l| l.contains("test action"))
            .unwrap_or_default();
        assert!(line.contains(want), "{action}: {line}");
        let st = d.stop();
        assert!(st.success(), "{st}");
    }
}

/// The test hooks switch layers off in the same set `--splitting` decides, so the audit line
/// says what a hook switched off too.
#[test]
fn test_hooks_show_in_the_worker_sandbox_audit_line() {
    let s = Scratch::new("hooks-audit");
    let mut d = start(&s, &[("CLSYNC_TEST_DISABLE", "seccomp,nnp,landlock")]);
    let log = d.stderr();
    d.stop();
    let a = log
        .lines()
        .find(|l| l.starts_with("audit: action=worker-sandbox "))
        .unwrap_or_else(|| panic!("no audit line:\n{log}"));
    for f in [
        " bounding=empty ",
        " namespaces=net,ipc,mnt,uts ",
        " no_new_privs=0 ",
        " landlock=off ",
        " seccomp=off ",
        " splitting=process",
    ] {
        assert!(a.contains(f), "{f:?} not in {a}");
    }
}
