//! Every handler mode through the real helper, compared with what clsync 0.4.5 does (reference
//! §4): a logging handler records each call's argv, CLSYNC_* environment and list-file contents,
//! and the tests check them. List lines are compared as sets: clsync writes them in hash order.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

/// One recorded handler call.
#[derive(Debug)]
struct Call {
    argv: Vec<Vec<u8>>,
    status: String,
    iteration: String,
    /// Contents of the arguments that are files in the daemon's lists directory.
    lists: Vec<Vec<u8>>,
}

impl Call {
    fn args(&self) -> Vec<String> {
        self.argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }
    fn list_lines(&self, i: usize) -> BTreeSet<String> {
        String::from_utf8_lossy(&self.lists[i])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Writes the logging handler: every call leaves `<ns>.argv` (NUL-separated arguments, then
/// status and iteration) and `<ns>.list<N>` copies of its list files.
fn logger(s: &Scratch) -> (PathBuf, PathBuf) {
    let log = s.mkdir("calls");
    let h = s.path("handler.sh");
    let tmp = s.tmp();
    write_script(
        &h,
        &format!(
            r#"#!/bin/sh
n=$(date +%s%N)
printf '%s\0' "$@" > {log}/$n.argv.tmp
printf '%s\0%s\0' "$CLSYNC_STATUS" "$CLSYNC_ITERATION" >> {log}/$n.argv.tmp
i=0
for a in "$@"; do
  case "$a" in {tmp}/*) cp "$a" {log}/$n.list$i; i=$((i+1));; esac
done
mv {log}/$n.argv.tmp {log}/$n.argv
exit 0
"#,
            log = log.display(),
            tmp = tmp.display()
        ),
    );
    (h, log)
}

fn calls(log: &Path) -> Vec<Call> {
    let mut names: Vec<String> = fs::read_dir(log)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".argv"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let raw = fs::read(log.join(n)).unwrap();
            let mut parts: Vec<Vec<u8>> = raw.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
            parts.pop(); // after the last NUL
            let iteration = String::from_utf8_lossy(&parts.pop().unwrap()).into_owned();
            let status = String::from_utf8_lossy(&parts.pop().unwrap()).into_owned();
            let stem = n.trim_end_matches(".argv");
            let mut lists = Vec::new();
            while let Ok(b) = fs::read(log.join(format!("{stem}.list{}", lists.len()))) {
                lists.push(b);
            }
            Call {
                argv: parts,
                status,
                iteration,
                lists,
            }
        })
        .collect()
}

/// [`handler_args`] with no delays (later options win, so `extra` may set them).
fn args(s: &Scratch, mode: &str, handler: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut all = vec!["-w0", "-t0", "-T0"];
    all.extend_from_slice(extra);
    handler_args(s, mode, handler, &all)
}

/// The reference's sample tree: a.tmp, b.txt, sub/deep/x, keep/k.tmp.
fn sample(s: &Scratch) {
    let src = s.src();
    for d in ["sub", "sub/deep", "keep"] {
        fs::create_dir(src.join(d)).unwrap();
    }
    for f in ["a.tmp", "b.txt", "sub/deep/x", "keep/k.tmp"] {
        fs::write(src.join(f), b"x\n").unwrap();
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Runs a daemon to its end with --exit-on-no-events and returns its calls.
fn run_once(s: &Scratch, mode: &str, extra: &[&str]) -> Vec<Call> {
    let (h, log) = logger(s);
    let mut a = vec!["--exit-on-no-events"];
    a.extend_from_slice(extra);
    let mut d = Daemon::start(s, &args(s, mode, &h, &a), &[]);
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert!(st.success(), "exit {st}; stderr:\n{}", d.stderr());
    calls(&log)
}

#[test]
fn shell_initial_sync_lists_every_node_with_clsyncs_masks() {
    let s = Scratch::new("mode-shell-init");
    sample(&s);
    let c = run_once(&s, "shell", &[]);
    assert_eq!(c.len(), 1, "{c:#?}");
    let a = c[0].args();
    assert_eq!(a[..2], ["synclist", "nolabel"]);
    assert!(a[2].starts_with(&s.tmp().display().to_string()), "{a:?}");
    assert_eq!(
        (c[0].status.as_str(), c[0].iteration.as_str()),
        ("initsync", "1")
    );
    assert_eq!(
        c[0].list_lines(0),
        set(&[
            "sync nolabel 1073742080 ",
            "sync nolabel 256 a.tmp",
            "sync nolabel 256 b.txt",
            "sync nolabel 1073742080 sub",
            "sync nolabel 1073742080 sub/deep",
            "sync nolabel 256 sub/deep/x",
            "sync nolabel 1073742080 keep",
            "sync nolabel 256 keep/k.tmp",
        ])
    );
}

#[test]
fn rsyncshell_initial_sync_and_excludes_from_rules() {
    let s = Scratch::new("mode-rsyncshell");
    sample(&s);
    let rules = s.path("rules");
    fs::write(&rules, "-f\\.tmp$\n-d^sub/deep$\n+*\n").unwrap();
    let c = run_once(
        &s,
        "rsyncshell",
        &["-R", rules.to_str().unwrap(), "-l", "lbl"],
    );
    assert_eq!(c.len(), 1, "{c:#?}");
    let a = c[0].args();
    assert_eq!(a[..2], ["rsynclist", "lbl"]);
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(c[0].list_lines(0), set(&["/***"]));
    assert_eq!(
        c[0].list_lines(1),
        set(&["/sub/deep", "/keep/k.tmp", "/a.tmp"])
    );
}

#[test]
fn direct_passes_paths_that_cannot_be_options() {
    let s = Scratch::new("mode-direct");
    let src = s.src();
    for f in ["-rf", "--help", "--reference=x", "plain"] {
        fs::write(src.join(f), b"x\n").unwrap();
    }
    let (h, log) = logger(&s);
    let mut d = Daemon::start(
        &s,
        &args(
            &s,
            "direct",
            &h,
            &["--exit-on-no-events", "-D", s.dst().to_str().unwrap()],
        ),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert!(st.success(), "{}", d.stderr());
    let c = calls(&log);
    assert_eq!(c.len(), 1);
    let a: BTreeSet<String> = c[0].args().into_iter().collect();
    let want = set(&[
        ".",
        "./-rf",
        "./--help",
        "./--reference=x",
        "plain",
        &format!("{}/", s.dst().display()),
    ]);
    assert_eq!(a, want);
}

#[test]
fn direct_without_destination_is_refused_with_the_default_cp() {
    let s = Scratch::new("mode-direct-nodest");
    // The default handler (cp) would copy every changed file to "/": refused.
    let mut a = args(&s, "direct", Path::new("/bin/true"), &[]);
    let at = a.iter().position(|x| x == "-S").unwrap();
    a.drain(at..at + 2);
    let mut d = Daemon::start(&s, &a, &[]);
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert_eq!(st.code(), Some(22));
    assert!(d.stderr().contains("--destination-dir"), "{}", d.stderr());
    // Another handler gets clsync's argv (last argument "/") with a warning.
    let c = run_once(&s, "direct", &[]);
    assert_eq!(c[0].args().last().map(String::as_str), Some("/"));
}

#[test]
fn simple_runs_once_per_event_with_absolute_paths_and_masks() {
    let s = Scratch::new("mode-simple");
    fs::write(s.src().join("a.tmp"), b"x\n").unwrap();
    let (h, log) = logger(&s);
    let mut d = Daemon::start(&s, &args(&s, "simple", &h, &[]), &[]);
    d.wait_ready();
    let src = s.src().display().to_string();
    let init = calls(&log);
    let init_args: BTreeSet<Vec<String>> = init.iter().map(|c| c.args()).collect();
    let want: BTreeSet<Vec<String>> = [
        vec![
            "sync".to_string(),
            "nolabel".into(),
            "1073742080".into(),
            src.clone(),
        ],
        vec![
            "sync".to_string(),
            "nolabel".into(),
            "256".into(),
            format!("{src}/a.tmp"),
        ],
    ]
    .into_iter()
    .collect();
    assert_eq!(init_args, want);
    assert!(init.iter().all(|c| c.status == "initsync"));
    fs::remove_file(s.src().join("a.tmp")).unwrap();
    assert!(wait_for(SYNC_TIMEOUT, || calls(&log).len() > init.len()));
    let last = calls(&log).pop().unwrap();
    assert_eq!(
        last.args(),
        ["sync", "nolabel", "512", &format!("{src}/a.tmp")]
    );
    assert_eq!(last.status, "running");
}

#[test]
fn shell_live_events_aggregate_per_path() {
    let s = Scratch::new("mode-shell-live");
    sample(&s);
    let (h, log) = logger(&s);
    let mut d = Daemon::start(&s, &args(&s, "shell", &h, &["-w1", "-t1", "-T1"]), &[]);
    d.wait_ready();
    let n0 = calls(&log).len();
    let src = s.src();
    fs::remove_file(src.join("a.tmp")).unwrap();
    fs::create_dir_all(src.join("nd/n2")).unwrap();
    fs::write(src.join("nd/n2/g"), b"g\n").unwrap();
    let mut got = BTreeSet::new();
    assert!(
        wait_for(SYNC_TIMEOUT, || {
            got = calls(&log)
                .iter()
                .skip(n0)
                .flat_map(|c| c.list_lines(0))
                .collect();
            got.contains("sync nolabel 512 a.tmp")
                && got.iter().any(|l| l.ends_with(" nd/n2/g"))
                && got.iter().any(|l| l.ends_with(" nd"))
                && got.iter().any(|l| l.ends_with(" nd/n2"))
        }),
        "lines: {got:#?}"
    );
    assert!(got.contains("sync nolabel 1073742080 nd"), "{got:#?}");
    d.stop();
}

#[test]
fn custom_arguments_with_macros() {
    let s = Scratch::new("mode-custom");
    fs::write(s.src().join("f"), b"x\n").unwrap();
    let c = run_once(
        &s,
        "direct",
        &[
            "-l",
            "L",
            "--",
            "t=%TYPE%",
            "%label%",
            "%INCLUDE-LIST%",
            "%FOO%",
            "a%FOO%b",
            "100%%",
            "%watch-dir%",
        ],
    );
    assert_eq!(c.len(), 1);
    let a = c[0].args();
    let n = a.len();
    assert_eq!(a[..2], ["t=synclist", "L"]);
    assert_eq!(
        a[n - 4..],
        ["%FOO%", "ab", "100%", &s.src().display().to_string()]
    );
    let paths: BTreeSet<String> = a[2..n - 4].iter().cloned().collect();
    assert_eq!(paths, set(&[".", "f"]));
}

#[test]
fn include_list_is_split_at_256_arguments() {
    let s = Scratch::new("mode-split");
    for i in 0..300 {
        fs::write(s.src().join(format!("f{i:03}")), b"x\n").unwrap();
    }
    let c = run_once(&s, "direct", &["-D", s.dst().to_str().unwrap()]);
    assert!(c.len() >= 2, "{} calls", c.len());
    let mut all = BTreeSet::new();
    for call in &c {
        assert!(
            call.argv.len() < 256, // plus argv[0]: at most 256
            "argv of {} entries",
            call.argv.len() + 1
        );
        assert_eq!(
            call.args().last().unwrap(),
            &format!("{}/", s.dst().display())
        );
        all.extend(call.args()[..call.argv.len() - 1].iter().cloned());
    }
    assert_eq!(all.len(), 301, "every path once: 300 files and the root");
}

#[test]
fn prefer_include_lists_every_permitted_node_and_no_exclude_list() {
    let s = Scratch::new("mode-prefer-include");
    sample(&s);
    let rules = s.path("rules");
    fs::write(&rules, "-f\\.tmp$\n+*\n").unwrap();
    let c = run_once(
        &s,
        "rsyncshell",
        &["--rsync-prefer-include", "-R", rules.to_str().unwrap()],
    );
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0].args().len(), 3, "no exclude list: {:?}", c[0].args());
    assert_eq!(
        c[0].list_lines(0),
        set(&["", "/b.txt", "/sub", "/sub/deep", "/sub/deep/x", "/keep"])
    );
}

#[test]
fn rsync_inclimit_splits_the_lists_of_one_pass() {
    let s = Scratch::new("mode-inclimit");
    sample(&s);
    let c = run_once(
        &s,
        "rsyncshell",
        &["--rsync-prefer-include", "--rsync-inclimit=3"],
    );
    assert!(c.len() >= 2, "one call: {c:#?}");
    let mut all = BTreeSet::new();
    for call in &c {
        assert_eq!(
            call.iteration, c[0].iteration,
            "all parts run in the same iteration"
        );
        all.extend(call.list_lines(0));
    }
    assert_eq!(
        all,
        set(&[
            "",
            "/a.tmp",
            "/b.txt",
            "/sub",
            "/sub/deep",
            "/sub/deep/x",
            "/keep",
            "/keep/k.tmp"
        ])
    );
}

#[test]
fn full_initialsync_ignores_the_rules() {
    let s = Scratch::new("mode-full-init");
    sample(&s);
    let rules = s.path("rules");
    fs::write(&rules, "-f\\.tmp$\n-d^sub/deep$\n+*\n").unwrap();
    let c = run_once(&s, "rsyncshell", &["-F", "-R", rules.to_str().unwrap()]);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].list_lines(0), set(&["/***"]));
    assert_eq!(c[0].list_lines(1), BTreeSet::new(), "no excludes with -F");
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn exclude_mount_points_keeps_rsync_out_of_them() {
    let s = Scratch::new("mode-xdev");
    sample(&s);
    let mnt = s.src().join("mnt");
    fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("mount tmpfs");
    let _guard = Mount(mnt.clone());
    fs::create_dir(mnt.join("inner")).unwrap();
    fs::write(mnt.join("inner/f"), b"x").unwrap();
    let c = run_once(&s, "rsyncshell", &["-X"]);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].list_lines(0), set(&["/***"]));
    assert_eq!(
        c[0].list_lines(1),
        set(&["/mnt/**"]),
        "the mount point's content is excluded"
    );
}

#[test]
fn lists_dir_keep_lists_and_simplified_lines() {
    let s = Scratch::new("mode-lists-dir");
    sample(&s);
    let lists = s.path("lists");
    let c = run_once(
        &s,
        "shell",
        &["-L", lists.to_str().unwrap(), "-U", "--synclist-simplify"],
    );
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].args()[2].rsplit_once('/').unwrap().0,
        lists.display().to_string()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&lists).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // -U: the list is still there after the daemon ended, with the path-only lines.
    let kept: Vec<_> = fs::read_dir(&lists)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let lines: BTreeSet<String> = fs::read_to_string(&kept[0])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        set(&[
            "",
            "a.tmp",
            "b.txt",
            "sub",
            "sub/deep",
            "sub/deep/x",
            "keep",
            "keep/k.tmp"
        ])
    );
}

#[test]
fn an_insecure_lists_dir_is_refused() {
    let s = Scratch::new("mode-lists-insecure");
    let lists = s.mkdir("lists");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&lists, fs::Permissions::from_mode(0o755)).unwrap();
    let (h, _) = logger(&s);
    let mut d = Daemon::start(
        &s,
        &args(&s, "shell", &h, &["-L", lists.to_str().unwrap()]),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("did not exit");
    assert_eq!(st.code(), Some(13), "{}", d.stderr());
    assert!(d.stderr().contains("insecure"), "{}", d.stderr());
}

#[test]
fn have_recursive_sync_calls_initialsync_for_the_tree_and_each_new_directory() {
    let s = Scratch::new("mode-recursive");
    sample(&s);
    let (h, log) = logger(&s);
    // -t2: the file change below is collected into one list; new directories do not wait.
    let mut d = Daemon::start(
        &s,
        &args(&s, "shell", &h, &["--have-recursive-sync", "-t2"]),
        &[],
    );
    d.wait_ready();
    let src = s.src().display().to_string();
    // Start-up: one call for the whole tree, absolute, before anything is counted (§4.4).
    let c = calls(&log);
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0].args(), ["initialsync", "nolabel", src.as_str()]);
    assert_eq!(
        (c[0].status.as_str(), c[0].iteration.as_str()),
        ("initsync", "0")
    );
    assert!(c[0].lists.is_empty());
    // A new directory: its own immediate initialsync call, and no synclist line for it.
    fs::create_dir(s.src().join("newd")).unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || calls(&log).len() >= 2),
        "{}",
        d.stderr()
    );
    let c = calls(&log);
    assert_eq!(
        c[1].args(),
        ["initialsync", "nolabel", &format!("{src}/newd")]
    );
    assert_eq!(c[1].iteration, "1");
    // A file change goes through the ordinary synclist.
    fs::write(s.src().join("b.txt"), b"changed\n").unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || calls(&log).len() >= 3),
        "{}",
        d.stderr()
    );
    let c = calls(&log);
    assert_eq!(c.len(), 3, "{c:#?}");
    assert_eq!(c[2].args()[..2], ["synclist", "nolabel"]);
    assert_eq!(c[2].list_lines(0), set(&["sync nolabel 10 b.txt"]));
    d.stop();
}

#[test]
fn have_recursive_sync_argument_sets_and_refusals() {
    let s = Scratch::new("mode-recursive-args");
    let (h, log) = logger(&s);
    // clsync's `---` set on the command line (`-----=ARGS`), with another mode's arguments.
    let mut d = Daemon::start(
        &s,
        &args(
            &s,
            "direct",
            &h,
            &[
                "--have-recursive-sync",
                "--exit-on-no-events",
                "-----=deep %TYPE% 'a b' %INCLUDE-LIST%",
                "--",
                "%INCLUDE-LIST%",
                "/dst/",
            ],
        ),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert!(st.success(), "{}", d.stderr());
    let c = calls(&log);
    assert_eq!(c.len(), 1, "{c:#?}");
    let src = s.src().display().to_string();
    assert_eq!(c[0].args(), ["deep", "initialsync", "a b", src.as_str()]);
    // Without `---` the primary set is used; one naming a list file cannot be.
    let (st, err) = run_to_exit(
        &s,
        &args(
            &s,
            "shell",
            &h,
            &[
                "--have-recursive-sync",
                "--",
                "synclist",
                "%INCLUDE-LIST-PATH%",
            ],
        ),
        START_TIMEOUT,
    );
    assert_eq!(st.and_then(|s| s.code()), Some(22), "{err}");
    assert!(err.contains("-----=ARGS"), "{err}");
    // clsync refuses it in the rsync modes.
    for mode in ["rsyncshell", "rsyncdirect"] {
        let (st, err) = run_to_exit(
            &s,
            &args(
                &s,
                mode,
                &h,
                &["--have-recursive-sync", "-D", s.dst().to_str().unwrap()],
            ),
            START_TIMEOUT,
        );
        assert_eq!(st.and_then(|s| s.code()), Some(22), "{mode}: {err}");
        assert!(err.contains("--have-recursive-sync"), "{err}");
    }
}

/// `--auto-add-rules-w` (clsync 0.4.5 built with AUTORULESW): with `+f^sub/deep/x$` then `-*`,
/// the added `+w^sub/deep$`, `+w^sub$`, `+w^$` let the walks reach x: the initial sync lists it
/// alone, the three directories are watched, and a change to x is synced. Without the option
/// `-*` forbids walking the watch root: nothing is watched or synced.
#[test]
fn auto_add_rules_w_makes_the_parents_of_permitted_paths_walkable() {
    let rules = "+f^sub/deep/x$\n-*\n";
    let plain = Scratch::new("mode-auto-w-off");
    sample(&plain);
    fs::write(plain.path("rules"), rules).unwrap();
    let r = plain.path("rules");
    let calls_plain = run_once(&plain, "shell", &["-R", r.to_str().unwrap()]);
    assert!(
        calls_plain
            .iter()
            .all(|c| c.lists.iter().all(|l| l.is_empty())),
        "{calls_plain:?}"
    );

    let s = Scratch::new("mode-auto-w");
    sample(&s);
    fs::write(s.path("rules"), rules).unwrap();
    let r = s.path("rules");
    let (h, log) = logger(&s);
    let mut d = Daemon::start(
        &s,
        &args(
            &s,
            "shell",
            &h,
            &["-R", r.to_str().unwrap(), "--auto-add-rules-w"],
        ),
        &[],
    );
    d.wait_ready();
    assert!(
        d.stderr().contains("3 directories watched"),
        "{}",
        d.stderr()
    );
    let lines = |skip: usize| -> BTreeSet<String> {
        calls(&log)
            .iter()
            .skip(skip)
            .flat_map(|c| c.list_lines(0))
            .collect()
    };
    let init = lines(0);
    assert_eq!(
        init.iter()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect::<Vec<_>>(),
        ["sub/deep/x"],
        "{init:#?}"
    );
    let n0 = calls(&log).len();
    fs::write(s.src().join("b.txt"), b"y\n").unwrap();
    fs::write(s.src().join("sub/deep/x"), b"y\n").unwrap();
    let mut got = BTreeSet::new();
    assert!(
        wait_for(SYNC_TIMEOUT, || {
            got = lines(n0);
            got.iter().any(|l| l.ends_with(" sub/deep/x"))
        }),
        "{got:#?}"
    );
    assert!(!got.iter().any(|l| l.ends_with(" b.txt")), "{got:#?}");
    d.stop();
}
