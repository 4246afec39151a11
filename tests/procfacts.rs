//! Security properties of the running daemon, read from /proc: the worker's identity, capabilities,
//! no_new_privs, seccomp mode, namespaces and cgroup; the helper's capabilities; what a handler
//! gets (uid, gid, capabilities, fds, environment, process group, cgroup); that a forbidden
//! syscall in the worker ends the whole daemon; and that killing either process leaves nothing
//! behind. Runs as root (the daemon needs it); run with `cargo test --features test-hooks`.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

// Capability numbers (linux/capability.h).
const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_FOWNER: u32 = 3;
const CAP_FSETID: u32 = 4;
const CAP_KILL: u32 = 5;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_MKNOD: u32 = 27;

const fn caps(list: &[u32]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < list.len() {
        m |= 1 << list[i];
        i += 1;
    }
    m
}

/// The helper's effective set: DAC_READ_SEARCH | KILL | SETGID | SETUID.
const HELPER_EFFECTIVE: u64 = caps(&[CAP_DAC_READ_SEARCH, CAP_KILL, CAP_SETGID, CAP_SETUID]);
/// The default handler set: what rsync -aH needs as root-equivalent on files, nothing more.
const HANDLER_CAPS: u64 = caps(&[
    CAP_CHOWN,
    CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH,
    CAP_FOWNER,
    CAP_FSETID,
    CAP_MKNOD,
]);
/// Must never be in the helper's bounding set.
const NEVER_IN_HELPER_BOUNDING: u64 =
    caps(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_NET_ADMIN]);

/// How long the helper may take to notice the worker's death (or a handler its parent's).
const PROMPT: Duration = Duration::from_secs(1);

#[test]
fn capability_constants_are_what_the_interface_says() {
    assert_eq!(HELPER_EFFECTIVE, 0x0000_0000_0000_00e4);
    assert_eq!(HANDLER_CAPS, 0x0000_0000_0800_001f);
}

fn readlink(p: impl AsRef<Path>) -> String {
    fs::read_link(p.as_ref())
        .unwrap_or_else(|e| panic!("readlink {}: {e}", p.as_ref().display()))
        .to_string_lossy()
        .into_owned()
}

/// The cgroup paths the daemon's `clsync-<worker>/<leaf>` group must have, per hierarchy:
/// pids and memory on v1/hybrid machines, the unified one on pure v2 (the daemon starts in
/// our cgroups and creates its groups below them).
fn expected_cgroups(worker: i32, leaf: &str) -> Vec<(String, String)> {
    let mine = cgroups_of(std::process::id() as i32);
    let join = |base: &str| format!("{}/clsync-{worker}/{leaf}", base.trim_end_matches('/'));
    let v1: Vec<(String, String)> = mine
        .iter()
        .filter(|c| {
            // Handlers have no memory limit, so they skip a memory-only v1 hierarchy (moving a
            // task between v1 memory groups can stall; see sandbox::cgroup).
            c.controllers
                .split(',')
                .any(|x| x == "pids" || (x == "memory" && leaf != "handlers"))
        })
        .map(|c| (c.controllers.clone(), join(&c.path)))
        .collect();
    if !v1.is_empty() {
        return v1;
    }
    mine.iter()
        .filter(|c| c.controllers.is_empty())
        .map(|c| (String::new(), join(&c.path)))
        .collect()
}

#[track_caller]
fn assert_in_cgroups(cgroup_file_text: &str, worker: i32, leaf: &str, who: &str) {
    let actual: BTreeMap<String, String> = cgroup_file_text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, c, p) = (it.next()?, it.next()?, it.next()?);
            Some((c.to_string(), p.to_string()))
        })
        .collect();
    let expected = expected_cgroups(worker, leaf);
    assert!(
        !expected.is_empty(),
        "no pids/memory/unified hierarchy found"
    );
    for (ctl, path) in expected {
        assert_eq!(
            actual.get(&ctl),
            Some(&path),
            "{who} not in {path} for hierarchy {ctl:?}; its cgroups:\n{cgroup_file_text}"
        );
    }
}

#[track_caller]
fn assert_all_ids(status: &BTreeMap<String, String>, key: &str, want: u32, who: &str) {
    assert_eq!(
        ids(&status[key]),
        vec![want; 4],
        "{who} {key} (real, effective, saved, fs)"
    );
}

#[track_caller]
fn assert_worker_confined(d: &mut Daemon, uid: u32, gid: u32) {
    let w = status_of(d.pid);
    assert_all_ids(&w, "Uid", uid, "worker");
    assert_all_ids(&w, "Gid", gid, "worker");
    assert_eq!(w["Groups"], "", "worker supplementary groups");
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(cap_mask(&w[k]), 0, "worker {k} = {}", w[k]);
    }
    assert_eq!(w["NoNewPrivs"], "1", "worker no_new_privs");
    assert_eq!(w["Seccomp"], "2", "worker seccomp mode (2 = filter)");

    let helper = d.helper_pid();
    let me = std::process::id();
    for ns in ["net", "uts", "ipc", "mnt"] {
        let wn = readlink(format!("/proc/{}/ns/{ns}", d.pid));
        let hn = readlink(format!("/proc/{helper}/ns/{ns}"));
        let mine = readlink(format!("/proc/{me}/ns/{ns}"));
        assert_ne!(wn, hn, "worker and helper share the {ns} namespace");
        assert_ne!(wn, mine, "worker is in the host's {ns} namespace");
    }
    let cg = fs::read_to_string(format!("/proc/{}/cgroup", d.pid)).unwrap();
    assert_in_cgroups(&cg, d.pid, "worker", "worker");
}

#[test]
fn worker_is_unprivileged_confined_and_isolated() {
    let s = Scratch::new("worker-facts");
    let mut d = Daemon::rsyncdirect(&s, 0, &[]);
    d.wait_ready();
    assert_worker_confined(&mut d, NOBODY, NOBODY);

    let helper = d.helper_pid();
    let h = status_of(helper);
    assert_eq!(
        h["PPid"],
        d.pid.to_string(),
        "the helper is the worker's child"
    );
    assert_all_ids(&h, "Uid", 0, "helper");
    assert_eq!(
        cap_mask(&h["CapEff"]),
        HELPER_EFFECTIVE,
        "helper CapEff = {}",
        h["CapEff"]
    );
    let bnd = cap_mask(&h["CapBnd"]);
    assert_eq!(
        bnd & NEVER_IN_HELPER_BOUNDING,
        0,
        "helper bounding set {bnd:#018x} keeps SYS_ADMIN/SYS_PTRACE/SYS_MODULE/NET_ADMIN"
    );
    assert_eq!(h["Seccomp"], "2", "helper seccomp mode (denylist filter)");
    let st = d.stop();
    assert!(st.success(), "{st}");
}

#[test]
fn worker_takes_the_given_uid_and_gid() {
    let s = Scratch::new("worker-ugid");
    let (u, g) = (TEST_UID.to_string(), TEST_GID.to_string());
    let mut d = Daemon::rsyncdirect(&s, 0, &["-u", &u, "-g", &g]);
    d.wait_ready();
    assert_worker_confined(&mut d, TEST_UID, TEST_GID);
    let st = d.stop();
    assert!(st.success(), "{st}");
}

/// The `audit: action=worker-sandbox …` line of the daemon's log.
fn worker_sandbox_line(d: &Daemon) -> String {
    let log = d.stderr();
    log.lines()
        .find(|l| l.starts_with("audit: action=worker-sandbox "))
        .unwrap_or_else(|| panic!("no worker-sandbox audit line:\n{log}"))
        .to_string()
}

#[test]
fn splitting_thread_runs_the_process_split_and_says_so() {
    for v in ["thread", "1"] {
        let s = Scratch::new(&format!("splitting-thread-{v}"));
        let arg = format!("--splitting={v}");
        let mut d = Daemon::rsyncdirect(&s, 0, &[&arg]);
        d.wait_ready();
        assert_worker_confined(&mut d, NOBODY, NOBODY);
        let log = d.stderr();
        let info: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("Info: --splitting=thread: "))
            .collect();
        assert_eq!(info.len(), 1, "{arg}: one info line:\n{log}");
        assert!(
            info[0].contains("keeps the stronger process split"),
            "{}",
            info[0]
        );
        assert!(!log.contains("Warning: --splitting"), "{arg}:\n{log}");
        let a = worker_sandbox_line(&d);
        for f in [
            " caps=none ",
            " bounding=empty ",
            " namespaces=net,ipc,mnt,uts ",
            " cgroup=worker ",
            " no_new_privs=1 ",
            " seccomp=allowlist ",
        ] {
            assert!(a.contains(f), "{arg}: {f:?} not in {a}");
        }
        assert!(a.ends_with(" splitting=process"), "{arg}: {a}");
        let st = d.stop();
        assert!(st.success(), "{st}");
    }
}

#[test]
fn splitting_off_leaves_the_worker_unconfined_but_unprivileged() {
    let s = Scratch::new("splitting-off");
    let (u, g) = (TEST_UID.to_string(), TEST_GID.to_string());
    let mut d = Daemon::rsyncdirect(&s, 0, &["--splitting=off", "-u", &u, "-g", &g]);
    d.wait_ready();

    // Still the dropped identity, without a capability the helper's work would need...
    let w = status_of(d.pid);
    assert_all_ids(&w, "Uid", TEST_UID, "worker");
    assert_all_ids(&w, "Gid", TEST_GID, "worker");
    assert_eq!(w["Groups"], "", "worker supplementary groups");
    for k in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(cap_mask(&w[k]), 0, "worker {k} = {}", w[k]);
    }
    // ...but none of the sandbox: bounding set as it was, no no_new_privs, no seccomp, the
    // host's namespaces, not in the worker cgroup.
    let me = std::process::id() as i32;
    let mine = status_of(me);
    assert_eq!(
        w["CapBnd"], mine["CapBnd"],
        "worker bounding set left as is"
    );
    assert_eq!(w["NoNewPrivs"], "0", "worker no_new_privs");
    assert_eq!(w["Seccomp"], "0", "worker seccomp mode (0 = none)");
    for ns in ["net", "uts", "ipc", "mnt"] {
        assert_eq!(
            readlink(format!("/proc/{}/ns/{ns}", d.pid)),
            readlink(format!("/proc/{me}/ns/{ns}")),
            "the worker has a {ns} namespace of its own"
        );
    }
    let cg = fs::read_to_string(format!("/proc/{}/cgroup", d.pid)).unwrap();
    assert_eq!(
        cg,
        fs::read_to_string(format!("/proc/{me}/cgroup")).unwrap(),
        "the worker left the cgroups it started in"
    );

    // The helper is unchanged and still does the privileged work.
    let helper = d.helper_pid();
    let h = status_of(helper);
    assert_all_ids(&h, "Uid", 0, "helper");
    assert_eq!(cap_mask(&h["CapEff"]), HELPER_EFFECTIVE, "helper CapEff");
    assert_eq!(h["Seccomp"], "2", "helper seccomp mode (denylist filter)");

    let log = d.stderr();
    let warn: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("Warning: --splitting=off: "))
        .collect();
    assert_eq!(warn.len(), 1, "one warning:\n{log}");
    for part in [
        "NOT confined",
        "no seccomp filter",
        "no landlock",
        "no namespaces of its own",
        "no cgroup limits",
        "no no_new_privs",
        "bounding set left as is",
        &format!("uid {TEST_UID} gid {TEST_GID}"),
        "a bug in the code that reads the tenant-written tree is no longer contained",
    ] {
        assert!(warn[0].contains(part), "{part:?} not in {}", warn[0]);
    }
    let a = worker_sandbox_line(&d);
    assert!(
        a.starts_with(&format!(
            "audit: action=worker-sandbox pid={} uid={TEST_UID} gid={TEST_GID} caps=none bounding=kept namespaces=none cgroup=none no_new_privs=0 landlock=off seccomp=off splitting=off",
            d.pid
        )),
        "{a}"
    );

    // A live mirror still syncs.
    fs::create_dir(s.src().join("live")).unwrap();
    fs::write(s.src().join("live/after-ready"), b"synced unconfined\n").unwrap();
    wait_synced(&s.src(), &s.dst(), SYNC_TIMEOUT);
    assert_eq!(
        fs::read(s.dst().join("live/after-ready")).unwrap(),
        b"synced unconfined\n"
    );
    let st = d.stop();
    assert!(st.success(), "{st}");
    assert_nothing_left(&d, &s);
}

// ------------------------------------------------------------------------------------------------
// What a handler gets

/// A report directory (mode 0777, so a non-root handler can write it too) and a `-S` wrapper
/// that records, for each run, the handler's /proc status, cgroups, stat, open fds, initial
/// environment and argv, then execs rsync in place. The wrapper is a perl script rather than a
/// shell script because it has to list its *own* descriptors exactly: a shell performs output
/// redirections in itself (dash parks the original fds at 10 and up) and keeps the script open,
/// which would blur the "only 0, 1, 2" check; perl reads its script and closes it, and the one
/// descriptor it opens for the listing is identified and left out. (perl-base is essential on
/// Debian.)
fn probe_handler(s: &Scratch) -> (PathBuf, PathBuf) {
    let reports = s.mkdir("reports");
    fs::set_permissions(&reports, fs::Permissions::from_mode(0o777)).unwrap();
    let wrapper = s.path("probe-handler.pl");
    let script = PROBE_HANDLER.replace("@REPORTS@", reports.to_str().unwrap());
    write_script(&wrapper, &script);
    (wrapper, reports)
}

const PROBE_HANDLER: &str = r#"#!/usr/bin/perl
# Written by tests/procfacts.rs: records what this handler process was given, then runs rsync.
use strict;
use warnings;
opendir(my $dh, "/proc/self/fd") or die "opendir: $!";
my $dfd = fileno($dh);
my @fds = sort { $a <=> $b } grep { /^\d+$/ && $_ != $dfd } readdir($dh);
closedir($dh);
my $fds = join("", map { "$_ " . (readlink("/proc/self/fd/$_") // "?") . "\n" } @fds);
sub slurp { my ($p) = @_; open(my $f, "<", $p) or die "$p: $!"; local $/; my $c = <$f>; close($f); $c }
my $r = "@REPORTS@/run.$$";
mkdir("$r.tmp") or die "mkdir: $!";
my %out = (
    fds => $fds,
    status => slurp("/proc/self/status"),
    cgroup => slurp("/proc/self/cgroup"),
    stat => slurp("/proc/self/stat"),
    environ => slurp("/proc/self/environ"),
    argv => join("", map { "$_\n" } @ARGV),
    netns => readlink("/proc/self/ns/net") // "?",
);
for my $k (keys %out) {
    open(my $f, ">", "$r.tmp/$k") or die "$k: $!";
    print $f $out{$k};
    close($f) or die "$k: $!";
}
rename("$r.tmp", $r) or die "rename: $!";
exec { "rsync" } "rsync", @ARGV;
exit 127;
"#;

struct HandlerReport {
    pid: i32,
    status: BTreeMap<String, String>,
    fds: String,
    cgroup: String,
    stat: Vec<String>,
    environ: Vec<String>,
    netns: String,
}

/// Waits for the first complete report.
fn first_report(d: &mut Daemon, reports: &Path) -> HandlerReport {
    let mut found = None;
    let ok = wait_for(START_TIMEOUT, || {
        found = dir_entries(reports)
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .find(|n| n.starts_with("run.") && !n.ends_with(".tmp"));
        found.is_some()
    });
    assert!(ok, "the handler never reported; stderr:\n{}", d.stderr());
    let name = found.unwrap();
    let dir = reports.join(&name);
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
    let stat_text = read("stat");
    HandlerReport {
        pid: name["run.".len()..].parse().unwrap(),
        status: parse_status(&read("status")),
        fds: read("fds"),
        netns: read("netns"),
        cgroup: read("cgroup"),
        stat: stat_text[stat_text.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        environ: fs::read(dir.join("environ"))
            .unwrap()
            .split(|&b| b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect(),
    }
}

fn check_handler(s: &Scratch, extra: &[&str], uid: u32, gid: u32) {
    let everywhere = extra.contains(&"--detach-network=everywhere");
    let (wrapper, reports) = probe_handler(s);
    let w = wrapper.to_str().unwrap().to_string();
    let mut args = rsyncdirect_args(s, 0, &["-S", &w]);
    args.extend(extra.iter().map(OsString::from));
    // Variables the daemon's own environment has and a handler must not inherit.
    let mut d = Daemon::start(
        s,
        &args,
        &[("LEAK_CANARY", "1"), ("CLSYNC_LEAK_CANARY", "1")],
    );
    d.wait_ready();
    let helper = d.helper_pid();
    let r = first_report(&mut d, &reports);

    assert_all_ids(&r.status, "Uid", uid, "handler");
    assert_all_ids(&r.status, "Gid", gid, "handler");
    for k in ["CapAmb", "CapEff", "CapPrm"] {
        assert_eq!(
            cap_mask(&r.status[k]),
            HANDLER_CAPS,
            "handler {k} = {} (want {HANDLER_CAPS:#018x})",
            r.status[k]
        );
    }
    assert_eq!(r.status["PPid"], helper.to_string(), "handler's parent");
    assert_eq!(
        r.stat[2],
        r.pid.to_string(),
        "handler leads its own process group"
    );
    assert_in_cgroups(&r.cgroup, d.pid, "handlers", "handler");

    // Network: the host's (rsync over ssh), unless --detach-network=everywhere, where the
    // helper and its handlers share the daemon's own namespace (and the worker has another).
    let mine = readlink(format!("/proc/{}/ns/net", std::process::id()));
    let helper_net = readlink(format!("/proc/{helper}/ns/net"));
    if everywhere {
        assert_ne!(r.netns, mine, "handler in the host's network namespace");
        assert_eq!(r.netns, helper_net, "handler and helper namespaces");
        assert_ne!(
            readlink(format!("/proc/{}/ns/net", d.pid)),
            helper_net,
            "worker and helper share the network namespace"
        );
    } else {
        assert_eq!(r.netns, mine, "handler not in the host's network namespace");
        assert_eq!(
            helper_net, mine,
            "helper not in the host's network namespace"
        );
    }

    // fds: exactly 0, 1 and 2 (whatever they point to).
    let fds: BTreeSet<u32> = r
        .fds
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(fds, BTreeSet::from([0, 1, 2]), "handler fds:\n{}", r.fds);

    // Environment: PATH and CLSYNC_* only, from the daemon's closed set (no pass-through).
    let keys: Vec<&str> = r
        .environ
        .iter()
        .map(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k))
        .collect();
    assert!(
        keys.contains(&"PATH"),
        "handler has no PATH: {:?}",
        r.environ
    );
    for k in &keys {
        assert!(
            *k == "PATH" || k.starts_with("CLSYNC_"),
            "handler environment has {k}: {:?}",
            r.environ
        );
    }
    assert!(
        !keys.contains(&"CLSYNC_LEAK_CANARY"),
        "the daemon's own environment leaked into the handler: {:?}",
        r.environ
    );

    let st = d.stop();
    assert!(st.success(), "{st}");
    assert_trees_equal(&s.src(), &s.dst());
}

#[test]
fn handler_gets_exactly_the_configured_identity_caps_fds_and_env() {
    let s = Scratch::new("handler-facts");
    create_file(s.src().join("f"), b"x", Attrs::new(0o600));
    check_handler(&s, &[], 0, 0);
}

#[test]
fn detach_network_everywhere_takes_the_host_network_from_helper_and_handlers_too() {
    let s = Scratch::new("handler-netns");
    create_file(s.src().join("f"), b"x", Attrs::new(0o600));
    check_handler(&s, &["--detach-network=everywhere"], 0, 0);
}

#[test]
fn handler_runs_as_sync_handler_uid_and_gid() {
    let s = Scratch::new("handler-ugid");
    create_file(s.src().join("f"), b"x", Attrs::new(0o600));
    let (u, g) = (TEST_UID.to_string(), TEST_GID.to_string());
    check_handler(
        &s,
        &["--sync-handler-uid", &u, "--sync-handler-gid", &g],
        TEST_UID,
        TEST_GID,
    );
}

// ------------------------------------------------------------------------------------------------
// Seccomp: a forbidden syscall in the worker ends the daemon

/// A `-S` wrapper that holds the initial sync until `<scratch>/go` exists (so the test can find
/// the helper before the worker dies), then runs rsync.
fn gated_handler(s: &Scratch) -> PathBuf {
    let p = s.path("gated-handler.sh");
    write_script(
        &p,
        &format!(
            "#!/bin/sh\ni=0\nwhile [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\nexec rsync \"$@\"\n",
            go = s.path("go").display()
        ),
    );
    p
}

fn syscall_trap(name: &str, nr: i64) {
    syscall_trap_with(name, nr, &[]);
}

/// [`syscall_trap`] with `extra` options on the daemon's command line.
fn syscall_trap_with(name: &str, nr: i64, extra: &[&str]) {
    let s = Scratch::new(&format!("trap-{name}"));
    create_file(s.src().join("f"), b"x", Attrs::new(0o644));
    let h = gated_handler(&s);
    let mut opts = vec!["-S", h.to_str().unwrap()];
    opts.extend_from_slice(extra);
    let args = rsyncdirect_args(&s, 0, &opts);
    let mut d = Daemon::start(&s, &args, &[("CLSYNC_TEST_WORKER_SYSCALL", name)]);
    let helper = d.helper_proc();
    fs::write(s.path("go"), b"").unwrap();

    let st = d
        .wait_exit(START_TIMEOUT)
        .unwrap_or_else(|| panic!("worker still running; stderr:\n{}", d.stderr()));
    let log = d.stderr();
    assert!(log.contains("ready:"), "the trap came before ready:\n{log}");
    assert_eq!(
        st.code(),
        Some(159),
        "worker exit status {st}; stderr:\n{log}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || !helper.alive()),
        "helper survived the worker's violation"
    );
    let log = d.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("violation") && l.contains("syscall="))
        .unwrap_or_else(|| panic!("no violation line naming the syscall:\n{log}"));
    assert!(
        line.contains(&format!("syscall={nr}")) || line.contains(&format!("syscall={name}")),
        "violation line does not name {name} ({nr}): {line}"
    );
    assert_nothing_left(&d, &s);
}

#[track_caller]
fn assert_nothing_left(d: &Daemon, s: &Scratch) {
    assert!(
        wait_for(PROMPT, || processes_in_daemon_cgroups(d.pid).is_empty()),
        "processes left in the daemon's cgroups: {:?}",
        processes_in_daemon_cgroups(d.pid)
    );
    assert_eq!(
        daemon_cgroup_dirs(d.pid),
        Vec::<PathBuf>::new(),
        "cgroups left"
    );
    assert_eq!(
        dir_entries(&s.tmp()),
        Vec::<OsString>::new(),
        "TMPDIR not empty"
    );
}

#[test]
fn seccomp_traps_socket_in_worker() {
    syscall_trap("socket", libc::SYS_socket);
}

#[test]
fn seccomp_traps_execve_in_worker() {
    syscall_trap("execve", libc::SYS_execve);
}

#[test]
fn seccomp_traps_ptrace_in_worker() {
    syscall_trap("ptrace", libc::SYS_ptrace);
}

#[test]
fn seccomp_traps_inotify_add_watch_in_worker() {
    syscall_trap("inotify_add_watch", libc::SYS_inotify_add_watch);
}

/// clsync's `--permit-mprotect` (and `--shm-mprotect`) are accepted as no-ops: making memory
/// executable still traps in the worker.
#[test]
fn permit_mprotect_does_not_let_the_worker_make_memory_executable() {
    syscall_trap_with(
        "mprotect_exec",
        libc::SYS_mprotect,
        &["--permit-mprotect", "--shm-mprotect"],
    );
}

// ------------------------------------------------------------------------------------------------
// Killing either process leaves nothing behind

/// A `-S` wrapper that records its pid and then, as one single process (perl, exec'd in place,
/// so there is no child that only a process-group kill would reach), sleeps 30 s before
/// exec'ing rsync. Returns (wrapper, pid file).
fn sleeping_handler(s: &Scratch) -> (PathBuf, PathBuf) {
    let pidfile = s.path("handler.pid");
    let p = s.path("sleeping-handler.sh");
    write_script(
        &p,
        &format!(
            "#!/bin/sh\necho $$ > {pf}.tmp && mv {pf}.tmp {pf}\nexec perl -e 'sleep 30; exec {{\"rsync\"}} \"rsync\", @ARGV; exit 127' -- \"$@\"\n",
            pf = pidfile.display()
        ),
    );
    (p, pidfile)
}

/// Starts a daemon whose initial sync hangs in the sleeping handler; returns it with the
/// helper and the handler.
fn daemon_with_sleeping_handler(s: &Scratch) -> (Daemon, Proc, Proc) {
    create_file(s.src().join("f"), b"x", Attrs::new(0o644));
    let (h, pidfile) = sleeping_handler(s);
    let args = rsyncdirect_args(s, 0, &["-S", h.to_str().unwrap()]);
    let mut d = Daemon::start(s, &args, &[]);
    let helper = d.helper_proc();
    let ok = wait_for(START_TIMEOUT, || pidfile.exists());
    assert!(ok, "the handler never started; stderr:\n{}", d.stderr());
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let handler = Proc::of(pid).expect("handler already gone");
    assert!(handler.alive());
    assert_eq!(
        status_of(pid)["PPid"],
        helper.pid.to_string(),
        "handler is the helper's child"
    );
    (d, helper, handler)
}

#[test]
fn killing_the_worker_ends_helper_and_handlers() {
    let s = Scratch::new("kill-worker");
    let (mut d, helper, handler) = daemon_with_sleeping_handler(&s);
    d.signal(Signal::SIGKILL);
    let st = d
        .wait_exit(Duration::from_secs(5))
        .expect("worker not reaped");
    assert!(!st.success());
    assert!(
        wait_for(PROMPT, || !helper.alive()),
        "helper still alive 1 s after the worker was killed"
    );
    assert!(
        wait_for(PROMPT, || !handler.alive()),
        "handler {} outlived the helper",
        handler.pid
    );
    assert_eq!(process_group_members(handler.pid), Vec::<i32>::new());
    assert_nothing_left(&d, &s);
}

#[test]
fn killing_the_helper_ends_worker_and_handlers() {
    let s = Scratch::new("kill-helper");
    let (mut d, helper, handler) = daemon_with_sleeping_handler(&s);
    helper.signal(Signal::SIGKILL);
    assert!(
        wait_for(PROMPT, || !handler.alive()),
        "handler {} outlived the helper",
        handler.pid
    );
    assert_eq!(process_group_members(handler.pid), Vec::<i32>::new());
    let st = d
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("worker kept running without its helper"));
    assert!(
        !st.success(),
        "worker exit status {st} after losing its helper"
    );
    assert_nothing_left(&d, &s);
}
