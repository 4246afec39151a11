//! Dumps (reference §6, §7): signal 29 and the control socket's `dump` make the privileged
//! helper write clsync's picture of the queues into --dump-dir (mode 0750, must not exist);
//! the socket cannot name another directory; a --dump-dir inside the watched tree is refused.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Removes a directory outside the scratch area when the test ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Waits until the control socket says something is queued, then a little more for the rest
/// of the same burst of events.
fn wait_queued(sock: &Path) {
    assert!(
        wait_for(SYNC_TIMEOUT, || control_ask(sock, "status\n")
            .contains("\"queued\":1")),
        "nothing queued: {}",
        control_ask(sock, "status\n")
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
}

#[test]
fn signal_29_dumps_the_queues_in_clsyncs_layout_and_a_second_finds_the_dir() {
    let s = Scratch::new("dump-signal");
    let sock = s.path("ctl.sock");
    let rules = s.path("rules");
    fs::write(&rules, "-f\\.tmp$\n+*\n").unwrap();
    // No --dump-dir: clsync's default, /tmp/clsync-dump-%label%.
    let label = format!("dumptest{}", std::process::id());
    let dump = PathBuf::from(format!("/tmp/clsync-dump-{label}"));
    let _ = fs::remove_dir_all(&dump);
    let _cleanup = RemoveOnDrop(dump.clone());
    // -t 30: what happens after the initial sync stays queued while we look (-w 0: a pass may
    // start whenever something is due).
    let mut d = Daemon::rsyncdirect(
        &s,
        30,
        &[
            "-w",
            "0",
            "-l",
            &label,
            "-s",
            sock.to_str().unwrap(),
            "-R",
            rules.to_str().unwrap(),
        ],
    );
    d.wait_ready();
    // A directory moved in is walked at once: its excluded file becomes an exclude line.
    let staged = s.mkdir("staged/newd");
    fs::write(staged.join("q.tmp"), b"excluded").unwrap();
    fs::write(staged.join("r"), b"kept").unwrap();
    fs::rename(&staged, s.src().join("newd")).unwrap();
    fs::write(s.src().join("dumpme"), b"x").unwrap();
    wait_queued(&sock);
    d.signal(Signal::SIGIO);
    d.wait_log(SYNC_TIMEOUT, "signal 29: dump written to");
    let md = fs::symlink_metadata(&dump).unwrap();
    assert!(md.is_dir());
    assert_eq!(mode(&dump), 0o750);
    assert_eq!(md.uid(), 0, "owned by the helper's uid");
    for sub in ["queue", "threads"] {
        assert_eq!(mode(&dump.join(sub)), 0o750, "{sub}");
    }
    assert_eq!(read(&dump.join("instance")), "status == running\n");
    assert_eq!(
        read(&dump.join("queue/0")),
        "+1\tdumpme\n+*\tnewd\n-1\tnewd/q.tmp\n"
    );
    for q in 1..=3 {
        assert_eq!(read(&dump.join(format!("queue/{q}"))), "", "queue/{q}");
    }
    assert!(dir_entries(&dump.join("threads")).is_empty());
    let log = d.stderr();
    let audit = log
        .lines()
        .find(|l| l.starts_with("audit: action=dump "))
        .unwrap_or_else(|| panic!("no dump audited: {log}"));
    assert!(
        audit.contains(&format!("dir={} files=5 ", dump.display())),
        "{audit}"
    );
    // Again, with the directory still there: EEXIST, logged and audited, nothing changed,
    // and the daemon goes on.
    let before = read(&dump.join("queue/0"));
    d.signal(Signal::SIGIO);
    d.wait_log(SYNC_TIMEOUT, "signal 29: cannot write the dump");
    let log = d.stderr();
    assert!(log.contains("EEXIST"), "{log}");
    assert!(
        log.contains(&format!(
            "audit: action=dump-failed dir={} errno=EEXIST step=mkdir",
            dump.display()
        )),
        "{log}"
    );
    assert_eq!(read(&dump.join("queue/0")), before);
    assert!(
        d.wait_exit(std::time::Duration::from_millis(300)).is_none(),
        "the daemon ended: {log}"
    );
    assert!(control_ask(&sock, "status\n").contains("\"state\":\"running\""));
    // And it still syncs: SIGUSR2 queues a full sync, which is due at once.
    d.signal(Signal::SIGUSR2);
    assert!(
        wait_for(SYNC_TIMEOUT, || s.dst().join("dumpme").exists()),
        "{}",
        d.stderr()
    );
    assert!(d.try_wait().is_none(), "{}", d.stderr());
    let st = d.stop();
    assert!(st.success(), "{}", d.stderr());
    assert!(s.dst().join("dumpme").exists(), "{}", d.stderr());
    assert!(s.dst().join("newd/r").exists());
    assert!(!s.dst().join("newd/q.tmp").exists(), "excluded");
}

#[test]
fn the_socket_dumps_into_the_configured_dir_only() {
    let s = Scratch::new("dump-socket");
    let sock = s.path("ctl.sock");
    let dump = s.path("dumps/d");
    fs::create_dir(s.path("dumps")).unwrap();
    let other = s.path("other");
    let mut d = Daemon::rsyncdirect(
        &s,
        30,
        &[
            "-s",
            sock.to_str().unwrap(),
            "--dump-dir",
            dump.to_str().unwrap(),
        ],
    );
    d.wait_ready();
    fs::write(s.src().join("queued"), b"x").unwrap();
    wait_queued(&sock);
    // Another directory: clsync's EPERM reply, naming why; nothing is written.
    let a = control_ask(&sock, &format!("5 202 {}\n", other.display()));
    assert!(a.starts_with("5 164 "), "{a}");
    assert!(
        a.contains(&format!(
            "only the configured --dump-dir {} may be used",
            dump.display()
        )) && a.contains(":Permission denied: "),
        "{a}"
    );
    assert!(!other.exists());
    assert!(!dump.exists());
    let log = d.stderr();
    assert!(
        log.contains(&format!(
            "audit: action=dump-refused dir={}",
            other.display()
        )),
        "{log}"
    );
    // The configured one (spelled differently, as clsync would take it): 302 Ready.
    let spelled = format!("{}//./d/", s.path("dumps").display());
    assert_eq!(
        control_ask(&sock, &format!("6 202 {spelled}\n")),
        "6 302  :Ready\n"
    );
    assert_eq!(mode(&dump), 0o750);
    assert_eq!(read(&dump.join("queue/0")), "+1\tqueued\n");
    assert!(read(&dump.join("instance")).starts_with("status == running\n"));
    // Again: clsync's custom error with errno 17.
    let a = control_ask(&sock, &format!("7 202 {}\x03/\n", dump.display()));
    assert_eq!(
        a,
        format!(
            "7 199 sync_dump\x03/ {d}\x03/ 17 File exists\x03/ :sync_dump({d}): Error #17: \"File exists\".\n",
            d = dump.display()
        )
    );
    // No directory named: the configured one (gone again, so this one is written).
    fs::remove_dir_all(&dump).unwrap();
    assert_eq!(control_ask(&sock, "8 202\n"), "8 302  :Ready\n");
    assert!(dump.join("instance").exists());
    // The client: `clsync --ctl SOCKET dump` (the configured dir, which exists now: exit 1).
    let out = std::process::Command::new(clsync_bin())
        .args(["--ctl", sock.to_str().unwrap(), "dump"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("1 199 sync_dump\x03/ "));
    assert!(d.try_wait().is_none(), "{}", d.stderr());
    let st = d.stop();
    assert!(st.success(), "{}", d.stderr());
    assert_trees_equal(&s.src(), &s.dst());
}

#[test]
fn a_running_sync_with_threading_is_dumped_as_a_thread() {
    let s = Scratch::new("dump-threads");
    let marker = s.path("handler-running");
    let handler = s.path("handler.sh");
    // Shell mode: $3 is the list; a pass that lists `slow` holds on for a while.
    write_script(
        &handler,
        &format!(
            "#!/bin/sh\nif grep -q slow \"$3\"; then touch {m}; sleep 4; fi\nexit 0\n",
            m = marker.display()
        ),
    );
    let dump = s.path("dump");
    let args = handler_args(
        &s,
        "shell",
        &handler,
        &[
            "-p",
            "safe",
            "-w0",
            "-t0",
            "-T0",
            "--dump-dir",
            dump.to_str().unwrap(),
        ],
    );
    let mut d = Daemon::start(&s, &args, &[]);
    d.wait_ready();
    fs::write(s.src().join("slow"), b"x").unwrap();
    assert!(wait_for(SYNC_TIMEOUT, || marker.exists()), "{}", d.stderr());
    d.signal(Signal::SIGIO);
    d.wait_log(SYNC_TIMEOUT, "signal 29: dump written to");
    // With --threading the running sync is a thread, not the instance's in-flight list.
    assert_eq!(read(&dump.join("instance")), "status == running\n");
    let threads = dir_entries(&dump.join("threads"));
    assert_eq!(threads.len(), 1, "{threads:?}");
    let name = threads[0].to_string_lossy().into_owned();
    let parts: Vec<u64> = name.split('-').map(|n| n.parse().unwrap()).collect();
    assert_eq!(parts.len(), 3, "{name}");
    let pid = parts[2];
    let text = read(&dump.join("threads").join(&name));
    assert!(
        text.starts_with(&format!(
            "thread:\n\titeration == {}\n\tnum == {}\n",
            parts[0], parts[1]
        )),
        "{text}"
    );
    assert!(text.contains(&format!("\tchild_pid == {pid}\n")), "{text}");
    assert!(text.ends_with("+1\tslow\n"), "{text}");
    assert!(
        d.stderr()
            .contains(&format!("audit: action=exec job={} pid={pid} ", parts[1])),
        "the thread names the handler the helper started: {}",
        d.stderr()
    );
    let st = d.stop();
    assert!(st.success(), "{}", d.stderr());
}

#[test]
fn a_dump_dir_inside_the_watched_tree_is_refused_at_start() {
    let s = Scratch::new("dump-inside");
    let inside = s.src().join("dumps");
    // Relative paths are taken from the watch dir, as clsync does.
    for dir in [inside.to_str().unwrap(), "dumps", "./sub/../x", "."] {
        let mut d = Daemon::rsyncdirect(&s, 0, &["--dump-dir", dir]);
        let st = d.wait_exit(START_TIMEOUT).expect("did not exit");
        assert_eq!(st.code(), Some(22), "{dir}: {}", d.stderr());
        assert!(
            d.stderr().contains("--dump-dir=") && d.stderr().contains("inside the watched tree"),
            "{dir}: {}",
            d.stderr()
        );
    }
    assert!(!inside.exists());
    // clsync's default, %label% expanded, or a given one taken from the watch dir; when the
    // default lies inside the watched tree, dumps are off (the start goes on).
    let check = |extra: &[&str]| {
        let out = std::process::Command::new(clsync_bin())
            .args(rsyncdirect_args(&s, 0, extra))
            .arg("--check-config")
            .output()
            .unwrap();
        assert!(out.status.success(), "{extra:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("dump-dir = ").map(str::to_string))
            .unwrap()
    };
    assert_eq!(check(&["-l", "web"]), "/tmp/clsync-dump-web");
    assert_eq!(
        check(&["--dump-dir", "../dumps/%label%"]),
        format!("{}/../dumps/nolabel", s.src().display())
    );
    let tmp_watch = check(&["-W", "/tmp", "-D", "mirror:/srv"]);
    assert!(
        tmp_watch.starts_with(
            "off (the default --dump-dir=/tmp/clsync-dump-nolabel: inside the watched tree"
        ),
        "{tmp_watch}"
    );
}
