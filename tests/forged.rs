//! A compromised worker against the real helper: with the `test-hooks` feature the worker sends
//! one forged request after `ready:` (CLSYNC_TEST_FORGE). Each must be refused, audited with its
//! reason, and end the whole daemon (worker exit 70 = "helper gone"), leaving nothing behind.

mod common;

use common::*;

#[track_caller]
fn forged_request_is_refused(kind: &str, reason: &str) {
    forged_request_with_args_is_refused(kind, |_| Vec::new(), reason)
}

/// The same, with more daemon options, made in the test's scratch directory.
#[track_caller]
fn forged_request_with_args_is_refused(
    kind: &str,
    extra: impl FnOnce(&Scratch) -> Vec<String>,
    reason: &str,
) {
    let s = Scratch::new(&format!("forge-{kind}"));
    populate_sample_tree(&s.src());
    let extra = extra(&s);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut d = Daemon::start(
        &s,
        &rsyncdirect_args(&s, 0, &extra),
        &[("CLSYNC_TEST_FORGE", kind)],
    );
    let st = d
        .wait_exit(START_TIMEOUT)
        .expect("daemon did not end after a forged request");
    let log = d.stderr();
    assert_eq!(st.code(), Some(70), "exit status {st}; stderr:\n{log}");
    let refusal = log
        .lines()
        .find(|l| l.starts_with("audit: action=refused"))
        .unwrap_or_else(|| panic!("no refusal audited; stderr:\n{log}"));
    assert!(
        refusal.contains(reason),
        "refusal {refusal:?} does not name {reason:?}"
    );
    // The helper is gone too, and the janitor removed the lists dir and the cgroups.
    let helper_gone = wait_for(SYNC_TIMEOUT, || {
        d.stderr().contains("helper: refused a request")
    });
    assert!(
        helper_gone,
        "the helper did not report ending the session; stderr:\n{}",
        d.stderr()
    );
    assert!(
        wait_for(SYNC_TIMEOUT, || dir_entries(&s.tmp()).is_empty()),
        "TMPDIR not emptied: {:?}",
        dir_entries(&s.tmp())
    );
}

/// A --custom-signals switch only selects among the policies frozen at start: an index beyond
/// them (here: no block configured, only policy 0) ends the session.
#[test]
fn select_policy_out_of_range_is_refused() {
    forged_request_is_refused(
        "select-policy-out-of-range",
        "SelectPolicy 1: only 1 policies were configured",
    );
}

#[test]
fn second_handshake_is_refused() {
    forged_request_is_refused("hello-again", "second handshake");
}

#[test]
fn watch_with_dotdot_is_refused() {
    forged_request_is_refused("watch-dotdot", "dot component");
}

#[test]
fn watch_of_an_absolute_path_is_refused() {
    forged_request_is_refused("watch-absolute", "absolute");
}

#[test]
fn scan_escaping_through_dotdot_is_refused() {
    forged_request_is_refused("scan-dotdot", "dot component");
}

#[test]
fn exec_with_lists_other_than_the_template_is_refused() {
    forged_request_is_refused("exec-missing-list", "the configured handler takes");
}

#[test]
fn exec_with_unsealed_memfds_is_refused() {
    forged_request_is_refused("exec-unsealed", "not fully sealed");
}

#[test]
fn fds_on_a_message_that_declares_none_are_refused() {
    forged_request_is_refused("exec-undeclared-fd", "declares 0 fds but carries 1");
}

#[test]
fn garbage_bytes_are_refused() {
    forged_request_is_refused("garbage", "malformed message");
}

#[test]
fn oversized_datagram_is_refused() {
    forged_request_is_refused("oversized", "truncated datagram");
}

#[test]
fn exec_of_a_hook_that_is_not_configured_is_refused() {
    forged_request_is_refused(
        "exec-hook-unconfigured",
        "ExitHook, which is not configured",
    );
}

#[test]
fn paths_for_a_template_without_include_list_are_refused() {
    forged_request_is_refused("exec-paths-to-rsync", "takes at most 0");
}

#[test]
fn a_path_argument_that_escapes_the_tree_is_refused() {
    // direct mode: the template takes paths, so the path itself is what gets checked.
    let s = Scratch::new("forge-path-dotdot");
    let args: Vec<std::ffi::OsString> = vec![
        "-M".into(),
        "direct".into(),
        "-W".into(),
        s.src().into(),
        "-D".into(),
        s.dst().into(),
        "-S".into(),
        "/bin/true".into(),
        "-w0".into(),
        "-t0".into(),
        "-H".into(),
        "/NULL/".into(),
    ];
    let mut d = Daemon::start(&s, &args, &[("CLSYNC_TEST_FORGE", "exec-path-dotdot")]);
    let st = d
        .wait_exit(START_TIMEOUT)
        .expect("daemon did not end after a forged request");
    assert_eq!(st.code(), Some(70), "{}", d.stderr());
    let log = d.stderr();
    let refusal = log
        .lines()
        .find(|l| l.starts_with("audit: action=refused"))
        .unwrap_or_default();
    assert!(
        refusal.contains("dot component") && refusal.contains("../../etc/shadow"),
        "{log}"
    );
}

#[test]
fn a_handshake_with_another_version_is_refused() {
    forged_request_is_refused("version", "protocol version 3, expected 2");
}

#[test]
fn a_list_that_is_a_regular_file_is_refused() {
    forged_request_is_refused("exec-regular-file", "not a sealable memfd");
}

#[test]
fn a_list_that_is_a_pipe_is_refused() {
    forged_request_is_refused("exec-pipe", "not a sealable memfd");
}

#[test]
fn a_watch_through_a_symlinked_directory_fails_without_following_it() {
    // Not a refusal (a tenant can swap a directory for a symlink at will, so ending the daemon
    // would hand tenants a denial of service): the helper answers ELOOP, audits it, and the
    // directory behind the link is never watched.
    let s = Scratch::new("forge-symlink");
    let outside = s.mkdir("outside");
    std::fs::create_dir(outside.join("inner")).unwrap();
    std::os::unix::fs::symlink(&outside, s.src().join("lnk")).unwrap();
    let mut d = Daemon::start(
        &s,
        &rsyncdirect_args(&s, 0, &[]),
        &[("CLSYNC_TEST_FORGE", "watch-through-symlink")],
    );
    d.wait_log(START_TIMEOUT, "forged watch through a symlink");
    let log = d.stderr();
    assert!(log.contains("Errno(40)"), "ELOOP expected: {log}");
    assert!(
        log.contains("audit: action=watch-failed path=lnk/inner errno=ELOOP"),
        "{log}"
    );
    assert!(!log.contains("action=refused"), "{log}");
    assert!(d.try_wait().is_none(), "the daemon must go on: {log}");
    d.stop();
}

/// Inode numbers watched on the daemon's inotify instance, read from the worker's fdinfo.
fn watched_inodes(worker: i32) -> Vec<u64> {
    let fds = std::fs::read_dir(format!("/proc/{worker}/fd")).expect("worker's fd dir");
    for fd in fds.flatten() {
        let link = std::fs::read_link(fd.path()).unwrap_or_default();
        if link.to_string_lossy() != "anon_inode:inotify" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{worker}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .expect("inotify fdinfo");
        return info
            .lines()
            .filter_map(|l| l.strip_prefix("inotify wd:"))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("ino:")))
            .map(|h| u64::from_str_radix(h, 16).expect("hex inode"))
            .collect();
    }
    panic!("no inotify fd in worker {worker}");
}

#[test]
fn a_directory_swapped_for_a_symlink_during_walks_is_never_followed() {
    // The race the design names: a tenant swaps a directory for a symlink to the outside
    // between the worker's look and the helper's act. A Walk opens each directory once without
    // following links, watches it through that fd and lists the same fd, so whatever the
    // timing, neither the watch nor the listing can land outside. The test swaps `flip`
    // between a directory and a symlink to `outside` while the worker sends 3000 Walks of it.
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = Scratch::new("forge-walk-race");
    let outside = s.mkdir("outside");
    std::fs::create_dir(outside.join("outside-secret")).unwrap();
    let outside_ino = std::fs::metadata(&outside).unwrap().ino();
    let flip = s.src().join("flip");
    std::fs::create_dir(&flip).unwrap();
    std::fs::create_dir(flip.join("inside-entry")).unwrap();
    let parked = s.path("parked");
    // rsync meets the swaps too: its "vanished" and "partial" exits are expected here.
    let mut d = Daemon::start(
        &s,
        &rsyncdirect_args(&s, 0, &["-x", "23", "-x", "24"]),
        &[("CLSYNC_TEST_FORGE", "walk-race:3000")],
    );
    d.wait_ready();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, flip, parked, outside) = (stop.clone(), flip.clone(), parked.clone(), outside);
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // directory -> symlink to the outside -> directory again
                std::fs::rename(&flip, &parked).unwrap();
                std::os::unix::fs::symlink(&outside, &flip).unwrap();
                std::fs::remove_file(&flip).unwrap();
                std::fs::rename(&parked, &flip).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    d.wait_log(START_TIMEOUT, "walk race done");
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    let log = d.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("walk race done"))
        .unwrap()
        .to_string();
    assert!(swaps > 0, "the swapper never ran: {line}");
    // Both outcomes happened, so the race was really run: some walks found the directory and
    // some met the symlink (ELOOP / ENOENT while it was parked).
    assert!(!line.contains("watched=0 "), "{line}");
    assert!(!line.contains("failed=0 "), "{line}");
    assert!(line.contains("inside-entry"), "{line}");
    assert!(
        !line.contains("outside-secret"),
        "listed the outside: {line}"
    );
    let watched = watched_inodes(d.worker().pid);
    assert!(
        !watched.contains(&outside_ino),
        "the outside directory (ino {outside_ino}) is watched: {watched:?}"
    );
    assert!(d.try_wait().is_none(), "the daemon must go on: {log}");
    d.stop();
}

#[test]
fn an_initialsync_exec_without_have_recursive_sync_is_refused() {
    forged_request_is_refused(
        "exec-initialsync",
        "--have-recursive-sync is not configured",
    );
}

#[test]
fn a_dump_with_an_unsealed_memfd_is_refused() {
    forged_request_is_refused(
        "dump-unsealed",
        "dump file instance: memfd is not fully sealed",
    );
}

#[test]
fn a_dump_with_more_fds_than_files_is_refused() {
    forged_request_is_refused("dump-undeclared-fd", "declares 5 fds but carries 6");
}

#[test]
fn a_dump_with_more_files_than_the_layout_allows_is_refused() {
    forged_request_is_refused("dump-too-many-files", "a Dump of 70 files (at most 69)");
}

#[test]
fn a_dump_with_more_fds_than_a_message_may_carry_is_refused() {
    // The control data is cut (MSG_CTRUNC, the kernel closes the fds that did not fit): the
    // receive fails with ENOBUFS.
    forged_request_is_refused("dump-too-many-fds", "ENOBUFS");
}

#[test]
fn a_dump_file_the_layout_does_not_have_is_refused() {
    forged_request_is_refused("dump-bad-name", "dump file queue/4 is not allowed");
}

/// `-S` a sync handler for the job-limit cases: the initial sync (status `initsync`) returns at
/// once, the forged calls (status `running`) sleep, so they are still running when the next
/// arrives (the helper kills them when the session ends).
fn sleeping_handler(s: &Scratch) -> Vec<String> {
    let p = s.path("sleeper.sh");
    write_script(
        &p,
        "#!/bin/sh\n[ \"$CLSYNC_STATUS\" = running ] && exec sleep 30\nexit 0\n",
    );
    vec!["-S".into(), p.to_string_lossy().into_owned()]
}

#[test]
fn an_exec_reusing_a_running_job_id_is_refused() {
    // Its record would replace the running one's: that handler could no longer be killed or
    // reported. Each path that starts a handler asks the same admission check.
    forged_request_with_args_is_refused(
        "exec-job-twice",
        sleeping_handler,
        "exec of job 999, which is still running",
    );
}

#[test]
fn more_handlers_at_once_than_the_helper_runs_are_refused() {
    forged_request_with_args_is_refused(
        "exec-too-many",
        sleeping_handler,
        "more than 64 handlers at once",
    );
}
