//! Lifecycle (reference §6): pid and status files, -b, the pre-exit and exit hooks, and the
//! refusal of daemon files inside the watched tree.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::fs;
use std::path::Path;

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn pid_and_status_files_follow_the_daemon_and_go_with_it() {
    let s = Scratch::new("life-files");
    let pid = s.path("clsync.pid");
    let status = s.path("clsync.status");
    let mut d = Daemon::rsyncdirect(
        &s,
        0,
        &[
            "-z",
            pid.to_str().unwrap(),
            "--status-file",
            status.to_str().unwrap(),
        ],
    );
    d.wait_ready();
    assert_eq!(
        read(&pid),
        d.pid.to_string(),
        "the pid file holds the daemon's pid, no newline"
    );
    assert!(
        wait_for(SYNC_TIMEOUT, || read(&status) == "running"),
        "status: {:?}",
        read(&status)
    );
    let st = d.stop();
    assert!(st.success(), "{}", d.stderr());
    assert!(
        wait_for(SYNC_TIMEOUT, || !pid.exists() && !status.exists()),
        "files left behind"
    );
}

#[test]
fn quit_runs_the_pre_exit_hook_then_the_exit_hook_and_term_or_int_only_the_exit_hook() {
    for (sig, want) in [
        (
            Signal::SIGQUIT,
            vec!["pre lbl preexit", "exit lbl terminating"],
        ),
        (Signal::SIGTERM, vec!["exit lbl terminating"]),
        (Signal::SIGINT, vec!["exit lbl terminating"]),
    ] {
        let s = Scratch::new("life-hooks");
        let log = s.path("hooks.log");
        for name in ["pre", "exit"] {
            write_script(
                &s.path(name),
                &format!(
                    "#!/bin/sh\necho \"{name} $* $CLSYNC_STATUS\" >> {}\n",
                    log.display()
                ),
            );
        }
        let mut d = Daemon::rsyncdirect(
            &s,
            0,
            &[
                "-l",
                "lbl",
                "--pre-exit-hook",
                s.path("pre").to_str().unwrap(),
                "--exit-hook",
                s.path("exit").to_str().unwrap(),
            ],
        );
        d.wait_ready();
        d.signal(sig);
        let st = d.wait_exit(START_TIMEOUT).expect("did not exit");
        assert!(st.success(), "{sig}: {}", d.stderr());
        let got: Vec<String> = read(&log).lines().map(str::to_string).collect();
        assert_eq!(got, want, "{sig}");
    }
}

/// Sends SIGKILL on drop to the process it was made for (not to a reused pid); the helper and
/// the janitor follow the worker.
struct KillOnDrop(Option<Proc>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take().filter(Proc::alive) {
            p.signal(Signal::SIGKILL);
        }
    }
}

#[test]
fn background_detaches_and_the_pid_file_names_the_daemon() {
    let s = Scratch::new("life-bg");
    let pid_file = s.path("bg.pid");
    let mut d = Daemon::rsyncdirect(&s, 0, &["-b", "-z", pid_file.to_str().unwrap()]);
    let st = d
        .wait_exit(START_TIMEOUT)
        .expect("the foreground process did not exit");
    assert!(st.success());
    assert!(wait_for(START_TIMEOUT, || read(&pid_file)
        .parse::<i32>()
        .is_ok()));
    let pid: i32 = read(&pid_file).parse().unwrap();
    // The background daemon is not the spawned child: end it by pid even if an assertion fails.
    let _guard = KillOnDrop(Proc::of(pid));
    let p = Proc::of(pid).expect("no daemon with the pid file's pid");
    assert_ne!(pid, d.pid);
    // The pid file is written before the sandbox closes: wait for the worker's uid change.
    let is_worker = || try_status_of(pid).is_some_and(|st| ids(&st["Uid"]) == vec![NOBODY; 4]);
    assert!(
        wait_for(START_TIMEOUT, is_worker),
        "pid {pid} never became the worker"
    );
    // It still syncs.
    fs::write(s.src().join("bg"), b"x").unwrap();
    wait_synced(&s.src(), &s.dst(), SYNC_TIMEOUT);
    p.signal(Signal::SIGTERM);
    assert!(
        wait_for(SYNC_TIMEOUT, || !p.alive()),
        "daemon {pid} did not end"
    );
    assert!(wait_for(SYNC_TIMEOUT, || !pid_file.exists()));
}

#[test]
fn daemon_files_inside_the_watched_tree_are_refused() {
    let s = Scratch::new("life-inside");
    let mut d = Daemon::rsyncdirect(&s, 0, &["-z", "pidfile-in-tree"]);
    let st = d.wait_exit(START_TIMEOUT).expect("did not exit");
    assert_eq!(st.code(), Some(22));
    assert!(
        d.stderr().contains("inside the watched tree"),
        "{}",
        d.stderr()
    );
    assert!(!s.src().join("pidfile-in-tree").exists());
}

#[test]
fn systemd_notifications_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    let s = Scratch::new("life-notify");
    let sock_path = s.path("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut d = Daemon::start(
        &s,
        &rsyncdirect_args(&s, 0, &[]),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut recv_until = |got: &mut Vec<String>, what: &str| {
        wait_for(START_TIMEOUT, || {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            got.iter().any(|m| m.contains(what))
        })
    };
    assert!(
        recv_until(&mut got, "READY=1"),
        "no READY=1: {got:?}\n{}",
        d.stderr()
    );
    let ready = got.iter().find(|m| m.contains("READY=1")).unwrap().clone();
    assert!(ready.contains(&format!("MAINPID={}", d.pid)), "{ready}");
    assert!(s.dst().exists(), "READY comes after the initial sync");
    assert!(got.iter().any(|m| m == "STATUS=initsync"), "{got:?}");
    assert!(
        recv_until(&mut got, "WATCHDOG=1"),
        "no watchdog ping: {got:?}"
    );
    d.signal(Signal::SIGTERM);
    assert!(recv_until(&mut got, "STOPPING=1"), "no STOPPING=1: {got:?}");
    d.stop();
}

#[test]
fn a_standby_file_holds_syncs_until_it_is_removed() {
    let s = Scratch::new("life-standby");
    populate_sample_tree(&s.src());
    let standby = s.path("standby");
    let status = s.path("status");
    fs::write(&standby, b"").unwrap();
    let mut d = Daemon::rsyncdirect(
        &s,
        0,
        &[
            "--standby-file",
            standby.to_str().unwrap(),
            "--status-file",
            status.to_str().unwrap(),
        ],
    );
    assert!(
        wait_for(START_TIMEOUT, || read(&status) == "hold on"),
        "status {:?}",
        read(&status)
    );
    assert!(
        fs::read_dir(s.dst()).unwrap().next().is_none(),
        "nothing synced while on standby"
    );
    fs::remove_file(&standby).unwrap();
    d.wait_ready();
    assert_trees_equal(&s.src(), &s.dst());
    assert!(wait_for(SYNC_TIMEOUT, || read(&status) == "running"));
    d.stop();
}

#[test]
fn changes_made_right_before_sigterm_are_synced() {
    let s = Scratch::new("life-lastsync");
    // Long delays: only the final flush can sync these.
    let mut d = Daemon::rsyncdirect(&s, 30, &[]);
    d.wait_ready();
    for i in 0..50 {
        fs::write(s.src().join(format!("late{i}")), b"x").unwrap();
    }
    d.signal(Signal::SIGTERM);
    let st = d.wait_exit(START_TIMEOUT).expect("did not exit");
    assert!(st.success(), "{}", d.stderr());
    assert_trees_equal(&s.src(), &s.dst());
}

#[test]
fn signals_16_29_usr1_leave_the_daemon_running_and_alrm_spares_helper_and_janitor() {
    let s = Scratch::new("life-oddsignals");
    let dump = s.path("dump");
    let mut d = Daemon::rsyncdirect(&s, 0, &["--dump-dir", dump.to_str().unwrap()]);
    d.wait_ready();
    // The helper and the janitor (the helper's clsync child) must survive them too: `pkill -29
    // clsync` reaches every process of the daemon.
    let helper = children_of(d.pid)[0];
    let others: Vec<i32> = std::iter::once(helper)
        .chain(children_of(helper))
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "clsync")
        })
        .collect();
    assert_eq!(others.len(), 2, "helper and janitor: {others:?}");
    for sig in [
        Signal::SIGSTKFLT,
        Signal::SIGIO,
        Signal::SIGUSR1,
        Signal::SIGALRM,
    ] {
        for &p in &others {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
        }
        if sig == Signal::SIGALRM {
            // ALRM to the worker means "sync and exit"; here only the other two get it.
            continue;
        }
        d.signal(sig);
        let name = format!("after-{}", sig as i32);
        fs::write(s.src().join(&name), name.as_bytes()).unwrap();
        wait_synced(&s.src(), &s.dst(), SYNC_TIMEOUT);
        assert!(
            d.wait_exit(std::time::Duration::from_millis(100)).is_none(),
            "{sig} ended the daemon: {}",
            d.stderr()
        );
    }
    for &p in &others {
        assert!(
            fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| !st.contains(") Z ")),
            "process {p} ended: {}",
            d.stderr()
        );
    }
    // 29 wrote a dump (tests/dump.rs looks at it closely).
    assert!(
        d.stderr().contains("signal 29: dump written to"),
        "{}",
        d.stderr()
    );
    assert!(dump.join("instance").exists());
    let st = d.stop();
    assert!(st.success(), "{}", d.stderr());
    assert_trees_equal(&s.src(), &s.dst());
}
