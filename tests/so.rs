//! Modes so and rsyncso (reference §4.7, §4.8) with real shared objects: each test compiles a
//! small C handler with gcc into its scratch directory. The handlers write what they were given
//! (and their uid, gid, parent and environment) into files the test reads.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// clsync.h's api_eventinfo_t, as a handler would declare it.
const API: &str = r#"
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
typedef struct {
    uint32_t evmask; uint32_t flags; size_t path_len; const char *path;
    int objtype_old; int objtype_new;
} api_eventinfo_t;
/* A new file per call: OUT/<seq>.<suffix>, numbered by the calls seen so far. */
static FILE *out_file(const char *suffix, char *name, size_t len) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(name, len, "%s/%ld%09ld.%d.%s", OUT, (long)ts.tv_sec, ts.tv_nsec, getpid(), suffix);
    return fopen(name, "w");
}
static int inits;
int clsyncapi_init(void *ctx, void *indexes) {
    /* clsync-rs passes zeroed buffers: reading them must not fault. */
    inits += 1 + ((char *)ctx)[0] + ((char *)indexes)[4096];
    return 0;
}
static void header(FILE *f) {
    const char *it = getenv("CLSYNC_ITERATION"), *st = getenv("CLSYNC_STATUS");
    fprintf(f, "uid=%d gid=%d ppid=%d inits=%d iteration=%s status=%s home=%s\n",
            (int)getuid(), (int)getgid(), (int)getppid(), inits, it ? it : "-", st ? st : "-",
            getenv("HOME") ? "set" : "unset");
}
"#;

/// Compiles `body` (after [`API`]) into `dir/name.so` (mode 0644, root-owned) with `OUT` set.
fn compile(dir: &Path, name: &str, out: &Path, body: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    fs::write(&c, format!("{API}\n{body}")).unwrap();
    let so = dir.join(format!("{name}.so"));
    let res = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
        .arg(&so)
        .arg(format!("-DOUT=\"{}\"", out.display()))
        .arg(&c)
        .output()
        .expect("run gcc (is it installed?)");
    assert!(
        res.status.success(),
        "gcc failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    fs::set_permissions(&so, fs::Permissions::from_mode(0o644)).unwrap();
    so
}

/// The so-mode handler: one `<n>.call` file per call with a header line and one line per
/// event `path<TAB>evmask<TAB>flags<TAB>old<TAB>new<TAB>path_len`; returns `RET`; deinit
/// leaves a `.deinit` file.
fn sync_handler(dir: &Path, out: &Path, ret: i32) -> PathBuf {
    compile(
        dir,
        &format!("sync{ret}"),
        out,
        &format!(
            r#"
int clsyncapi_sync(int n, api_eventinfo_t *ei) {{
    char name[4096];
    FILE *f = out_file("call.tmp", name, sizeof name);
    if (!f) return 99;
    header(f);
    fprintf(f, "n=%d\n", n);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s\t%u\t%u\t%d\t%d\t%zu\n", ei[i].path, ei[i].evmask, ei[i].flags,
                ei[i].objtype_old, ei[i].objtype_new, ei[i].path_len);
    fclose(f);
    char done[4096];
    snprintf(done, sizeof done, "%.*s", (int)(strlen(name) - 4), name);
    rename(name, done);
    return {ret};
}}
int clsyncapi_deinit(void) {{
    char name[4096];
    FILE *f = out_file("deinit", name, sizeof name);
    if (f) fclose(f);
    return 0;
}}
"#
        ),
    )
}

/// One recorded so-mode call.
#[derive(Debug)]
struct SoCall {
    header: String,
    events: BTreeSet<(String, u32, u32, i32, i32)>,
    n: usize,
}

impl SoCall {
    fn field(&self, key: &str) -> String {
        self.header
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.header))
            .to_string()
    }
}

fn files_with(out: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn so_calls(out: &Path) -> Vec<SoCall> {
    files_with(out, ".call")
        .iter()
        .map(|p| {
            let text = fs::read_to_string(p).unwrap();
            let mut lines = text.lines();
            let header = lines.next().unwrap().to_string();
            let n: usize = lines
                .next()
                .unwrap()
                .strip_prefix("n=")
                .unwrap()
                .parse()
                .unwrap();
            let events: BTreeSet<_> = lines
                .map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    assert_eq!(f[0].len(), f[5].parse::<usize>().unwrap(), "path_len: {l}");
                    (
                        f[0].to_string(),
                        f[1].parse().unwrap(),
                        f[2].parse().unwrap(),
                        f[3].parse().unwrap(),
                        f[4].parse().unwrap(),
                    )
                })
                .collect();
            assert_eq!(events.len(), n, "{text}");
            SoCall { header, events, n }
        })
        .collect()
}

/// A directory the handler (uid TEST_UID) can write its records into.
fn out_dir(s: &Scratch) -> PathBuf {
    let out = s.mkdir("out");
    std::os::unix::fs::chown(&out, Some(TEST_UID), Some(TEST_GID)).unwrap();
    out
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

fn so_args(s: &Scratch, mode: &str, so: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut all = vec![
        "-w0",
        "-t0",
        "-T0",
        "--sync-handler-uid",
        "4242",
        "--sync-handler-gid",
        "4243",
    ];
    all.extend_from_slice(extra);
    handler_args(s, mode, so, &all)
}

const DIR: u32 = 1073742080; // IN_CREATE | IN_ISDIR
const FILE: u32 = 256; // IN_CREATE

#[test]
fn so_gets_clsyncs_event_array_in_a_child_running_as_the_handler_user() {
    let s = Scratch::new("so-sync");
    sample(&s);
    let out = out_dir(&s);
    let so = sync_handler(s.root(), &out, 0);
    let mut d = Daemon::start(&s, &so_args(&s, "so", &so, &["-t2"]), &[]);
    d.wait_ready();
    let init = so_calls(&out);
    assert_eq!(init.len(), 1, "{init:#?}\n{}", d.stderr());
    let c = &init[0];
    // Every node, relative (the root is ""), created: old = DOESNTEXIST, new = FILE or DIR.
    let want: BTreeSet<_> = [
        ("", DIR, 3),
        ("a.tmp", FILE, 2),
        ("b.txt", FILE, 2),
        ("sub", DIR, 3),
        ("sub/deep", DIR, 3),
        ("sub/deep/x", FILE, 2),
        ("keep", DIR, 3),
        ("keep/k.tmp", FILE, 2),
    ]
    .iter()
    .map(|&(p, m, new)| (p.to_string(), m, 0, 1, new))
    .collect();
    assert_eq!(c.events, want);
    assert_eq!(c.n, 8);
    // The configured handler identity: not the worker's (nobody) nor the helper's (root).
    assert_eq!(
        (c.field("uid"), c.field("gid")),
        ("4242".into(), "4243".into())
    );
    let helper = d.helper_pid();
    let uid_of = |pid: i32| ids(&status_of(pid)["Uid"])[0];
    assert_eq!((uid_of(d.worker().pid), uid_of(helper)), (NOBODY, 0));
    assert_eq!(
        c.field("ppid"),
        helper.to_string(),
        "a child of the helper, not of the worker ({})",
        d.worker().pid
    );
    assert_eq!(
        c.field("inits"),
        "1",
        "clsyncapi_init ran once before the call"
    );
    assert_eq!(
        (c.field("iteration"), c.field("status"), c.field("home")),
        ("1".into(), "initsync".into(), "unset".into()),
        "the handler's environment, not the helper's"
    );
    assert_eq!(files_with(&out, ".deinit").len(), 1, "clsyncapi_deinit ran");

    // §4.7's observed batch: `echo >> b.txt; rm a.tmp` within one collection.
    fs::write(s.src().join("b.txt"), b"x\ny\n").unwrap();
    fs::remove_file(s.src().join("a.tmp")).unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || so_calls(&out).len() >= 2),
        "{}",
        d.stderr()
    );
    let calls = so_calls(&out);
    let c = &calls[1];
    // `fs::write` truncates (MODIFY), writes (MODIFY) and closes (CLOSE_WRITE): 2|8.
    let want: BTreeSet<_> = [
        ("b.txt".to_string(), 10, 0, 2, 2),
        ("a.tmp".to_string(), 512, 0, 2, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(c.events, want, "{calls:#?}");
    assert_eq!(
        (c.field("status"), c.field("uid")),
        ("running".into(), "4242".into())
    );
    d.stop();
    assert_eq!(
        files_with(&out, ".deinit").len(),
        2,
        "deinit after every call"
    );
}

#[test]
fn a_failing_return_value_is_a_failed_sync() {
    let s = Scratch::new("so-fail");
    fs::write(s.src().join("f"), b"x").unwrap();
    let out = out_dir(&s);
    let so = sync_handler(s.root(), &out, 5);
    // -r2: two tries, then the daemon exits with the return value, as with a handler's status.
    let mut d = Daemon::start(
        &s,
        &so_args(&s, "so", &so, &["-r2", "--exit-on-no-events"]),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert_eq!(st.code(), Some(5), "{}", d.stderr());
    assert_eq!(so_calls(&out).len(), 2, "two tries");
    assert!(d.stderr().contains("exit code 5"), "{}", d.stderr());
    // -x 5 makes it a success.
    let mut d = Daemon::start(
        &s,
        &so_args(&s, "so", &so, &["-x", "5", "--exit-on-no-events"]),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert_eq!(st.code(), Some(0), "{}", d.stderr());
    // A value an exit status would truncate to 0 (256) still fails.
    let so = sync_handler(s.root(), &out, 256);
    let mut d = Daemon::start(&s, &so_args(&s, "so", &so, &["--exit-on-no-events"]), &[]);
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert_eq!(st.code(), Some(255), "{}", d.stderr());
    assert!(d.stderr().contains("returned 256"), "{}", d.stderr());
}

#[test]
fn insecure_or_foreign_objects_are_refused_at_start() {
    let s = Scratch::new("so-refused");
    let out = out_dir(&s);
    let so = sync_handler(s.root(), &out, 0);
    let name = so.display().to_string();
    for (mode, owner) in [(0o664, 0), (0o646, 0), (0o4644, 0), (0o644, TEST_UID)] {
        std::os::unix::fs::chown(&so, Some(owner), None).unwrap();
        fs::set_permissions(&so, fs::Permissions::from_mode(mode)).unwrap();
        for m in ["so", "rsyncso"] {
            let (st, err) = run_to_exit(&s, &so_args(&s, m, &so, &[]), START_TIMEOUT);
            let st = st.expect("did not exit");
            assert!(!st.success(), "{mode:o} {owner} {m}: {err}");
            assert!(err.contains(&name), "names the file: {err}");
        }
    }
    assert!(files_with(&out, ".call").is_empty(), "nothing was loaded");
    // Not a regular file.
    let (st, err) = run_to_exit(&s, &so_args(&s, "so", &s.src(), &[]), START_TIMEOUT);
    assert!(
        !st.unwrap().success() && err.contains("regular file"),
        "{err}"
    );
}

#[test]
fn a_missing_entry_point_fails_the_sync_with_a_message() {
    let s = Scratch::new("so-nosym");
    let out = out_dir(&s);
    // An object with clsyncapi_sync only, used in rsyncso mode (which needs clsyncapi_rsync).
    let so = sync_handler(s.root(), &out, 0);
    let mut d = Daemon::start(
        &s,
        &so_args(&s, "rsyncso", &so, &["--exit-on-no-events"]),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert_eq!(st.code(), Some(127), "{}", d.stderr());
    assert!(d.stderr().contains("clsyncapi_rsync"), "{}", d.stderr());
}

/// The rsyncso handler: copies both lists to `<n>.inc` / `<n>.exc` (`.exc` says NULL when it
/// is), records their paths and the header.
fn rsync_handler(dir: &Path, out: &Path) -> PathBuf {
    compile(
        dir,
        "rsync",
        out,
        r#"
static void copy(const char *from, const char *to) {
    FILE *i = fopen(from, "r"), *o = fopen(to, "w");
    int c;
    if (!o) return;
    if (!i) { fprintf(o, "cannot open %s\n", from); fclose(o); return; }
    while ((c = fgetc(i)) != EOF) fputc(c, o);
    fclose(i); fclose(o);
}
int clsyncapi_rsync(const char *inclist, const char *exclist) {
    char name[4096], base[4096], to[4200];
    FILE *f = out_file("rcall.tmp", name, sizeof name);
    if (!f) return 99;
    header(f);
    fprintf(f, "%s\n%s\n", inclist, exclist ? exclist : "NULL");
    fclose(f);
    snprintf(base, sizeof base, "%.*s", (int)(strlen(name) - 10), name);
    snprintf(to, sizeof to, "%s.inc", base); copy(inclist, to);
    snprintf(to, sizeof to, "%s.exc", base);
    if (exclist) copy(exclist, to);
    else { FILE *e = fopen(to, "w"); if (e) { fputs("NULL", e); fclose(e); } }
    snprintf(to, sizeof to, "%s.rcall", base);
    rename(name, to);
    return 0;
}
"#,
    )
}

fn lines(p: &Path) -> BTreeSet<String> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn rsyncso_gets_clsyncs_list_files_and_they_are_removed_after_the_call() {
    let s = Scratch::new("so-rsync");
    sample(&s);
    let rules = s.path("rules");
    fs::write(&rules, "-f\\.tmp$\n-d^sub/deep$\n+*\n").unwrap();
    let out = out_dir(&s);
    let so = rsync_handler(s.root(), &out);
    let mut d = Daemon::start(
        &s,
        &so_args(
            &s,
            "rsyncso",
            &so,
            &["-R", rules.to_str().unwrap(), "--exit-on-no-events"],
        ),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert!(st.success(), "{}", d.stderr());
    let calls = files_with(&out, ".rcall");
    assert_eq!(calls.len(), 1, "{}", d.stderr());
    let stem = calls[0]
        .to_string_lossy()
        .trim_end_matches(".rcall")
        .to_string();
    let rec = fs::read_to_string(&calls[0]).unwrap();
    let rec: Vec<&str> = rec.lines().collect();
    assert!(rec[0].contains("uid=4242 gid=4243"), "{rec:?}");
    // Lists as rsyncshell gets them (reference §4.5's initial sync).
    assert_eq!(lines(Path::new(&format!("{stem}.inc"))), set(&["/***"]));
    assert_eq!(
        lines(Path::new(&format!("{stem}.exc"))),
        set(&["/sub/deep", "/keep/k.tmp", "/a.tmp"])
    );
    // Both lists were files in the daemon's lists directory, gone after the call.
    for l in [rec[1], rec[2]] {
        assert!(l.starts_with(&s.tmp().display().to_string()), "{rec:?}");
        assert!(!Path::new(l).exists(), "{l} left behind");
    }

    // --rsync-prefer-include: every node listed, and the exclude list is NULL.
    let out2 = s.mkdir("out2");
    std::os::unix::fs::chown(&out2, Some(TEST_UID), Some(TEST_GID)).unwrap();
    let so2 = compile(
        s.root(),
        "rsync2",
        &out2,
        &fs::read_to_string(s.root().join("rsync.c"))
            .unwrap()
            .replace(API, ""),
    );
    let mut d = Daemon::start(
        &s,
        &so_args(
            &s,
            "rsyncso",
            &so2,
            &[
                "-R",
                rules.to_str().unwrap(),
                "--rsync-prefer-include",
                "--exit-on-no-events",
            ],
        ),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert!(st.success(), "{}", d.stderr());
    let calls = files_with(&out2, ".rcall");
    assert_eq!(calls.len(), 1);
    let stem = calls[0]
        .to_string_lossy()
        .trim_end_matches(".rcall")
        .to_string();
    assert_eq!(
        lines(Path::new(&format!("{stem}.inc"))),
        set(&["", "/b.txt", "/sub", "/keep"])
    );
    assert_eq!(fs::read_to_string(format!("{stem}.exc")).unwrap(), "NULL");
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A compromised worker's forged SoSync (CLSYNC_TEST_FORGE, test builds) is refused with its
/// reason, audited, and ends the daemon; nothing reaches the shared object.
#[test]
fn forged_so_calls_are_refused() {
    for (kind, mode, reason) in [
        ("so-dotdot", "so", "dot component"),
        ("so-recursive", "so", "without --have-recursive-sync"),
        (
            "so-interleaved",
            "so",
            "Kill between the parts of SoSync job 999",
        ),
        ("so-dotdot", "rsyncso", "not a mode-so shared object"),
    ] {
        let s = Scratch::new(&format!("so-forge-{kind}"));
        let out = out_dir(&s);
        let so = if mode == "so" {
            sync_handler(s.root(), &out, 0)
        } else {
            rsync_handler(s.root(), &out)
        };
        let mut d = Daemon::start(
            &s,
            &so_args(&s, mode, &so, &[]),
            &[("CLSYNC_TEST_FORGE", kind)],
        );
        let st = d.wait_exit(START_TIMEOUT).expect("daemon did not end");
        let log = d.stderr();
        assert_eq!(st.code(), Some(70), "{kind}: {log}");
        let refusal = log
            .lines()
            .find(|l| l.starts_with("audit: action=refused"))
            .unwrap_or_else(|| panic!("{kind}: no refusal audited:\n{log}"));
        assert!(refusal.contains(reason), "{kind}: {refusal}");
        let calls: Vec<_> = so_calls(&out)
            .into_iter()
            .filter(|c| c.field("status") != "initsync")
            .collect();
        assert!(calls.is_empty(), "{kind}: {calls:?}");
    }
}

/// §4.7: with --have-recursive-sync the start-up call and each new directory are one recursive
/// entry with the absolute path (flags 1, DOESNTEXIST → DIR); other events as usual.
#[test]
fn so_with_have_recursive_sync_gets_absolute_recursive_entries() {
    let s = Scratch::new("so-recursive");
    sample(&s);
    let out = out_dir(&s);
    let so = sync_handler(s.root(), &out, 0);
    let mut d = Daemon::start(
        &s,
        &so_args(&s, "so", &so, &["--have-recursive-sync", "-t2"]),
        &[],
    );
    d.wait_ready();
    let src = s.src().display().to_string();
    let c = so_calls(&out);
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(
        c[0].events,
        [(src.clone(), DIR, 1, 1, 3)]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(c[0].field("iteration"), "0");
    fs::create_dir(s.src().join("newd")).unwrap();
    assert!(wait_for(SYNC_TIMEOUT, || so_calls(&out).len() >= 2));
    assert_eq!(
        so_calls(&out)[1].events,
        [(format!("{src}/newd"), DIR, 1, 1, 3)]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    fs::remove_file(s.src().join("a.tmp")).unwrap();
    assert!(wait_for(SYNC_TIMEOUT, || so_calls(&out).len() >= 3));
    assert_eq!(
        so_calls(&out)[2].events,
        [("a.tmp".to_string(), 512, 0, 2, 1)]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    d.stop();
}

/// A pass larger than a datagram still reaches the object as one call (the worker sends it in
/// parts, the helper joins them).
#[test]
fn a_pass_larger_than_a_datagram_is_one_call() {
    let s = Scratch::new("so-big");
    let name = "n".repeat(100);
    for i in 0..2000 {
        fs::write(s.src().join(format!("{name}{i:04}")), b"").unwrap();
    }
    let out = out_dir(&s);
    let so = sync_handler(s.root(), &out, 0);
    let mut d = Daemon::start(&s, &so_args(&s, "so", &so, &["--exit-on-no-events"]), &[]);
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert!(st.success(), "{}", d.stderr());
    let c = so_calls(&out);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].n, 2001, "every file and the root, in one call");
    assert!(c[0]
        .events
        .contains(&(format!("{name}1999"), FILE, 0, 1, 2)));
}
