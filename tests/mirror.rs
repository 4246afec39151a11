//! End-to-end mirroring with `-M rsyncdirect`: a real daemon, real rsync, real root. Every test
//! builds its own tree, starts its own daemon, changes the tree, and asserts that the whole
//! destination equals the whole source (names, types, content, modes, owners, mtimes, symlink
//! targets, hard-link groups; see `common::tree_diff`). Waiting is bounded polling only.

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// Starts `clsync -M rsyncdirect` on the scratch tree and waits for `ready:`.
fn start(s: &Scratch, delay: u32, extra: &[&str]) -> Daemon {
    let mut d = Daemon::rsyncdirect(s, delay, extra);
    d.wait_ready();
    d
}

/// Stops the daemon with SIGTERM and checks it leaves nothing behind: exit status 0, the trees
/// still equal, TMPDIR empty, no process and no cgroup of the daemon's left.
#[track_caller]
fn stop_clean(mut d: Daemon, s: &Scratch) {
    let st = d.stop();
    assert!(st.success(), "exit status {st}; stderr:\n{}", d.stderr());
    assert_trees_equal(&s.src(), &s.dst());
    assert_no_leftovers(&d, s);
}

#[track_caller]
fn assert_no_leftovers(d: &Daemon, s: &Scratch) {
    assert_eq!(
        dir_entries(&s.tmp()),
        Vec::<OsString>::new(),
        "TMPDIR not left empty"
    );
    assert!(
        wait_for(Duration::from_secs(5), || processes_in_daemon_cgroups(
            d.pid
        )
        .is_empty()),
        "processes left in the daemon's cgroups: {:?}",
        processes_in_daemon_cgroups(d.pid)
    );
    assert_eq!(
        daemon_cgroup_dirs(d.pid),
        Vec::<std::path::PathBuf>::new(),
        "cgroups left behind"
    );
}

fn file(p: impl AsRef<Path>, content: &[u8]) {
    create_file(p, content, Attrs::new(0o644));
}

#[test]
fn initial_sync_copies_existing_tree() {
    let s = Scratch::new("initial");
    populate_sample_tree(&s.src());
    // The root's own attributes are part of the tree too.
    std::os::unix::fs::chown(s.src(), Some(TEST_UID), Some(TEST_GID)).unwrap();
    fs::set_permissions(s.src(), fs::Permissions::from_mode(0o751)).unwrap();
    set_mtime(&s.src(), 1_650_000_000, 42);
    // Something in dst that is not in src must go.
    file(s.dst().join("stale"), b"old\n");
    fs::create_dir(s.dst().join("stale-dir")).unwrap();
    file(s.dst().join("stale-dir/x"), b"old\n");

    let d = start(&s, 0, &[]);
    // `ready:` means the initial sync is done: no polling here.
    assert_trees_equal(&s.src(), &s.dst());

    // While running, TMPDIR holds only the helper's private list directory(ies):
    // clsync-XXXXXX, mode 0700, owned by the helper (uid 0 by default), not by the worker.
    for name in dir_entries(&s.tmp()) {
        let n = name.to_string_lossy();
        assert!(
            n.starts_with("clsync-") && n.len() == "clsync-XXXXXX".len(),
            "unexpected entry in TMPDIR: {n:?}"
        );
        let m = fs::symlink_metadata(s.tmp().join(&name)).unwrap();
        assert!(m.is_dir(), "{n} is not a directory");
        assert_eq!(m.mode() & 0o7777, 0o700, "{n} mode");
        assert_eq!(m.uid(), 0, "{n} owner");
    }
    stop_clean(d, &s);
}

#[test]
fn only_initialsync_syncs_and_exits_zero() {
    let s = Scratch::new("only-initial");
    populate_sample_tree(&s.src());
    let mut d = Daemon::rsyncdirect(&s, 0, &["--only-initialsync"]);
    let st = d.wait_exit(START_TIMEOUT).expect("did not exit");
    assert_eq!(st.code(), Some(0), "stderr:\n{}", d.stderr());
    assert_trees_equal(&s.src(), &s.dst());
    assert_no_leftovers(&d, &s);
}

#[test]
fn exit_on_no_events_syncs_and_exits_zero() {
    let s = Scratch::new("exit-no-events");
    populate_sample_tree(&s.src());
    let mut d = Daemon::rsyncdirect(&s, 0, &["--exit-on-no-events"]);
    let st = d.wait_exit(START_TIMEOUT).expect("did not exit");
    assert_eq!(st.code(), Some(0), "stderr:\n{}", d.stderr());
    assert_trees_equal(&s.src(), &s.dst());
    assert_no_leftovers(&d, &s);
}

#[test]
fn create_modify_delete_file() {
    let s = Scratch::new("cmd");
    create_dir(s.src().join("sub"), Attrs::new(0o755));
    let d = start(&s, 0, &[]);
    let (src, dst) = (s.src(), s.dst());

    create_file(
        src.join("sub/new.txt"),
        b"first\n",
        Attrs::new(0o640).mtime(1_700_000_000, 1),
    );
    create_file(src.join("top.txt"), b"top\n", Attrs::new(0o600));
    wait_synced(&src, &dst, SYNC_TIMEOUT);

    // Modify in place (append), then rewrite shorter.
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(src.join("sub/new.txt"))
            .unwrap();
        f.write_all(b"second\n").unwrap();
    }
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    fs::write(src.join("top.txt"), b"x").unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);

    // Same size, other content, an mtime in another second (rsync's quick check compares size
    // and mtime to the second, so a same-second rewrite is invisible to rsync -a by design).
    fs::write(src.join("top.txt"), b"y").unwrap();
    set_mtime(&src.join("top.txt"), 1_700_000_100, 0);
    wait_synced(&src, &dst, SYNC_TIMEOUT);

    fs::remove_file(src.join("sub/new.txt")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    fs::remove_file(src.join("top.txt")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    stop_clean(d, &s);
}

#[test]
fn attribute_changes_are_mirrored() {
    let s = Scratch::new("attrs");
    create_dir(s.src().join("d"), Attrs::new(0o755));
    file(s.src().join("d/f"), b"data\n");
    create_symlink("f", s.src().join("d/l"), TEST_UID, TEST_GID, None);
    let d = start(&s, 0, &[]);
    let (src, dst) = (s.src(), s.dst());

    fs::set_permissions(src.join("d/f"), fs::Permissions::from_mode(0o4711)).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    std::os::unix::fs::chown(src.join("d/f"), Some(1234), Some(5678)).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    std::os::unix::fs::lchown(src.join("d/l"), Some(0), Some(TEST_GID)).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o2750)).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    set_mtime(&src.join("d/f"), 1_234_567_890, 555);
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    stop_clean(d, &s);
}

#[test]
fn rename_file_and_dir_within_tree() {
    let s = Scratch::new("rename-within");
    let src = s.src();
    create_dir(src.join("a"), Attrs::new(0o755));
    create_dir(src.join("a/inner"), Attrs::new(0o700));
    file(src.join("a/inner/deep.txt"), b"deep\n");
    file(src.join("a/one.txt"), b"one\n");
    create_dir(src.join("b"), Attrs::new(0o755));
    file(src.join("b/victim"), b"will be replaced\n");
    let d = start(&s, 0, &[]);
    let dst = s.dst();

    // File: same directory, another directory, over an existing file.
    fs::rename(src.join("a/one.txt"), src.join("a/uno.txt")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    fs::rename(src.join("a/uno.txt"), src.join("b/uno.txt")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    fs::rename(src.join("b/uno.txt"), src.join("b/victim")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);

    // Directory with contents: rename, move under another directory; then the moved directory
    // must still be watched under its new name.
    fs::rename(src.join("a"), src.join("a2")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    fs::rename(src.join("a2"), src.join("b/a3")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    file(src.join("b/a3/inner/after-move"), b"still watched\n");
    wait_synced(&src, &dst, SYNC_TIMEOUT);

    // Swap-like sequence in one go.
    fs::rename(src.join("b/a3"), src.join("tmpname")).unwrap();
    fs::rename(src.join("b"), src.join("b-old")).unwrap();
    fs::rename(src.join("tmpname"), src.join("b")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    stop_clean(d, &s);
}

#[test]
fn move_into_tree_from_outside() {
    let s = Scratch::new("move-in");
    let outside = s.mkdir("outside");
    create_dir(s.src().join("target"), Attrs::new(0o755));
    let d = start(&s, 0, &[]);
    let (src, dst) = (s.src(), s.dst());

    // Prepared outside the watch root (same file system), never seen by the daemon.
    create_file(
        outside.join("lonely"),
        b"lonely\n",
        Attrs::new(0o640).mtime(1_500_000_000, 7),
    );
    create_dir(outside.join("tree"), Attrs::new(0o750));
    create_dir(outside.join("tree/x"), Attrs::new(0o755));
    create_dir(outside.join("tree/x/y"), Attrs::new(0o755));
    file(outside.join("tree/top"), b"t\n");
    file(outside.join("tree/x/y/bottom"), b"b\n");
    create_hardlink(outside.join("tree/top"), outside.join("tree/x/top-link"));
    create_symlink(
        "../top",
        outside.join("tree/x/up"),
        TEST_UID,
        TEST_GID,
        None,
    );
    set_mtime(&outside.join("tree/x/y"), 1_500_000_100, 100);

    fs::rename(outside.join("lonely"), src.join("lonely")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    fs::rename(outside.join("tree"), src.join("target/tree")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    // The moved-in directories are watched from now on, down to the deepest.
    file(src.join("target/tree/x/y/later"), b"later\n");
    fs::remove_file(src.join("target/tree/top")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    stop_clean(d, &s);
}

#[test]
fn move_out_of_tree() {
    let s = Scratch::new("move-out");
    let outside = s.mkdir("outside");
    let src = s.src();
    create_dir(src.join("leaving"), Attrs::new(0o755));
    create_dir(src.join("leaving/sub"), Attrs::new(0o755));
    file(src.join("leaving/sub/f"), b"f\n");
    file(src.join("leaving-file"), b"bye\n");
    create_dir(src.join("stays"), Attrs::new(0o755));
    let d = start(&s, 0, &[]);
    let dst = s.dst();

    fs::rename(src.join("leaving-file"), outside.join("leaving-file")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    fs::rename(src.join("leaving"), outside.join("leaving")).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);

    // Changes in the moved-out directory are no longer the daemon's business: they must not
    // show up in dst, and the daemon must keep working for the tree.
    file(outside.join("leaving/sub/g"), b"g\n");
    fs::create_dir(outside.join("leaving/new")).unwrap();
    file(src.join("stays/after"), b"after\n");
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    assert!(!dst.join("leaving").exists());
    stop_clean(d, &s);
}

#[test]
fn delete_subtree_rm_rf() {
    let s = Scratch::new("rm-rf");
    let src = s.src();
    let mut p = src.join("doomed");
    for i in 0..6 {
        create_dir(&p, Attrs::new(0o755));
        for j in 0..5 {
            file(p.join(format!("f{j}")), format!("{i}/{j}\n").as_bytes());
        }
        create_symlink("f0", p.join("link"), TEST_UID, TEST_GID, None);
        p = p.join(format!("level{i}"));
    }
    create_dir(src.join("keep"), Attrs::new(0o755));
    file(src.join("keep/k"), b"k\n");
    let d = start(&s, 0, &[]);
    let dst = s.dst();

    let st = std::process::Command::new("rm")
        .arg("-rf")
        .arg(src.join("doomed"))
        .status()
        .unwrap();
    assert!(st.success());
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    assert!(dst.join("keep/k").exists());
    stop_clean(d, &s);
}

#[test]
fn mkdir_p_with_files_written_immediately() {
    let s = Scratch::new("mkdir-p");
    let d = start(&s, 0, &[]);
    let (src, dst) = (s.src(), s.dst());
    // The files appear before the daemon can have watched the new directories: the daemon must
    // scan each new directory after watching it.
    for round in 0..10 {
        let base = src.join(format!("t{round}"));
        let deepest = base.join("a/b/c/d/e");
        fs::create_dir_all(&deepest).unwrap();
        let mut p = base.clone();
        for level in ["a", "b", "c", "d", "e"] {
            p = p.join(level);
            fs::write(p.join(format!("in-{level}")), format!("{round}{level}")).unwrap();
        }
    }
    // And the same with the real mkdir -p and a shell writing right behind it.
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg("mkdir -p sh/a/b/c/d/e && for d in sh/a sh/a/b sh/a/b/c sh/a/b/c/d sh/a/b/c/d/e; do echo x > $d/file; done")
        .current_dir(&src)
        .status()
        .unwrap();
    assert!(st.success());
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    stop_clean(d, &s);
}

#[test]
fn burst_of_2000_files() {
    let s = Scratch::new("burst");
    create_dir(s.src().join("existing"), Attrs::new(0o755));
    let d = start(&s, 1, &[]);
    let (src, dst) = (s.src(), s.dst());
    for i in 0..2000 {
        let dir = match i % 4 {
            0 => src.clone(),
            1 => src.join("existing"),
            _ => src.join(format!("new{:02}", i % 40)),
        };
        if !dir.exists() {
            fs::create_dir(&dir).unwrap();
        }
        fs::write(dir.join(format!("file-{i:04}")), format!("content {i}\n")).unwrap();
    }
    wait_synced(&src, &dst, Duration::from_secs(120));
    assert_eq!(snapshot(&dst).len(), snapshot(&src).len());
    stop_clean(d, &s);
}

/// Names an attacker may choose; none may confuse the daemon, rsync's lists or its argv.
fn awkward_names() -> Vec<OsString> {
    [
        "with space",
        " leading space",
        "trailing space ",
        "ünïcödé ☃ 名前",
        "-",
        "-rf",
        "--delete",
        "--include=*",
        "-e sh -c reboot",
        "*",
        "?",
        "[",
        "]",
        "[abc]",
        "\\",
        "a*b?c[d]e\\f",
        "***",
        "100%",
        "%label%",
        "#not a comment",
        ";semicolon",
        "+ plus",
        "- minus",
        "new\nline",
        "\n",
        "inj\n- *",
        "inj2\n***",
        "tab\there",
        "quote\"s'",
        "$(touch pwned)",
        "..dots",
        "...",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

#[test]
fn awkward_names_initial_and_live() {
    let s = Scratch::new("names");
    let src = s.src();
    create_dir(src.join("pre"), Attrs::new(0o755));
    for (i, n) in awkward_names().into_iter().enumerate() {
        file(src.join("pre").join(&n), format!("pre {i}\n").as_bytes());
    }
    create_dir(src.join("-dir with [brackets]"), Attrs::new(0o755));
    file(src.join("-dir with [brackets]/*"), b"star\n");
    let d = start(&s, 0, &[]);
    let dst = s.dst();
    assert_trees_equal(&src, &dst);

    // Live: files, directories with contents, symlinks to awkward names, renames between them.
    create_dir(src.join("live"), Attrs::new(0o755));
    for (i, n) in awkward_names().into_iter().enumerate() {
        file(src.join("live").join(&n), format!("live {i}\n").as_bytes());
    }
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    for (i, n) in awkward_names().into_iter().enumerate() {
        let mut dn = n.clone();
        dn.push(".d");
        create_dir(src.join(&dn), Attrs::new(0o755));
        file(src.join(&dn).join(&n), format!("nested {i}\n").as_bytes());
        let mut ln = n.clone();
        ln.push(".lnk");
        create_symlink(&n, src.join("live").join(ln), TEST_UID, TEST_GID, None);
    }
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    let names = awkward_names();
    for w in names.windows(2) {
        let mut to = w[1].clone();
        to.push(".renamed");
        fs::rename(src.join("pre").join(&w[0]), src.join("pre").join(to)).unwrap();
    }
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    for n in &names {
        fs::remove_file(src.join("live").join(n)).unwrap();
    }
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    assert!(!src.join("pwned").exists() && !dst.join("pwned").exists());
    stop_clean(d, &s);
}

#[test]
fn names_that_are_not_utf8() {
    let s = Scratch::new("non-utf8");
    let src = s.src();
    let names: Vec<OsString> = [
        b"latin1-\xe9t\xe9".to_vec(),
        b"\xff\xfe".to_vec(),
        b"half-\xe2\x82".to_vec(),
        b"-\x80\n\x81".to_vec(),
    ]
    .into_iter()
    .map(OsString::from_vec)
    .collect();
    file(src.join(&names[0]), b"initial\n");
    let d = start(&s, 0, &[]);
    let dst = s.dst();
    assert_trees_equal(&src, &dst);
    for n in &names[1..] {
        file(src.join(n), b"live\n");
    }
    create_dir(src.join(&names[1]).with_extension("d"), Attrs::new(0o755));
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    fs::rename(src.join(&names[2]), src.join(&names[3]).with_extension("x")).unwrap();
    fs::remove_file(src.join(&names[0])).unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    stop_clean(d, &s);
}

/// A large batch with a busy directory is listed as `/dir` + `/dir/*` (rsync's include matching
/// is quadratic in exact lines); deletions, renames, new files and a removed subtree there still
/// reach the destination, and a wildcard in the directory's name is escaped.
#[test]
fn a_large_batch_is_coarsened_and_still_mirrors_deletes_and_renames() {
    let s = Scratch::new("coarsen");
    let (src, dst) = (s.src(), s.dst());
    create_dir(src.join("bu*sy[1]"), Attrs::new(0o755));
    create_dir(src.join("quiet"), Attrs::new(0o755));
    for i in 0..1500 {
        file(
            src.join(format!("bu*sy[1]/f{i:04}")),
            format!("{i}\n").as_bytes(),
        );
    }
    file(src.join("quiet/keep"), b"keep\n");
    create_dir(src.join("bu*sy[1]/sub"), Attrs::new(0o755));
    file(src.join("bu*sy[1]/sub/x"), b"x\n");
    // A subtree of more directories than 1024 and than the pass has paths: listed as `/dir` +
    // `/dir/*`, not `/dir/***`.
    create_dir(src.join("bu*sy[1]/many"), Attrs::new(0o755));
    for i in 0..3000 {
        create_dir(
            src.join(format!("bu*sy[1]/many/d{i:04}")),
            Attrs::new(0o755),
        );
    }
    // A busy directory with a small subtree: listed as `/small/***`.
    create_dir(src.join("small"), Attrs::new(0o755));
    create_dir(src.join("small/in"), Attrs::new(0o755));
    file(src.join("small/in/old"), b"old\n");
    // rsync through a wrapper that keeps a copy of each include list.
    let kept = s.mkdir("kept");
    let wrapper = s.path("rsync-wrapper");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprev=\nfor a in \"$@\"; do [ \"$prev\" = --include-from ] && cat \"$a\" >> {}/lists; prev=$a; done\nexec rsync \"$@\"\n",
            kept.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let d = start(&s, 2, &["-d1", "-S", wrapper.to_str().unwrap()]);
    assert_trees_equal(&src, &dst);
    for i in 0..500 {
        fs::remove_file(src.join(format!("bu*sy[1]/f{i:04}"))).unwrap();
    }
    for i in 500..800 {
        fs::rename(
            src.join(format!("bu*sy[1]/f{i:04}")),
            src.join(format!("bu*sy[1]/renamed{i:04}")),
        )
        .unwrap();
    }
    for i in 0..600 {
        file(src.join(format!("bu*sy[1]/new{i:04}")), b"new\n");
    }
    file(src.join("quiet/added"), b"added\n");
    fs::remove_dir_all(src.join("bu*sy[1]/sub")).unwrap();
    for i in 0..40 {
        file(src.join(format!("small/s{i}")), b"s\n");
    }
    fs::remove_file(src.join("small/in/old")).unwrap();
    file(src.join("small/in/new"), b"new\n");
    wait_synced(&src, &dst, Duration::from_secs(120));
    assert!(
        d.stderr().contains("coarsened"),
        "no coarsened pass: {}",
        d.stderr()
    );
    let lists = fs::read_to_string(kept.join("lists")).unwrap_or_default();
    let lines: Vec<&str> = lists.lines().collect();
    for want in ["/bu\\*sy\\[1\\]", "/bu\\*sy\\[1\\]/*", "/small/***"] {
        assert!(lines.contains(&want), "no line {want:?} in:\n{lists}");
    }
    stop_clean(d, &s);
}

/// With rules, a large batch keeps its exact lists: a recursive entry would carry the files
/// the rules exclude.
#[test]
fn rules_keep_a_large_batch_exact_and_excluded_files_out() {
    let s = Scratch::new("coarsen-rules");
    let (src, dst) = (s.src(), s.dst());
    create_dir(src.join("busy"), Attrs::new(0o755));
    let rules = s.path("rules");
    fs::write(&rules, "-*secret$\n").unwrap();
    let mut d = Daemon::rsyncdirect(&s, 2, &["-d1", "-R", rules.to_str().unwrap()]);
    d.wait_ready();
    for i in 0..1500 {
        file(src.join(format!("busy/f{i:04}")), b"x\n");
    }
    file(src.join("busy/secret"), b"secret\n");
    let last = dst.join("busy/f1499");
    assert!(
        wait_for(Duration::from_secs(120), || last.exists()),
        "not synced: {}",
        d.stderr()
    );
    assert!(wait_for(Duration::from_secs(120), || {
        snapshot(&dst).len() + 1 == snapshot(&src).len()
    }));
    assert!(
        !dst.join("busy/secret").exists(),
        "an excluded file was synced"
    );
    assert!(!d.stderr().contains("coarsened"), "{}", d.stderr());
    let st = d.stop();
    assert!(st.success(), "{}", d.stderr());
}

#[test]
fn a_directory_listing_larger_than_a_datagram_is_read_whole() {
    // With rules the initial walk lists files too (to collect the excludes), and a directory of
    // 3,000 long names (~200 KB of entries) comes back over several datagrams, next to many
    // small directories packed into one: a lost or misplaced chunk would let a `secret` file
    // through or leave a file or directory out.
    let s = Scratch::new("walk-chunks");
    let (src, dst) = (s.src(), s.dst());
    let pad = "p".repeat(48);
    create_dir(src.join("wide"), Attrs::new(0o755));
    for i in 0..3000 {
        let tail = if i % 7 == 3 { "secret" } else { "plain" };
        file(src.join(format!("wide/{i:05}-{pad}-{tail}")), b"x\n");
    }
    for i in 0..300 {
        create_dir(src.join(format!("small{i:03}")), Attrs::new(0o755));
        file(src.join(format!("small{i:03}/{pad}-secret")), b"s\n");
        file(src.join(format!("small{i:03}/{pad}-plain")), b"p\n");
    }
    let rules = s.path("rules");
    fs::write(&rules, "-f.*-secret$\n").unwrap();
    let mut d = Daemon::rsyncdirect(&s, 0, &["-R", rules.to_str().unwrap()]);
    d.wait_ready();
    let want: Vec<String> = snapshot(&src)
        .keys()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.ends_with("-secret"))
        .collect();
    let got: Vec<String> = snapshot(&dst)
        .keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(want.len(), 3000 - 428 + 300 * 2 + 1, "the fixture itself");
    assert_eq!(got, want, "{}", d.stderr());
    let st = d.stop();
    assert!(st.success(), "{}", d.stderr());
}

#[test]
fn a_pass_of_thousands_of_paths_gives_its_memory_back_within_the_sandbox() {
    // After a pass of 4,096 paths or more the worker hands freed heap pages back to the kernel
    // (malloc_trim: brk and madvise). The worker's seccomp filter must allow what that takes: a
    // trap would end the daemon with exit 159 instead of a synced tree.
    let s = Scratch::new("trim");
    let (src, dst) = (s.src(), s.dst());
    let mut d = Daemon::rsyncdirect(&s, 0, &["-d1"]);
    d.wait_ready();
    // The events below reach the worker as one pass: 4,200 files, about 12,600 events, within
    // the default inotify queue of 16,384 (if another test lowered it meanwhile, the overflow's
    // rescan is one large pass too).
    d.suspend();
    for i in 0..4200 {
        fs::write(src.join(format!("f{i:04}")), b"x\n").unwrap();
    }
    d.resume();
    let needle = "returned freed memory after a pass of ";
    d.wait_log(SYNC_TIMEOUT, needle);
    let log = d.stderr();
    let paths: usize = log
        .lines()
        .find_map(|l| l.split(needle).nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(paths >= 4096, "{log}");
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    assert!(d.try_wait().is_none(), "{}", d.stderr());
    let st = d.stop();
    assert!(st.success(), "{}", d.stderr());
}

#[test]
fn a_change_beneath_a_new_directory_during_its_pass_is_synced_by_the_next_pass() {
    // While a new directory waits in the queue to be synced whole (`/dir/***`), events for files
    // beneath it add nothing and are dropped; once its pass has started, they must count again.
    // The handler is rsync followed by a pause, so the pass is still running when the file
    // changes after rsync copied it.
    let s = Scratch::new("inflight");
    let (src, dst) = (s.src(), s.dst());
    let wrapper = s.path("rsync-then-wait");
    create_file(
        &wrapper,
        b"#!/bin/sh\n/usr/bin/rsync \"$@\"\nrc=$?\nsleep 1\nexit $rc\n",
        Attrs::new(0o755),
    );
    let w = wrapper.to_str().unwrap();
    let mut d = Daemon::rsyncdirect(&s, 0, &["-S", w]);
    d.wait_ready();
    fs::create_dir(src.join("new")).unwrap();
    fs::write(src.join("new/f"), b"first\n").unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || fs::read(dst.join("new/f"))
            .is_ok_and(|c| c == b"first\n")),
        "{}",
        d.stderr()
    );
    // Now (most likely within the handler's pause) the file changes beneath the directory whose
    // pass is running.
    fs::write(src.join("new/f"), b"second, longer\n").unwrap();
    fs::create_dir(src.join("new/sub")).unwrap();
    fs::write(src.join("new/sub/g"), b"g\n").unwrap();
    wait_synced(&src, &dst, SYNC_TIMEOUT);
    assert_eq!(fs::read(dst.join("new/f")).unwrap(), b"second, longer\n");
    let st = d.stop();
    assert!(st.success(), "{}", d.stderr());
}
