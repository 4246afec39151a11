//! `--chroot`, `--pivot-root`, `--mountpoints`: the helper, the worker and the handlers live in
//! the new root, in the daemon's own mount namespace; the host's mounts are untouched.
//!
//! A chroot needs the handler's shell and libraries inside DIR: each test that uses one starts
//! the daemon through `unshare -m` (its own private mount namespace) and a setup script that
//! bind-mounts /usr and /etc read-only into DIR, and the scratch's src, dst, tmp, bin and marks
//! directories at their own absolute paths inside DIR. Nothing of that reaches the host either.

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

/// What the handler records, in `marks/log`: whether a file that exists only on the host is
/// visible, whether the new root is writable, and its mountinfo in `marks/mi`.
fn write_handler(s: &Scratch, marks: &Path) -> PathBuf {
    let h = s.mkdir("bin").join("h.sh");
    write_script(
        &h,
        &format!(
            "#!/bin/sh\n\
             {{ echo \"args: $*\"\n\
               if [ -e {host} ]; then echo host-visible; else echo host-hidden; fi\n\
               if touch /ro-probe 2>{m}/err; then echo root-writable; else echo root-readonly; fi\n\
             }} >> {m}/log\n\
             cat /proc/self/mountinfo > {m}/mi\n",
            host = s.path("hostonly").display(),
            m = marks.display()
        ),
    );
    fs::write(s.path("hostonly"), b"only on the host\n").unwrap();
    h
}

/// DIR (`root/`) with the setup script that fills it in a private mount namespace; the
/// handler's marks appear at `/marks` inside DIR and at `marks/` on the host.
struct Chroot {
    dir: PathBuf,
    setup: PathBuf,
    handler: PathBuf,
}

fn chroot_tree(s: &Scratch, bind_src: bool, self_bind: bool) -> Chroot {
    let dir = s.mkdir("root");
    s.mkdir("marks");
    let handler = write_handler(s, Path::new("/marks"));
    let r = s.root().display().to_string();
    let d = dir.display().to_string();
    let mut subs = vec!["dst", "tmp", "bin"];
    if bind_src {
        subs.push("src");
    }
    let setup = s.path("setup.sh");
    fs::write(
        &setup,
        format!(
            "set -e\n\
             D={d}\n\
             for l in bin lib lib64 sbin; do\n\
               if [ -L /$l ]; then ln -s \"$(readlink /$l)\" $D/$l; elif [ -d /$l ]; then mkdir -p $D/$l; mount --bind /$l $D/$l; mount -o remount,bind,ro $D/$l; fi\n\
             done\n\
             for x in usr etc; do mkdir -p $D/$x; mount --bind /$x $D/$x; mount -o remount,bind,ro $D/$x; done\n\
             mkdir -p $D/proc $D/marks $D/tmp\n\
             for x in {subs}; do mkdir -p $D{r}/$x; mount --bind {r}/$x $D{r}/$x; done\n\
             mount --bind {r}/marks $D/marks\n\
             {self_bind}\n\
             exec \"$@\"\n",
            subs = subs.join(" "),
            self_bind = if self_bind {
                "mount --rbind $D $D"
            } else {
                ""
            }
        ),
    )
    .unwrap();
    Chroot {
        dir,
        setup,
        handler,
    }
}

/// Starts clsync through `unshare -m --propagation private sh setup.sh clsync ARGS` (exec all
/// the way, so the daemon's pid is the spawned one).
fn start_in_ns(s: &Scratch, c: &Chroot, extra: &[&str]) -> Daemon {
    let mut base = handler_args(s, "direct", &c.handler, &["-D"]);
    base.push(s.dst().into());
    start_in_ns_with(s, c, base, extra)
}

/// [`start_in_ns`] with other daemon arguments than the marking handler's (`--chroot DIR` and
/// `extra` follow `base`).
fn start_in_ns_with(s: &Scratch, c: &Chroot, base: Vec<OsString>, extra: &[&str]) -> Daemon {
    let mut args: Vec<OsString> = vec![
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        c.setup.clone().into(),
        clsync_bin().into(),
    ];
    args.extend(base);
    args.push("--chroot".into());
    args.push(c.dir.clone().into());
    args.extend(extra.iter().map(OsString::from));
    Daemon::spawn(Path::new("/usr/bin/unshare"), s, &args, &[])
}

fn wait_marks(d: &mut Daemon, s: &Scratch) -> String {
    let log = s.path("marks/log");
    d.wait_until(START_TIMEOUT, "the handler's marks", |_| {
        fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 3)
    });
    fs::read_to_string(&log).unwrap()
}

fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(str::to_string)
        .collect()
}

fn host_mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// The daemon's cgroups work inside the new root (created before the switch, reached through
/// descriptors): the worker's audit line says it is in its group (and has its whole sandbox),
/// the helper (and so every handler) is in the handlers group; call before stop.
fn assert_in_cgroups(d: &mut Daemon) {
    let err = d.stderr();
    assert!(
        !err.lines()
            .any(|l| l.contains("cgroup") && !l.starts_with("audit:")),
        "no cgroup warning expected:\n{err}"
    );
    assert!(err.contains("cgroup=worker"), "{err}");
    // The worker's own sandbox is whole inside the new root too.
    let line = err
        .lines()
        .find(|l| l.starts_with("audit: action=worker-sandbox"))
        .unwrap_or_else(|| panic!("no worker-sandbox line:\n{err}"));
    for want in [
        "namespaces=net,ipc,mnt,uts",
        "landlock=enforced",
        "seccomp=allowlist",
        "caps=none",
    ] {
        assert!(line.contains(want), "{want} missing: {line}");
    }
    let helper = d.helper_pid();
    let groups = cgroups_of(helper);
    assert!(
        groups
            .iter()
            .filter_map(|c| c.dir.as_ref())
            .any(|p| p.ends_with(format!("clsync-{}/handlers", d.pid))),
        "helper not in the handlers group: {groups:?}"
    );
}

/// After a clean stop nothing of the daemon's cgroups is left.
fn assert_cgroups_removed(d: &Daemon) {
    assert_eq!(
        daemon_cgroup_dirs(d.pid),
        Vec::<PathBuf>::new(),
        "cgroups left"
    );
}

fn rootfs_leftovers() -> Vec<OsString> {
    dir_entries(Path::new("/dev/shm"))
        .into_iter()
        .filter(|n| n.to_string_lossy().starts_with("clsync-rootfs"))
        .collect()
}

/// `--chroot DIR` (pivot-root off): the handler runs with DIR as its root (its marks land in
/// DIR's /marks, a host-only file is invisible), the helper's root is DIR seen from the host.
#[test]
fn chroot_runs_helper_and_handler_inside_dir() {
    let s = Scratch::new("chroot-off");
    fs::write(s.src().join("a"), b"a\n").unwrap();
    let c = chroot_tree(&s, true, false);
    let mut d = start_in_ns(&s, &c, &[]);
    let log = wait_marks(&mut d, &s);
    assert!(log.contains("host-hidden"), "{log}");
    assert!(!log.contains("host-visible"), "{log}");
    let helper = d.helper_pid();
    let root = fs::read_link(format!("/proc/{helper}/root")).unwrap();
    assert_eq!(root, c.dir, "a plain chroot: the helper's root is DIR");
    assert_in_cgroups(&mut d);
    d.stop();
    assert_cgroups_removed(&d);
    assert!(rootfs_leftovers().is_empty());
}

/// `--pivot-root=direct` with DIR a mount point: the root is pivoted (the helper's root is the
/// namespace's root, "/" even seen from the host), the host's files are gone.
#[test]
fn pivot_root_direct_pivots_into_a_mounted_dir() {
    let s = Scratch::new("chroot-direct");
    let c = chroot_tree(&s, true, true);
    let mut d = start_in_ns(&s, &c, &["--pivot-root", "direct"]);
    let log = wait_marks(&mut d, &s);
    assert!(log.contains("host-hidden"), "{log}");
    let helper = d.helper_pid();
    assert_eq!(
        fs::read_link(format!("/proc/{helper}/root")).unwrap(),
        Path::new("/")
    );
    d.stop();
}

/// `--pivot-root=direct` when DIR is no mount point: a clear error, nothing runs.
#[test]
fn pivot_root_direct_needs_a_mount_point() {
    let s = Scratch::new("chroot-direct-nomount");
    let c = chroot_tree(&s, true, false);
    let mut d = start_in_ns(&s, &c, &["--pivot-root", "direct"]);
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    assert_eq!(st.code(), Some(22), "{}", d.stderr());
    assert!(
        d.stderr().contains("is not a mount point"),
        "{}",
        d.stderr()
    );
    assert!(!s.path("marks/log").exists());
    assert_cgroups_removed(&d);
}

/// `--pivot-root=auto`: pivoted, and the new root is writable (the handler's probe file lands
/// in DIR on the host).
#[test]
fn pivot_root_auto_pivots_into_writable_root() {
    let s = Scratch::new("chroot-auto");
    let c = chroot_tree(&s, true, false);
    let mut d = start_in_ns(&s, &c, &["--pivot-root", "auto"]);
    let log = wait_marks(&mut d, &s);
    assert!(log.contains("host-hidden"), "{log}");
    assert!(log.contains("root-writable"), "{log}");
    assert!(c.dir.join("ro-probe").exists());
    let helper = d.helper_pid();
    assert_eq!(
        fs::read_link(format!("/proc/{helper}/root")).unwrap(),
        Path::new("/")
    );
    assert_in_cgroups(&mut d);
    d.stop();
    assert_cgroups_removed(&d);
    assert!(rootfs_leftovers().is_empty());
}

/// `--pivot-root=auto-ro`: the new root is read-only for the handler (root, with the caps it
/// was given), mounts below it keep their own flags (its marks are written).
#[test]
fn pivot_root_auto_ro_makes_new_root_read_only() {
    let s = Scratch::new("chroot-auto-ro");
    let c = chroot_tree(&s, true, false);
    let mut d = start_in_ns(&s, &c, &["--pivot-root", "auto-ro"]);
    let log = wait_marks(&mut d, &s);
    assert!(log.contains("root-readonly"), "{log}");
    assert!(!c.dir.join("ro-probe").exists());
    let err = fs::read_to_string(s.path("marks/err")).unwrap();
    assert!(err.contains("Read-only"), "{err}");
    d.stop();
    assert!(rootfs_leftovers().is_empty());
}

/// The usual rsyncdirect setup in a read-only pivoted root: the initial sync and a later change
/// reach the destination (rsync, its lists and the destination all inside DIR).
#[test]
fn chroot_auto_ro_rsyncdirect_syncs_the_tree() {
    let s = Scratch::new("chroot-rsync");
    fs::write(s.src().join("a"), b"first\n").unwrap();
    let c = chroot_tree(&s, true, false);
    let mut d = start_in_ns_with(
        &s,
        &c,
        rsyncdirect_args(&s, 0, &[]),
        &["--pivot-root", "auto-ro"],
    );
    d.wait_ready();
    assert_trees_equal(&s.src(), &s.dst());
    fs::create_dir(s.src().join("sub")).unwrap();
    fs::write(s.src().join("sub/b"), b"second\n").unwrap();
    wait_synced(&s.src(), &s.dst(), SYNC_TIMEOUT);
    assert_in_cgroups(&mut d);
    d.stop();
    assert_cgroups_removed(&d);
}

/// `--chroot` to a DIR without the watch dir inside: the error names DIR and the missing path,
/// exit 2 (ENOENT), no handler ran.
#[test]
fn chroot_without_watch_dir_inside_fails_clearly() {
    let s = Scratch::new("chroot-nowatch");
    let c = chroot_tree(&s, false, false);
    let mut d = start_in_ns(&s, &c, &[]);
    let st = d.wait_exit(START_TIMEOUT).expect("daemon did not exit");
    let err = d.stderr();
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("--chroot {}", c.dir.display())),
        "{err}"
    );
    assert!(err.contains(&s.src().display().to_string()), "{err}");
    assert!(err.contains("watch dir"), "{err}");
    assert!(!s.path("marks/log").exists());
    assert_cgroups_removed(&d);
}

/// `--pivot-root` other than off without `--chroot`: exit 22 naming both options (as clsync).
#[test]
fn pivot_root_without_chroot_is_an_error() {
    let s = Scratch::new("chroot-pivot-alone");
    let args = handler_args(
        &s,
        "direct",
        Path::new("/bin/true"),
        &["--pivot-root", "direct"],
    );
    let (st, err) = run_to_exit(&s, &args, START_TIMEOUT);
    assert_eq!(st.and_then(|s| s.code()), Some(22), "{err}");
    assert!(
        err.contains("--pivot-root") && err.contains("--chroot"),
        "{err}"
    );
}

/// The longest mount point of `mountinfo` that holds `p`.
fn mount_of(mountinfo: &str, p: &Path) -> String {
    mount_points(mountinfo)
        .into_iter()
        .filter(|m| p.starts_with(m))
        .max_by_key(String::len)
        .unwrap()
}

/// `--mountpoints` without `--chroot`, on the host's real mount table: every mount not listed
/// (but / and /proc) is detached in the daemon's namespace (the helper and the handler see
/// only the kept ones), and the host's mount table is unchanged afterwards.
#[test]
fn mountpoints_detach_unlisted_mounts_in_daemon_namespace_only() {
    let s = Scratch::new("mountpoints");
    s.mkdir("marks");
    let handler = write_handler(&s, &s.path("marks"));
    fs::write(s.src().join("a"), b"a\n").unwrap();
    let before = host_mountinfo();
    let scratch_mount = mount_of(&before, s.root());
    let keep = format!("/,{scratch_mount}");
    let mut args = handler_args(&s, "direct", &handler, &["--mountpoints", &keep, "-D"]);
    args.push(s.dst().into());
    let mut d = Daemon::start(&s, &args, &[]);
    wait_marks(&mut d, &s);
    let helper = d.helper_pid();
    let allowed = ["/".to_string(), "/proc".to_string(), scratch_mount.clone()];
    let host_points = mount_points(&before);
    let gone: Vec<&String> = host_points
        .iter()
        .filter(|m| !allowed.contains(m))
        .collect();
    assert!(
        !gone.is_empty(),
        "the host has no mount to detach: {before}"
    );
    for (who, mi) in [
        (
            "helper",
            fs::read_to_string(format!("/proc/{helper}/mountinfo")).unwrap(),
        ),
        ("handler", fs::read_to_string(s.path("marks/mi")).unwrap()),
    ] {
        for m in mount_points(&mi) {
            assert!(allowed.contains(&m), "{who} still has {m}:\n{mi}");
        }
    }
    assert_in_cgroups(&mut d);
    d.stop();
    assert_cgroups_removed(&d);
    assert_eq!(host_mountinfo(), before, "the host's mount table changed");
}

/// The `chroot`, `pivot-root` and `mountpoints` keys of a config file, as clsync's keyfile
/// writes them, reach the daemon (shown by --check-config).
#[test]
fn config_file_chroot_keys_are_applied() {
    let s = Scratch::new("chroot-conf");
    let dir = s.mkdir("root");
    let conf = s.path("clsync.conf");
    fs::write(
        &conf,
        format!(
            "[default]\nwatch-dir = {}\nmode = direct\nsync-handler = /bin/true\nchroot = {}\npivot-root = auto-ro\nmountpoints = /x,,/,/proc\n",
            s.src().display(),
            dir.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(clsync_bin())
        .args(["-H", conf.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("chroot = {} (pivot-root auto-ro", dir.display())),
        "{text}"
    );
    assert!(text.contains("mountpoints = /,/proc kept"), "{text}");
}
