//! Self-test of the test infrastructure in tests/common: it must call equal what `rsync -aH`
//! produces, and must catch every kind of divergence the daemon could leave behind. Also checks
//! the process and cgroup helpers against stand-in processes, so the daemon tests can rely on them
//! before the daemon exists.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

/// A source with the sample tree and a fresh `rsync -aH` copy of it in dst.
fn copied(name: &str) -> Scratch {
    let s = Scratch::new(name);
    populate_sample_tree(&s.src());
    rsync_copy(&s.src(), &s.dst());
    s
}

/// Applies `mutate` to an exact copy and checks the comparison reports it, with every string in
/// `expect` somewhere in the diff, and that `assert_trees_equal` panics.
fn must_differ(name: &str, mutate: impl FnOnce(&Path, &Path), expect: &[&str]) {
    let s = copied(name);
    assert_trees_equal(&s.src(), &s.dst());
    mutate(&s.src(), &s.dst());
    let diffs = tree_diff(&s.src(), &s.dst());
    let text = diffs.join("\n");
    assert!(!diffs.is_empty(), "{name}: mutation not detected");
    for e in expect {
        assert!(
            text.contains(e),
            "{name}: expected {e:?} in the diff, got:\n{text}"
        );
    }
    let r = catch_unwind(AssertUnwindSafe(|| assert_trees_equal(&s.src(), &s.dst())));
    let msg = r.expect_err("assert_trees_equal accepted different trees");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("trees differ"),
        "{name}: panic message {msg:?}"
    );
    assert!(
        msg.contains(&diffs[0]),
        "{name}: panic message lacks the diff"
    );
}

#[test]
fn rsync_copy_is_equal_and_sample_tree_is_rich() {
    let s = copied("selftest-equal");
    assert_trees_equal(&s.src(), &s.dst());
    // Also both ways round, and a tree with itself.
    assert!(tree_diff(&s.dst(), &s.src()).is_empty());
    assert!(tree_diff(&s.src(), &s.src()).is_empty());

    // The sample tree holds what the comparison is meant to cover.
    let snap = snapshot(&s.src());
    let count = |f: &dyn Fn(&Entry) -> bool| snap.values().filter(|e| f(e)).count();
    assert!(count(&|e| e.kind == Kind::Dir) >= 7);
    assert!(count(&|e| matches!(e.kind, Kind::Symlink(_))) >= 5);
    assert_eq!(count(&|e| e.kind == Kind::Fifo), 1);
    assert!(count(&|e| e.uid == TEST_UID) >= 10);
    assert!(count(&|e| e.perm & 0o7000 != 0) >= 3);
    let linked = snap.get(Path::new("docs/linked")).unwrap();
    assert_eq!(
        count(&|e| e.ino == linked.ino && e.dev == linked.dev),
        3,
        "hard-link group of three"
    );
    // rsync -aH really preserved the link groups on the copy (not just equal partitions by luck).
    let d = fs::metadata(s.dst().join("docs/linked")).unwrap();
    assert_eq!(d.nlink(), 3);
    assert_eq!(
        d.ino(),
        fs::metadata(s.dst().join("shared/linked-3")).unwrap().ino()
    );
}

#[test]
fn created_nodes_have_requested_attributes() {
    let s = Scratch::new("selftest-attrs");
    let f = create_file(
        s.src().join("f"),
        b"x",
        Attrs::new(0o4750).mtime(1_500_000_000, 987_654_321),
    );
    let m = fs::symlink_metadata(&f).unwrap();
    assert_eq!((m.uid(), m.gid()), (TEST_UID, TEST_GID));
    assert_eq!(m.mode() & 0o7777, 0o4750);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 987_654_321));

    let l = create_symlink(
        "f",
        s.src().join("l"),
        TEST_UID,
        0,
        Some((1_400_000_000, 5)),
    );
    let m = fs::symlink_metadata(&l).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!((m.uid(), m.gid()), (TEST_UID, 0));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_400_000_000, 5));

    let d = create_dir(s.src().join("d"), Attrs::new(0o2711).owner(1, 2));
    let m = fs::symlink_metadata(&d).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1, 2, 0o2711));

    let h = create_hardlink(&f, s.src().join("d/h"));
    assert_eq!(
        fs::metadata(&h).unwrap().ino(),
        fs::metadata(&f).unwrap().ino()
    );
    assert_eq!(fs::metadata(&h).unwrap().nlink(), 2);

    let root = s.root().to_path_buf();
    assert!(s.src().is_dir() && s.dst().is_dir() && s.tmp().is_dir());
    drop(s);
    if std::env::var_os("CLSYNC_TEST_KEEP").is_none() {
        assert!(!root.exists(), "scratch dir not removed on drop");
    }
}

#[test]
fn detects_mode_changes() {
    must_differ(
        "selftest-mode",
        |_, d| fs::set_permissions(d.join("secret"), fs::Permissions::from_mode(0o640)).unwrap(),
        &["\"secret\": mode 0600 (src) != 0640 (dst)"],
    );
    must_differ(
        "selftest-setuid",
        |_, d| {
            fs::set_permissions(d.join("setuid-tool"), fs::Permissions::from_mode(0o755)).unwrap()
        },
        &["\"setuid-tool\": mode 4755 (src) != 0755 (dst)"],
    );
    must_differ(
        "selftest-dirmode",
        |_, d| fs::set_permissions(d.join("shared"), fs::Permissions::from_mode(0o777)).unwrap(),
        &["\"shared\": mode 1777 (src) != 0777 (dst)"],
    );
    must_differ(
        "selftest-rootmode",
        |_, d| fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap(),
        &["\".\": mode 0755 (src) != 0700 (dst)"],
    );
}

#[test]
fn detects_owner_changes() {
    must_differ(
        "selftest-uid",
        |_, d| std::os::unix::fs::lchown(d.join("readme.txt"), Some(0), None).unwrap(),
        &["\"readme.txt\": uid 4242 (src) != 0 (dst)"],
    );
    must_differ(
        "selftest-gid",
        |_, d| std::os::unix::fs::lchown(d.join("docs/deep"), None, Some(7)).unwrap(),
        &["\"docs/deep\": gid 4243 (src) != 7 (dst)"],
    );
    must_differ(
        "selftest-linkowner",
        |_, d| std::os::unix::fs::lchown(d.join("link-rel"), Some(0), Some(0)).unwrap(),
        &[
            "\"link-rel\": uid 4242 (src) != 0 (dst)",
            "\"link-rel\": gid",
        ],
    );
}

#[test]
fn detects_mtime_changes() {
    must_differ(
        "selftest-mtime-s",
        |_, d| set_mtime(&d.join("readme.txt"), 1_600_000_002, 123_456_789),
        &["\"readme.txt\": mtime 1600000001.123456789 (src) != 1600000002.123456789 (dst)"],
    );
    must_differ(
        "selftest-mtime-ns",
        |_, d| set_mtime(&d.join("readme.txt"), 1_600_000_001, 123_456_790),
        &["\"readme.txt\": mtime 1600000001.123456789 (src) != 1600000001.123456790 (dst)"],
    );
    must_differ(
        "selftest-mtime-link",
        |_, d| set_mtime(&d.join("link-dangling"), 1_600_000_015, 14),
        &["\"link-dangling\": mtime"],
    );
    must_differ(
        "selftest-mtime-dir",
        |_, d| set_mtime(&d.join("docs/deep/er"), 1_600_000_022, 250_000_021),
        &["\"docs/deep/er\": mtime"],
    );
    must_differ(
        "selftest-mtime-root",
        |_, d| set_mtime(d, 1_600_000_029, 30),
        &["\".\": mtime"],
    );
    // A new entry in a directory changes its mtime: deleting it again in dst only is caught.
    must_differ(
        "selftest-mtime-dirent",
        |_, d| {
            fs::write(d.join("empty/x"), b"").unwrap();
            fs::remove_file(d.join("empty/x")).unwrap();
        },
        &["\"empty\": mtime"],
    );
}

#[test]
fn nanoseconds_are_compared_for_regular_files_only() {
    // Documented decision (see tree_diff): rsync -aH does not correct the mtime of a directory,
    // symlink or FIFO that matches to the second, so their nanoseconds are not compared ...
    let s = copied("selftest-nsec");
    set_mtime(&s.dst().join("docs"), 1_600_000_023, 0);
    set_mtime(&s.dst(), 1_600_000_030, 999);
    set_mtime(&s.dst().join("link-rel"), 1_600_000_011, 0);
    set_mtime(&s.dst().join("docs/fifo"), 1_600_000_016, 0);
    assert_trees_equal(&s.src(), &s.dst());
    // ... which is rsync's own behaviour: another run leaves them as they are.
    rsync_copy(&s.src(), &s.dst());
    for p in ["docs", "link-rel", "docs/fifo"] {
        assert_eq!(
            fs::symlink_metadata(s.dst().join(p)).unwrap().mtime_nsec(),
            0,
            "rsync corrected the nanoseconds of {p}; revisit tree_diff"
        );
    }
    // A regular file is compared to the nanosecond (see also detects_mtime_changes).
    set_mtime(&s.dst().join("secret"), 1_600_000_002, 2);
    assert_eq!(
        tree_diff(&s.src(), &s.dst()),
        vec!["\"secret\": mtime 1600000002.000000001 (src) != 1600000002.000000002 (dst)"]
    );
}

/// Rewrites a file in place keeping size, owner, mode and mtime.
fn flip_byte_keeping_attrs(p: &Path, at: usize) {
    let m = fs::symlink_metadata(p).unwrap();
    let mut c = fs::read(p).unwrap();
    c[at] ^= 0x20;
    fs::write(p, &c).unwrap();
    set_mtime(p, m.mtime(), m.mtime_nsec());
}

#[test]
fn detects_content_changes() {
    must_differ(
        "selftest-content-same-size",
        |_, d| flip_byte_keeping_attrs(&d.join("docs/deep/blob.bin"), 69_999),
        &["\"docs/deep/blob.bin\": content differs"],
    );
    must_differ(
        "selftest-content-first-byte",
        |_, d| flip_byte_keeping_attrs(&d.join("readme.txt"), 0),
        &["\"readme.txt\": content differs"],
    );
    must_differ(
        "selftest-content-size",
        |_, d| {
            let m = fs::symlink_metadata(d.join("secret")).unwrap();
            fs::write(d.join("secret"), b"top secret\nplus\n").unwrap();
            set_mtime(&d.join("secret"), m.mtime(), m.mtime_nsec());
        },
        &["\"secret\": size 11 (src) != 16 (dst)"],
    );
}

#[test]
fn detects_type_target_and_presence_changes() {
    must_differ(
        "selftest-target",
        |_, d| {
            fs::remove_file(d.join("link-rel")).unwrap();
            create_symlink(
                "secret",
                d.join("link-rel"),
                TEST_UID,
                TEST_GID,
                Some((1_600_000_011, 11)),
            );
        },
        &["\"link-rel\": symlink target \"readme.txt\" (src) != \"secret\" (dst)"],
    );
    must_differ(
        "selftest-type",
        |_, d| {
            fs::remove_file(d.join("nothing")).unwrap();
            create_dir(
                d.join("nothing"),
                Attrs::new(0o000).mtime(1_600_000_003, 999_999_999),
            );
        },
        &["\"nothing\": type file (src) != directory (dst)"],
    );
    must_differ(
        "selftest-fifo",
        |_, d| {
            fs::remove_file(d.join("docs/fifo")).unwrap();
            create_file(
                d.join("docs/fifo"),
                b"",
                Attrs::new(0o620).mtime(1_600_000_016, 16),
            );
        },
        &["\"docs/fifo\": type fifo (src) != file (dst)"],
    );
    must_differ(
        "selftest-extra",
        |_, d| {
            create_file(d.join("docs/deep/er/extra"), b"", Attrs::new(0o644));
        },
        &["\"docs/deep/er/extra\": only in dst (file)"],
    );
    must_differ(
        "selftest-missing",
        |_, d| fs::remove_file(d.join("docs/deep/er/est/leaf")).unwrap(),
        &["\"docs/deep/er/est/leaf\": only in src (file)"],
    );
    must_differ(
        "selftest-missing-dir",
        |_, d| fs::remove_dir(d.join("empty")).unwrap(),
        &["\"empty\": only in src (directory)"],
    );
    must_differ(
        "selftest-newline",
        |s, _| {
            create_file(s.join("new\nline"), b"", Attrs::new(0o644));
        },
        &["\"new\\nline\": only in src (file)"],
    );
}

#[test]
fn detects_hard_link_grouping() {
    // rsync -a without -H: every link becomes a separate, otherwise identical file.
    must_differ(
        "selftest-links-split",
        |s, d| {
            fs::remove_dir_all(d).unwrap();
            fs::create_dir(d).unwrap();
            let out = Command::new("rsync")
                .arg("-a")
                .arg(format!("{}/", s.display()))
                .arg(format!("{}/", d.display()))
                .output()
                .unwrap();
            assert!(out.status.success());
        },
        &[
            "hard links {\"docs/linked\", \"docs/linked-2\", \"shared/linked-3\"} (src) != {\"docs/linked\"} (dst)",
            "hard links {\"pair-a\", \"pair-b\"} (src)",
        ],
    );
    // One name of the group replaced by an identical copy.
    must_differ(
        "selftest-links-one-broken",
        |_, d| {
            let p = d.join("docs/linked-2");
            let m = fs::symlink_metadata(&p).unwrap();
            let c = fs::read(&p).unwrap();
            fs::remove_file(&p).unwrap();
            create_file(
                &p,
                &c,
                Attrs::new(m.mode() & 0o7777)
                    .owner(m.uid(), m.gid())
                    .mtime(m.mtime(), m.mtime_nsec()),
            );
        },
        &["hard links"],
    );
    // Two separate identical files joined into one inode.
    must_differ(
        "selftest-links-joined",
        |_, d| {
            fs::remove_file(d.join("pair-lookalike")).unwrap();
            create_hardlink(d.join("pair-a"), d.join("pair-lookalike"));
        },
        &["hard links {\"pair-a\", \"pair-b\"} (src) != {\"pair-a\", \"pair-b\", \"pair-lookalike\"} (dst)"],
    );
}

#[test]
fn wait_helpers_poll_and_bound() {
    let mut n = 0;
    assert!(wait_for(Duration::from_secs(10), || {
        n += 1;
        n == 5
    }));
    assert_eq!(n, 5);
    let mut calls = 0;
    assert!(!wait_for(Duration::from_millis(100), || {
        calls += 1;
        false
    }));
    assert!(calls >= 2, "condition re-checked at the deadline");

    // wait_synced returns once a concurrent copy completes ...
    let s = Scratch::new("selftest-waitsynced");
    populate_sample_tree(&s.src());
    let (src, dst) = (s.src(), s.dst());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        rsync_copy(&src, &dst);
    });
    wait_synced(&s.src(), &s.dst(), Duration::from_secs(30));
    t.join().unwrap();
    // ... and panics with the diff when the trees stay different.
    fs::remove_file(s.dst().join("secret")).unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        wait_synced(&s.src(), &s.dst(), Duration::from_millis(200))
    }));
    let msg = r.expect_err("wait_synced accepted different trees");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("\"secret\": only in src"), "{msg}");
}

/// A stand-in daemon: a shell that forks a long-running child (the "helper"), prints a ready
/// line, and waits; on SIGTERM it ends its child and exits 0.
fn fake_daemon(s: &Scratch) -> std::path::PathBuf {
    let p = s.path("fake-daemon.sh");
    write_script(
        &p,
        "#!/bin/sh\nsleep 300 &\nchild=$!\ntrap 'kill $child; exit 0' TERM\n\
         echo \"Info: ready: fake daemon, TMPDIR=$TMPDIR\" >&2\nwait\n",
    );
    p
}

#[test]
fn daemon_handle_finds_helper_and_kills_everything_on_drop() {
    let s = Scratch::new("selftest-daemon-drop");
    let prog = fake_daemon(&s);
    let mut d = Daemon::spawn(&prog, &s, &[], &[]);
    d.wait_ready();
    assert!(d
        .stderr()
        .contains(&format!("TMPDIR={}", s.tmp().display())));
    let helper = d.helper_proc();
    assert!(helper.alive());
    // The forked shell becomes `sleep` a moment after the fork.
    assert!(wait_for(SYNC_TIMEOUT, || status_of(helper.pid)["Name"] == "sleep"));
    assert_eq!(status_of(helper.pid)["PPid"], d.pid.to_string());
    let worker = d.worker();
    assert!(worker.alive());
    drop(d);
    assert!(!helper.alive(), "helper survived Drop");
    assert!(!worker.alive(), "worker survived Drop");
    assert!(
        Proc::of(worker.pid).is_none_or(|p| p != worker),
        "worker not reaped"
    );
}

#[test]
fn daemon_handle_stop_is_graceful() {
    let s = Scratch::new("selftest-daemon-stop");
    let prog = fake_daemon(&s);
    let mut d = Daemon::spawn(&prog, &s, &[], &[]);
    d.wait_ready();
    let helper = d.helper_proc();
    let st = d.stop();
    assert!(st.success(), "{st}");
    assert!(!helper.alive());
}

#[test]
fn daemon_handle_reports_early_exit() {
    let s = Scratch::new("selftest-daemon-early");
    let p = s.path("dies.sh");
    write_script(&p, "#!/bin/sh\necho 'Error: no such thing' >&2\nexit 3\n");
    let mut d = Daemon::spawn(&p, &s, &[], &[]);
    let r = catch_unwind(AssertUnwindSafe(|| d.wait_ready()));
    let msg = r.expect_err("wait_ready accepted a dead daemon");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("exited") && msg.contains("no such thing"),
        "{msg}"
    );
    assert_eq!(d.try_wait().and_then(|s| s.code()), Some(3));
}

#[test]
fn proc_helpers_read_status_groups_and_cgroups() {
    let me = std::process::id() as i32;
    let st = status_of(me);
    assert_eq!(ids(&st["Uid"]), vec![0, 0, 0, 0], "the tests run as root");
    assert_ne!(cap_mask(&st["CapEff"]), 0);
    assert_eq!(cap_mask("00000000000000e4"), 0xe4);
    assert!(try_status_of(i32::MAX).is_none());

    // A child in its own process group.
    let s = Scratch::new("selftest-pgrp");
    let mut d = {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let pid = d.id() as i32;
    assert_eq!(process_group_members(pid), vec![pid]);
    assert!(children_of(me).contains(&pid));
    assert!(descendants_of(me).contains(&pid));
    let p = Proc::of(pid).unwrap();
    p.signal(Signal::SIGKILL);
    d.wait().unwrap();
    assert!(!p.alive());
    assert!(process_group_members(pid).is_empty());
    drop(s);

    // Our cgroups resolve to existing directories, the pids hierarchy among them on v1.
    let cgs = cgroups_of(me);
    assert!(!cgs.is_empty());
    for c in &cgs {
        if let Some(d) = &c.dir {
            assert!(d.is_dir(), "{c:?}");
        }
    }
    assert!(cgs.iter().any(|c| c.dir.is_some()));

    // daemon_cgroup_dirs finds a clsync-<pid> group below ours, remove_daemon_cgroups removes
    // it with its children. (Above the kernel's largest pid_max, 2^22, so no real daemon is
    // touched; our own pid added, so concurrent runs of this test do not collide.)
    let fake = (1 << 22) + me;
    assert!(daemon_cgroup_dirs(fake).is_empty());
    let base = cgs
        .iter()
        .filter_map(|c| c.dir.clone())
        .find(|d| d.join("cgroup.procs").exists())
        .expect("a writable cgroup hierarchy");
    let g = base.join(format!("clsync-{fake}"));
    fs::create_dir(&g).unwrap();
    fs::create_dir(g.join("handlers")).unwrap();
    assert_eq!(daemon_cgroup_dirs(fake), vec![g.clone()]);
    remove_daemon_cgroups(fake);
    assert!(!g.exists());
    assert!(daemon_cgroup_dirs(fake).is_empty());
}

#[test]
fn must_differ_itself_rejects_an_undetected_mutation() {
    // The mutation checks above would be worthless if must_differ passed on equal trees.
    let r = catch_unwind(AssertUnwindSafe(|| {
        must_differ("selftest-noop", |_, _| {}, &[])
    }));
    assert!(r.is_err());
    let r = catch_unwind(AssertUnwindSafe(|| {
        must_differ(
            "selftest-wrong-expectation",
            |_, d| set_mtime(&d.join("secret"), 1, 1),
            &["\"secret\": uid"],
        )
    }));
    assert!(r.is_err());
}
