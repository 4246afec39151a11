//! Start-up, in the order the design gives: (parsed + validated config) → open what both sides
//! need → fork → each side closes what it does not need and confines itself.
//!
//! The process root started becomes the unprivileged worker; its child becomes the privileged
//! helper. Either ending ends the other: the helper has a death signal and sees EOF; the worker
//! sees EOF and SIGCHLD.
#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{chown, ForkResult, Gid, Uid};

use crate::config::{Config, Splitting};
use crate::privsep::client::Client;
use crate::privsep::helper::{self, HelperSetup, ListsDir};
use crate::privsep::policy::ExecPolicy;
use crate::privsep::protocol::{self, Channel};
use crate::sandbox::cgroup::{DaemonCgroups, Limits};
use crate::sandbox::{caps, identity, landlock, namespaces, rootfs, seccomp, Layer, WorkerLayers};
use crate::sys;
use crate::testhooks::TestHooks;
use crate::worker::{self, Worker, WorkerSetup};

/// Limits of the worker's cgroup: it never forks, and its memory is the watch tree and queues.
const WORKER_LIMITS: Limits = Limits {
    pids_max: Some(8),
    memory_max: Some(2 << 30),
};
/// Limits of the handlers' cgroup (rsync forks a receiver and a generator per run).
const HANDLER_LIMITS: Limits = Limits {
    pids_max: Some(4096),
    memory_max: None,
};

/// A start-up failure before the daemon runs: message and exit code.
pub struct StartError {
    pub code: i32,
    pub msg: String,
}

fn fail(code: i32, msg: impl Into<String>) -> StartError {
    StartError {
        code,
        msg: msg.into(),
    }
}

/// Runs the daemon; returns the worker's exit code.
pub fn run(cfg: Config) -> Result<i32, StartError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(fail(
            1,
            "clsync-rs must be started as root: it sets up its own sandbox and drops privileges itself (see --uid, --privileged-uid)",
        ));
    }
    let mut layers = worker_layers(&cfg);
    if cfg.background {
        // One fork, the parent exits 0, the child leads a new session (standard fds are kept,
        // as clsync keeps them).
        match sys::fork().map_err(|e| fail(1, format!("fork: {e}")))? {
            ForkResult::Parent { .. } => sys::exit_now(0),
            ForkResult::Child => {
                nix::unistd::setsid().map_err(|e| fail(1, format!("setsid: {e}")))?;
            }
        }
    }
    // systemd's notification socket, connected now: the worker cannot connect later, and after
    // --chroot the host's socket path may not be reachable.
    let notify = crate::notify::Notifier::from_env();
    let (cgroups, warnings) = match DaemonCgroups::create(
        &cfg.cgroup_name
            .clone()
            .unwrap_or_else(|| format!("clsync-{}", sys::getpid())),
        WORKER_LIMITS,
        HANDLER_LIMITS,
    ) {
        Ok((cg, w)) => (Some(cg), w),
        Err(e) => (
            None,
            vec![format!(
                "cannot create the daemon's cgroups, running without pids/memory limits: {e}"
            )],
        ),
    };
    for w in warnings {
        crate::warning!("{w}");
    }
    if let Some(cg) = &cgroups {
        if cfg.helper_uid != 0 {
            cg.chown(cfg.helper_uid, cfg.helper_gid).map_err(|e| {
                fail(
                    1,
                    format!("cannot hand the cgroups to --privileged-uid: {e}"),
                )
            })?;
        }
    }
    // With --chroot/--mountpoints the hierarchies may be out of reach after the switch: the
    // groups are created now and reached through descriptors from then on.
    let mut cgroups = cgroups;
    if cfg.root_switch.active() {
        if let Some(cg) = cgroups.as_mut() {
            cg.anchor()
                .map_err(|e| fail(1, format!("cannot keep hold of the daemon's cgroups: {e}")))?;
        }
    }
    // --chroot/--pivot-root/--mountpoints: from here on every path (pid file, status file,
    // control socket, lists dir, dump dir, rules reloads, hooks, handler) is inside the new root.
    if cfg.root_switch.active() {
        rootfs::enter(&cfg.root_switch).map_err(|e| fail(e.code, e.msg))?;
        if let Some(dir) = &cfg.root_switch.chroot {
            rootfs::check_inside(
                dir,
                &cfg.watch_dir,
                &cfg.handler,
                &[&cfg.pre_exit_hook, &cfg.exit_hook],
            )
            .map_err(|e| fail(e.code, e.msg))?;
        }
    }
    // --detach-network=everywhere: the helper and every handler go without the host's network
    // (the sockets the daemon needs from the host, syslog and systemd's, are connected above
    // or are paths).
    if cfg.detach_network_everywhere {
        namespaces::unshare_network().map_err(|e| fail(1, e.to_string()))?;
    }
    if let Some(p) = &cfg.pid_file {
        write_new(p, format!("{}", sys::getpid()).as_bytes())
            .map_err(|e| fail(2, format!("cannot write the pid file {}: {e}", p.display())))?;
    }
    let control = match &cfg.socket {
        Some(p) => Some(control_socket(&cfg, p)?),
        None => None,
    };
    let status = match &cfg.status_file {
        Some(p) => Some(write_new(p, b"starting").map_err(|e| {
            fail(
                2,
                format!("cannot write the status file {}: {e}", p.display()),
            )
        })?),
        None => None,
    };
    let root = open(
        &cfg.watch_dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        fail(
            2,
            format!("cannot open the watch dir {}: {e}", cfg.watch_dir.display()),
        )
    })?;
    let inotify = sys::inotify_init().map_err(|e| {
        fail(
            24,
            format!("inotify_init1: {e} (check fs.inotify.max_user_instances)"),
        )
    })?;
    // The instance's queue length is the value of the sysctl now (the kernel copies it in).
    let inotify_queue = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(crate::worker::DEFAULT_INOTIFY_QUEUE);
    let (wsock, hsock) =
        crate::privsep::protocol::socket_pair().map_err(|e| fail(1, format!("socketpair: {e}")))?;
    let lists = lists_dir(&cfg)?;
    // What the janitor removes when the daemon is gone, however it ended.
    let remove_files: Vec<PathBuf> = cfg
        .pid_file
        .iter()
        .chain(cfg.status_file.iter())
        .chain(cfg.socket.iter())
        .cloned()
        .collect();
    // Every policy the administrator configured, frozen now: the start configuration, then each
    // --custom-signals block (the worker can only select among these).
    let policies: Vec<ExecPolicy> = std::iter::once(&cfg)
        .chain(cfg.alternates.iter())
        .map(ExecPolicy::from_config)
        .collect();
    let policy = policies[0].clone();
    let (janitor_read, janitor_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(1, format!("pipe: {e}")))?;
    // The janitor holds the write end of `done` until it has cleaned up: the worker waits for
    // its EOF before exiting, so nothing is left when the daemon's pid is gone.
    let (done_read, done_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(1, format!("pipe: {e}")))?;
    let worker_pid = sys::getpid();

    sys::block_signals(&cfg.custom_signal_numbers())
        .map_err(|e| fail(1, format!("sigprocmask: {e}")))?;
    match sys::fork().map_err(|e| fail(1, format!("fork: {e}")))? {
        ForkResult::Child => {
            drop(wsock);
            drop(done_read);
            let helper_inotify = inotify;
            helper::run(HelperSetup {
                chan: Channel::new(hsock),
                worker: worker_pid,
                root,
                inotify: helper_inotify,
                lists,
                cgroups,
                policy,
                policies,
                helper_uid: cfg.helper_uid,
                helper_gid: cfg.helper_gid,
                janitor_read: Some(janitor_read),
                remove_files,
                janitor_write,
                janitor: None,
                janitor_done: Some(done_write),
            })
        }
        ForkResult::Parent { child } => {
            drop(hsock);
            drop(janitor_read);
            drop(done_write);
            drop(root);
            drop(lists);
            let hooks = TestHooks::from_env();
            hooks.switch_off(&mut layers);
            let mut in_cgroup = false;
            if let Some(cg) = cgroups.as_ref().filter(|_| layers.on(Layer::Cgroup)) {
                match cg.add_worker(worker_pid.as_raw() as u32) {
                    Ok(()) => in_cgroup = true,
                    Err(e) => crate::warning!("cannot move the worker into its cgroup: {e}"),
                }
            }
            // The helper owns the cgroups now: the worker's copy must not remove them.
            if let Some(mut cg) = cgroups {
                cg.disarm();
            }
            let sigfd = worker::signal_fd(&cfg.custom_signal_numbers())
                .map_err(|e| fail(1, format!("signalfd: {e}")))?;
            let chan = Channel::new(wsock);
            // janitor_write is never written: its closing at our exit is the message.
            let mut keep = vec![
                chan.raw_fd(),
                inotify.as_raw_fd(),
                sigfd_raw(&sigfd),
                janitor_write.as_raw_fd(),
                done_read.as_raw_fd(),
            ];
            keep.extend(crate::log::syslog_fd());
            keep.extend(status.as_ref().map(|f| f.as_raw_fd()));
            keep.extend(notify.as_ref().map(|n| n.raw_fd()));
            keep.extend(control.as_ref().map(|l| l.as_raw_fd()));
            keep.extend(hooks.keep_fds());
            sys::close_all_except(&keep)
                .map_err(|e| fail(1, format!("closing inherited fds: {e}")))?;
            confine_worker(&cfg, chan.raw_fd(), layers, in_cgroup)
                .map_err(|e| fail(1, format!("cannot confine the worker: {e}")))?;
            let w = Worker::new(WorkerSetup {
                cfg,
                client: Client::new(chan),
                inotify,
                inotify_queue,
                helper: child,
                sigfd,
                hooks,
                status_file: status,
                janitor: Some((janitor_write, done_read)),
                notify,
                control: control.map(crate::control::Control::new),
            });
            Ok(w.run())
        }
    }
}

fn sigfd_raw(s: &nix::sys::signalfd::SignalFd) -> i32 {
    use std::os::fd::AsFd;
    s.as_fd().as_raw_fd()
}

/// The worker's layers, decided once at start from `--splitting` (test builds may switch more
/// off later, see [`TestHooks::switch_off`]); says so on the log output when it is not the
/// default.
fn worker_layers(cfg: &Config) -> WorkerLayers {
    match cfg.splitting {
        Splitting::Process => {}
        Splitting::Thread => crate::info!(
            "--splitting=thread: clsync's thread mode shares memory between its privileged and unprivileged threads (no isolation); clsync-rs keeps the stronger process split instead (a sandboxed worker, a privileged helper)"
        ),
        Splitting::Off => crate::warning!(
            "--splitting=off: the worker that reads the tenant-written tree is NOT confined: no seccomp filter, no landlock, no namespaces of its own (it shares the host's network), no cgroup limits, no no_new_privs, capability bounding set left as is. It still runs as uid {} gid {} without capabilities, and the helper still does and checks every privileged action, but a bug in the code that reads the tenant-written tree is no longer contained by the sandbox. For debugging and compatibility only: drop --splitting=off (the default is process) in production",
            cfg.worker_uid,
            cfg.worker_gid
        ),
    }
    WorkerLayers::for_splitting(cfg.splitting)
}

/// The worker's sandbox, in order: namespaces, bounding set, ids, capability sets, no_new_privs,
/// not dumpable, landlock, then (last, after everything that needs a syscall the filter denies)
/// the SIGSYS reporter and the seccomp allowlist; each step only if `layers` has it on. Ends
/// with the `worker-sandbox` audit line saying what is on.
fn confine_worker(
    cfg: &Config,
    report_fd: i32,
    layers: WorkerLayers,
    in_cgroup: bool,
) -> Result<(), String> {
    let e = |e: crate::sandbox::SandboxError| e.to_string();
    if layers.on(Layer::Netns) {
        namespaces::unshare_worker().map_err(e)?;
    }
    if layers.on(Layer::Bounding) {
        caps::worker_drop_bounding().map_err(e)?;
    }
    if layers.on(Layer::Identity) {
        identity::drop_to(cfg.worker_uid, cfg.worker_gid).map_err(e)?;
    }
    if layers.on(Layer::CapSets) {
        if layers.on(Layer::Bounding) {
            caps::worker_clear_all().map_err(e)?;
        } else {
            caps::worker_clear_sets().map_err(e)?;
        }
    }
    if layers.on(Layer::Nnp) {
        caps::set_no_new_privs().map_err(e)?;
    }
    caps::set_not_dumpable().map_err(e)?;
    let mut landlock = "off";
    if layers.on(Layer::Landlock) {
        let st = landlock::restrict_worker().map_err(e)?;
        match st {
            landlock::LandlockStatus::FullyEnforced => crate::debug!(1, "landlock: fully enforced"),
            other => crate::warning!("landlock is not fully enforced on this kernel ({other:?})"),
        }
        landlock = match st {
            landlock::LandlockStatus::FullyEnforced => "enforced",
            landlock::LandlockStatus::PartiallyEnforced => "partial",
            landlock::LandlockStatus::NotEnforced => "unsupported",
        };
    }
    let seccomp = layers.on(Layer::Seccomp);
    if seccomp {
        seccomp::install_sigsys_reporter(report_fd, protocol::violation_report).map_err(e)?;
        seccomp::install_worker().map_err(e)?;
    }
    let (uid, gid) = if layers.on(Layer::Identity) {
        (cfg.worker_uid, cfg.worker_gid)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    let onoff = |l: Layer, on: &'static str, off: &'static str| {
        if layers.on(l) {
            on
        } else {
            off
        }
    };
    crate::log::audit(
        "worker-sandbox",
        crate::audit_fields![
            "pid" => sys::getpid(),
            "uid" => uid,
            "gid" => gid,
            "caps" => onoff(Layer::CapSets, "none", "kept"),
            "bounding" => onoff(Layer::Bounding, "empty", "kept"),
            "namespaces" => onoff(Layer::Netns, "net,ipc,mnt,uts", "none"),
            "cgroup" => if in_cgroup { "worker" } else { "none" },
            "no_new_privs" => onoff(Layer::Nnp, "1", "0"),
            "landlock" => landlock,
            "seccomp" => onoff(Layer::Seccomp, "allowlist", "off"),
            "splitting" => cfg.splitting.effective().name(),
        ],
    );
    Ok(())
}

/// Binds and listens on the control socket (replacing a stale socket, never another file),
/// with the configured owner and mode, non-blocking.
fn control_socket(
    cfg: &Config,
    p: &std::path::Path,
) -> Result<std::os::unix::net::UnixListener, StartError> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(md) = std::fs::symlink_metadata(p) {
        if !md.file_type().is_socket() {
            return Err(fail(
                17,
                format!("--socket {}: exists and is not a socket", p.display()),
            ));
        }
        let _ = std::fs::remove_file(p);
    }
    let l = std::os::unix::net::UnixListener::bind(p).map_err(|e| {
        fail(
            2,
            format!("cannot bind the control socket {}: {e}", p.display()),
        )
    })?;
    l.set_nonblocking(true)
        .map_err(|e| fail(1, format!("control socket: {e}")))?;
    if let Some((u, g)) = cfg.socket_owner {
        chown(p, u.map(Uid::from_raw), g.map(Gid::from_raw))
            .map_err(|e| fail(1, format!("--socket-own on {}: {e}", p.display())))?;
    }
    if let Some(m) = cfg.socket_mode {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
            .map_err(|e| fail(1, format!("--socket-mod on {}: {e}", p.display())))?;
    }
    Ok(l)
}

/// Creates or truncates a file the daemon owns (pid, status) without following a symlink
/// planted at its path, writes `content`, and returns it open for later updates.
fn write_new(p: &std::path::Path, content: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)?;
    f.write_all(content)?;
    Ok(f)
}

/// The helper's private lists directory (or the administrator's -L), created before the fork,
/// owned by the helper's uid, never writable by the worker.
fn lists_dir(cfg: &Config) -> Result<ListsDir, StartError> {
    let (path, ours) = match &cfg.lists_dir {
        Some(p) => {
            if !p.exists() {
                std::fs::create_dir_all(p).map_err(|e| {
                    fail(2, format!("cannot create lists dir {}: {e}", p.display()))
                })?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| fail(2, format!("chmod lists dir {}: {e}", p.display())))?;
            }
            let md = std::fs::symlink_metadata(p)
                .map_err(|e| fail(2, format!("lists dir {}: {e}", p.display())))?;
            if !md.is_dir() {
                return Err(fail(
                    20,
                    format!("lists dir {} is not a directory", p.display()),
                ));
            }
            if md.mode() & 0o077 != 0 {
                return Err(fail(
                    13,
                    format!(
                        "lists dir {} is insecure: group or others have access (chmod 0700 it)",
                        p.display()
                    ),
                ));
            }
            (p.clone(), false)
        }
        None => {
            let tmp = std::env::var_os("TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            let p = nix::unistd::mkdtemp(&tmp.join("clsync-XXXXXX")).map_err(|e| {
                let inside = cfg
                    .root_switch
                    .chroot
                    .as_ref()
                    .map(|d| {
                        format!(
                            " (inside --chroot {}: it must have a writable {})",
                            d.display(),
                            tmp.display()
                        )
                    })
                    .unwrap_or_default();
                fail(
                    2,
                    format!(
                        "cannot create a lists dir under {}{inside}: {e}",
                        tmp.display()
                    ),
                )
            })?;
            (p, true)
        }
    };
    // Handler and helper share a uid by default; otherwise the handler reads through the group.
    let (mode, group) = if cfg.handler_uid == cfg.helper_uid {
        (0o700, cfg.helper_gid)
    } else {
        (0o2750, cfg.handler_gid)
    };
    chown(
        &path,
        Some(Uid::from_raw(cfg.helper_uid)),
        Some(Gid::from_raw(group)),
    )
    .map_err(|e| fail(1, format!("chown lists dir {}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(1, format!("chmod lists dir {}: {e}", path.display())))?;
    let fd: OwnedFd = open(
        &path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| fail(2, format!("open lists dir {}: {e}", path.display())))?;
    Ok(ListsDir { fd, path, ours })
}
