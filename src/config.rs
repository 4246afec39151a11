//! Validated configuration: everything the administrator said, checked once at start, then frozen.
//! Both processes get a copy before the fork; the helper builds its [`crate::privsep::policy`]
//! from it and never takes a program, an argument, a uid or a capability from the worker.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use caps::Capability;

use crate::cli::{Cli, ModeArg};
use crate::rules::{ParseOptions, Rules};
use crate::sandbox::{caps as scaps, identity};

/// `--splitting`: clsync's privilege-separation mode, in words or numbers (0 off, 1 thread,
/// 2 process). `Thread` runs as `Process` here (clsync's thread mode shares memory between the
/// privileged and unprivileged sides); `Off` leaves the worker unconfined (see
/// [`crate::sandbox::WorkerLayers::for_splitting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Splitting {
    Off,
    Thread,
    #[default]
    Process,
}

impl Splitting {
    /// The accepted spellings, for error messages.
    pub const ACCEPTED: &'static str = "process or 2 (the default), thread or 1, off or 0";

    pub fn parse(v: &str) -> Option<Splitting> {
        match v {
            "off" | "0" => Some(Splitting::Off),
            "thread" | "1" => Some(Splitting::Thread),
            // Empty: the default (clsync reads it as its default, 0; here the default is process).
            "process" | "2" | "" => Some(Splitting::Process),
            _ => None,
        }
    }

    /// The layout that actually runs: `thread` runs as `process`.
    pub fn effective(self) -> Splitting {
        match self {
            Splitting::Thread => Splitting::Process,
            s => s,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Splitting::Off => "off",
            Splitting::Thread => "thread",
            Splitting::Process => "process",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Simple,
    Direct,
    Shell,
    RsyncShell,
    RsyncDirect,
    /// A shared object's `clsyncapi_sync` gets the events (see [`crate::privsep::soload`]).
    So,
    /// A shared object's `clsyncapi_rsync` gets rsync list files.
    RsyncSo,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::Direct => "direct",
            Mode::Shell => "shell",
            Mode::RsyncShell => "rsyncshell",
            Mode::RsyncDirect => "rsyncdirect",
            Mode::So => "so",
            Mode::RsyncSo => "rsyncso",
        }
    }

    /// Modes whose lists are rsync include/exclude lists.
    pub fn is_rsync(self) -> bool {
        matches!(self, Mode::RsyncShell | Mode::RsyncDirect | Mode::RsyncSo)
    }

    /// Modes whose handler is a shared object loaded in a handler child.
    pub fn is_so(self) -> bool {
        matches!(self, Mode::So | Mode::RsyncSo)
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub watch_dir: PathBuf,
    pub destination: Option<String>,
    pub mode: Mode,
    /// Absolute path of the handler program (the shared object in modes so and rsyncso).
    pub handler: PathBuf,
    /// Modes so and rsyncso: the shared object, checked at start.
    pub shared_object: Option<crate::privsep::soload::SharedObject>,
    /// The handler arguments given on the command line (None: the mode's defaults).
    pub handler_args: Option<Vec<Vec<u8>>>,
    pub rules: Rules,
    /// The rules file, re-read (by the helper) on SIGHUP.
    pub rules_file: Option<PathBuf>,
    /// How the rules file is read (--auto-add-rules-w), at start and on SIGHUP.
    pub rules_options: ParseOptions,
    /// -k: seconds a handler may run before it is killed and counts as failed (0: no limit).
    pub timeout_sync: u64,
    /// --ignore-failures: a sync that failed every try is logged and skipped, not fatal.
    pub ignore_failures: bool,
    /// --rsync-prefer-include: rsync lists name every path to sync, no exclude list.
    pub prefer_include: bool,
    /// --rsync-inclimit: most include lines per rsync call (0: no limit).
    pub inclimit: u64,
    /// -F: the initial sync ignores the rules.
    pub full_initialsync: bool,
    /// --one-file-system (or -X): walks stay on the watch dir's file system.
    pub one_file_system: bool,
    /// -X: mount points' content is excluded (rsync modes: `/dir/**`).
    pub exclude_mount_points: bool,
    /// -b: fork into the background.
    pub background: bool,
    /// -z: pid file; --status-file: the state word. Absolute (relative ones are taken from the
    /// watch dir, as clsync does), never inside the watched tree.
    pub pid_file: Option<PathBuf>,
    pub status_file: Option<PathBuf>,
    /// --dump-dir (signal 29, the control socket's `dump`), absolute and normalised
    /// ([`dump_dir_path`]), never inside the watched tree; None when dumps are off, and then
    /// `dump_off` says why (clsync's default `/tmp/clsync-dump-%label%` lies in the tree).
    pub dump_dir: Option<PathBuf>,
    pub dump_off: Option<String>,
    /// --modification-signature: stat fields (mask) whose change makes an event worth syncing.
    pub modification_signature: u16,
    /// --cancel-syscalls=mon_stat: no stat per event.
    pub cancel_mon_stat: bool,
    /// --synclist-simplify: shell list lines are the path only.
    pub synclist_simplify: bool,
    /// --have-recursive-sync (non-rsync modes): the initial sync and each new directory are one
    /// `initialsync` call with the absolute path.
    pub have_recursive_sync: bool,
    /// clsync's `---` argument set for those calls (None: the mode's default, see
    /// [`crate::privsep::policy`]).
    pub initial_args: Option<Vec<Vec<u8>>>,
    /// The daemon's cgroup name (one path component) under the cgroup it starts in; default
    /// `clsync-<pid>` (the pid after -b).
    pub cgroup_name: Option<String>,
    /// --standby-file (absolute; relative ones from the watch dir).
    pub standby_file: Option<PathBuf>,
    /// --socket: the control socket's path, owner and mode.
    pub socket: Option<PathBuf>,
    pub socket_owner: Option<(Option<u32>, Option<u32>)>,
    pub socket_mode: Option<u32>,
    /// -p/--threading: parallel handler children.
    pub threading: crate::cli::Threading,
    /// The built-in fixer for a recognised chown/chgrp/chmod handler (direct and simple modes).
    pub fixer: Option<crate::handler::fixer::Fixer>,
    /// Hooks, absolute program paths.
    pub pre_exit_hook: Option<PathBuf>,
    pub exit_hook: Option<PathBuf>,
    pub delay_sync: u64,
    pub delay_collect: u64,
    pub delay_bigfile: u64,
    pub threshold_bigfile: u64,
    pub ignore_exitcodes: Vec<i32>,
    pub retries: u64,
    pub worker_uid: u32,
    pub worker_gid: u32,
    pub helper_uid: u32,
    pub helper_gid: u32,
    pub handler_uid: u32,
    pub handler_gid: u32,
    pub handler_caps: Vec<Capability>,
    pub lists_dir: Option<PathBuf>,
    pub keep_lists: bool,
    pub label: String,
    pub exit_on_no_events: bool,
    pub only_initialsync: bool,
    pub skip_initialsync: bool,
    pub max_iterations: u64,
    /// --splitting as given (words or numbers); see [`Splitting::effective`].
    pub splitting: Splitting,
    /// --chroot, --pivot-root, --mountpoints: done once at start, before the fork.
    pub root_switch: RootSwitch,
    /// --detach-network=everywhere: the whole daemon (helper, handlers) leaves the host's
    /// network namespace at start, not only the worker.
    pub detach_network_everywhere: bool,
    /// The configuration block this configuration comes from (-K, `default` without one).
    pub block: String,
    /// --custom-signals: each signal with the index of its block among the exec policies
    /// (1 + its index in `alternates`; 0 is this, the start configuration).
    pub custom_signals: Vec<(i32, usize)>,
    /// The --custom-signals blocks, each a full configuration resolved and checked at start,
    /// its run-time-fixed settings equal to the start configuration's (see
    /// [`Config::with_custom_signals`]).
    pub alternates: Vec<Config>,
}

/// `--pivot-root`: how `--chroot` changes the root (clsync's words; `""` is off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PivotRoot {
    /// chroot(2) only.
    #[default]
    Off,
    /// pivot_root(2) into DIR, which must already be a mount point.
    Direct,
    /// Bind-mount DIR onto itself (a mount point), then pivot_root.
    Auto,
    /// As auto, with the bind mount read-only.
    AutoRo,
}

impl PivotRoot {
    pub const ACCEPTED: &'static str = "off, direct, auto, auto-ro";

    pub fn parse(s: &str) -> Option<PivotRoot> {
        Some(match s {
            "" | "off" => PivotRoot::Off,
            "direct" => PivotRoot::Direct,
            "auto" => PivotRoot::Auto,
            "auto-ro" => PivotRoot::AutoRo,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PivotRoot::Off => "off",
            PivotRoot::Direct => "direct",
            PivotRoot::Auto => "auto",
            PivotRoot::AutoRo => "auto-ro",
        }
    }
}

/// What `--chroot`, `--pivot-root` and `--mountpoints` ask for, resolved. Nothing is asked when
/// `chroot` and `mountpoints` are both `None` (then the daemon stays in the host's mount
/// namespace, as before).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootSwitch {
    /// --chroot: the new root, absolute and resolved on the host.
    pub chroot: Option<PathBuf>,
    pub pivot: PivotRoot,
    /// --mountpoints: the mount points kept (compared exactly with /proc/self/mountinfo);
    /// `None`: nothing is detached.
    pub mountpoints: Option<Vec<PathBuf>>,
}

impl RootSwitch {
    /// Whether the daemon leaves the host's mount namespace at start.
    pub fn active(&self) -> bool {
        self.chroot.is_some() || self.mountpoints.is_some()
    }
}

/// --chroot, --pivot-root, --mountpoints, read as clsync reads them: `""` unsets --chroot and
/// --mountpoints and means off for --pivot-root; --mountpoints is a comma list where an empty
/// element clears what came before; --pivot-root other than off without --chroot is an error.
fn root_switch(cli: &Cli) -> Result<RootSwitch, ConfigError> {
    let pivot = match &cli.pivot_root {
        None => PivotRoot::Off,
        Some(w) => PivotRoot::parse(w).ok_or_else(|| {
            inval(format!(
                "--pivot-root={w}: unknown value; accepted: {}",
                PivotRoot::ACCEPTED
            ))
        })?,
    };
    let chroot = match cli.chroot.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => {
            let p =
                std::fs::canonicalize(d).map_err(|e| noent(format!("--chroot \"{d}\": {e}")))?;
            if !p.is_dir() {
                return Err(ConfigError {
                    code: 20,
                    msg: format!("--chroot \"{}\": not a directory", p.display()),
                });
            }
            Some(p)
        }
    };
    if pivot != PivotRoot::Off && chroot.is_none() {
        return Err(inval(format!(
            "--pivot-root={} cannot be used without --chroot: pivot_root needs the new root (give --chroot DIR, or --pivot-root=off)",
            pivot.name()
        )));
    }
    let mountpoints = match cli.mountpoints.as_deref().filter(|m| !m.is_empty()) {
        None => None,
        Some(list) => {
            let mut v: Vec<PathBuf> = Vec::new();
            for m in list.split(',') {
                if m.is_empty() {
                    v.clear();
                } else {
                    v.push(PathBuf::from(m));
                }
            }
            // As in clsync, a list that ends up empty is the same as none.
            (!v.is_empty()).then_some(v)
        }
    };
    if pivot != PivotRoot::Off && mountpoints.is_some() {
        crate::warning!(
            "--mountpoints is set while --pivot-root is set, too: the mounts are detached before the pivot, which detaches the old root as a whole anyway"
        );
    }
    Ok(RootSwitch {
        chroot,
        pivot,
        mountpoints,
    })
}

/// A start-up error: the message names what is wrong; `code` is clsync's exit code for it
/// (the errno: 22 EINVAL for a wrong option or combination, 2 ENOENT for a missing path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub code: i32,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

fn inval(msg: impl Into<String>) -> ConfigError {
    ConfigError {
        code: 22,
        msg: msg.into(),
    }
}

fn noent(msg: impl Into<String>) -> ConfigError {
    ConfigError {
        code: 2,
        msg: msg.into(),
    }
}

/// Finds `name` in PATH (a name with a `/` is taken as a path); returns an absolute path.
fn resolve_program(name: &str) -> Result<PathBuf, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        // Exit codes are the errno, as clsync's: ENOENT, ENOTDIR, EACCES when not executable.
        let p = std::fs::canonicalize(name).map_err(|e| ConfigError {
            code: e.raw_os_error().unwrap_or(2),
            msg: format!("sync handler \"{name}\": {e}"),
        })?;
        if !is_exec(&p) {
            return Err(ConfigError {
                code: 13,
                msg: format!("sync handler \"{}\" is not an executable file", p.display()),
            });
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(name);
        if cand.is_absolute() && is_exec(&cand) {
            return Ok(cand);
        }
    }
    Err(noent(format!(
        "sync handler \"{name}\" not found in PATH (install it, or give -S an absolute path)"
    )))
}

/// clsync's default --dump-dir is this followed by the label.
pub const DEFAULT_DUMP_DIR_PREFIX: &str = "/tmp/clsync-dump-";

/// A --dump-dir as the daemon uses it and as the control socket's `dump <dir>` must name it:
/// relative to the watch dir (as clsync resolves it), with `.` components, repeated and
/// trailing slashes dropped. Nothing is resolved on the file system (the sandboxed worker
/// compares with it, and the directory must not exist yet).
pub fn dump_dir_path(watch_dir: &Path, dir: &str) -> PathBuf {
    watch_dir.join(dir).components().collect()
}

/// A path the daemon writes (-z, --status-file, --socket, --dump-dir), absolute (relative ones
/// are taken from the watch dir, as clsync does) and normalised, refused when it resolves
/// inside the watched tree, which tenants write.
fn outside_tree(watch_dir: &Path, opt: &str, v: &str) -> Result<PathBuf, ConfigError> {
    if v.is_empty() {
        return Err(ConfigError {
            code: 2,
            msg: format!("--{opt}: empty path"),
        });
    }
    let p = dump_dir_path(watch_dir, v);
    // Where the path leads: its longest existing ancestor resolved (symlinks, `..`), the rest
    // as written. So the path itself counts when it exists (a symlink into the tree, the watch
    // dir), and `../x` from the watch dir is outside.
    let resolved = p
        .ancestors()
        .find_map(|a| {
            let c = std::fs::canonicalize(a).ok()?;
            Some(c.join(p.strip_prefix(a).ok()?))
        })
        .unwrap_or_else(|| p.clone());
    if resolved.starts_with(watch_dir) {
        return Err(inval(format!(
            "--{opt}={}: inside the watched tree, which its writers control: choose a path outside it",
            p.display()
        )));
    }
    Ok(p)
}

fn is_remote(dest: &str) -> bool {
    // user@host:path, host:path (a colon before any slash), or a lowercase scheme://
    if let Some(i) = dest.find("://") {
        return dest[..i].chars().all(|c| c.is_ascii_lowercase());
    }
    match (dest.find(':'), dest.find('/')) {
        (Some(c), Some(s)) => c < s,
        (Some(_), None) => true,
        _ => false,
    }
}

/// clsync options that configure a mechanism this build does not have: accepted (so an existing
/// command line or keyfile runs unchanged), each with one info line saying why it changes
/// nothing here. None of them touches the sandbox.
fn compat_noops(cli: &Cli) {
    let noops: [(bool, &str, &str); 5] = [
        (
            cli.exit_on_sync_skipping,
            "exit-on-sync-skipping",
            "clsync 0.4.5 reads it only in its BSM monitor (FreeBSD's audit queue reaching the kernel limit ends clsync instead of a warning), never with inotify, where a sync skipped by --modification-signature goes on as here; an inotify queue overflow here is rescanned and synced, so no event is skipped",
        ),
        (
            cli.fts_experimental_optimization,
            "fts-experimental-optimization",
            "clsync 0.4.5 parses it and never reads it; walks here use the helper's own directory scan, not fts",
        ),
        (
            cli.forget_privthread_info,
            "forget-privthread-info",
            "it concerns clsync's privileged thread (--splitting=thread), which this build does not have: the privileged helper is a separate process",
        ),
        (
            cli.permit_mprotect,
            "permit-mprotect",
            "it adds mprotect to clsync's own seccomp filter (--seccomp-filter); the worker's allowlist here (policy/worker.json) is built in, is not changed by any option, allows mprotect only without PROT_EXEC and traps any attempt to make memory executable",
        ),
        (
            cli.shm_mprotect,
            "shm-mprotect",
            "it mprotects clsync's SysV shared-memory command pages (--splitting=process); here helper and worker share no memory and exchange checked messages over a socket",
        ),
    ];
    for (_, opt, why) in noops.iter().filter(|n| n.0) {
        crate::info!("--{opt}: accepted, changes nothing here: {why}; the sandbox is unaffected");
    }
}

/// clsync's limit on --add-permitted-hook-files (MAXPERMITTEDHOOKFILES).
const MAX_PERMITTED_HOOK_FILES: usize = 256;

/// --add-permitted-hook-files, read as clsync reads it (a comma list, an empty element clears
/// what came before; more than 256 files is an error; clsync 0.4.5 hangs on an empty last
/// element, here it just clears) and accepted with an info line: the files are not given to the
/// helper's exec policy. In clsync the list only widens `--check-execvp-arguments`, to let a
/// `FILE label` hook run that is not the --exit-hook/--pre-exit-hook known at start (one a
/// `--custom-signals` block switch brings in). Here the only hooks are those two, resolved and
/// frozen in the policy at start, so a listed file is never run and the option changes nothing.
fn permitted_hook_files(cli: &Cli) -> Result<Vec<String>, ConfigError> {
    let Some(list) = &cli.add_permitted_hook_files else {
        return Ok(Vec::new());
    };
    let mut files: Vec<String> = Vec::new();
    for f in list.split(',') {
        if f.is_empty() {
            files.clear();
        } else if files.len() >= MAX_PERMITTED_HOOK_FILES {
            return Err(inval(format!(
                "--add-permitted-hook-files: too many permitted hook files (at most {MAX_PERMITTED_HOOK_FILES})"
            )));
        } else {
            files.push(f.to_string());
        }
    }
    crate::info!(
        "--add-permitted-hook-files: accepted, changes nothing here: {} file(s) listed, none is \
         given to the privileged helper's exec policy; clsync permits them only for hooks that \
         appear after start (a --custom-signals switch), and the only hooks here are \
         --exit-hook and --pre-exit-hook, fixed at start; the sandbox is unaffected",
        files.len()
    );
    Ok(files)
}

/// Signals --custom-signals may not name, and why: those that cannot be caught, those the daemon
/// already acts on, faults, and the C library's own.
fn reserved_signal(sig: u64) -> Option<&'static str> {
    Some(match sig {
        9 => "SIGKILL cannot be caught",
        19 => "SIGSTOP cannot be caught",
        1 => "the daemon already uses SIGHUP (reload the rules)",
        2 => "the daemon already uses SIGINT (sync and exit)",
        3 => "the daemon already uses SIGQUIT (pre-exit hook, sync and exit)",
        15 => "the daemon already uses SIGTERM (sync and exit)",
        14 => "the daemon already uses SIGALRM (pre-exit hook, sync and exit)",
        10 => "the daemon already uses SIGUSR1 (clsync's thread reaping)",
        12 => "the daemon already uses SIGUSR2 (full re-sync)",
        17 => "the daemon already uses SIGCHLD (child exits)",
        16 => "the daemon already uses signal 16 (clsync's wake-up)",
        29 => "the daemon already uses signal 29 (dump of the queues)",
        13 => "SIGPIPE is raised by the daemon's own writes to closed connections",
        31 => "SIGSYS reports the worker's seccomp violations",
        4 | 5 | 6 | 7 | 8 | 11 => {
            "it signals a fault in the process (SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV)"
        }
        32 | 33 => "the C library reserves signals 32 and 33",
        65..=512 => "Linux has no signal above 64 (SIGRTMAX)",
        _ => return None,
    })
}

/// --custom-signals as clsync reads it: comma lists of `SIG:BLOCK` (repeatable), `0` clears what
/// came before; a signal given twice keeps its last block. Signals above 512, reserved ones
/// (see [`reserved_signal`]) and malformed entries are errors naming the entry.
pub fn parse_custom_signals(list: &[String]) -> Result<Vec<(i32, String)>, ConfigError> {
    let mut out: Vec<(i32, String)> = Vec::new();
    for piece in list.iter().flat_map(|l| l.split(',')) {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        if crate::cli::parse_num(piece) == Ok(0) {
            out.clear();
            continue;
        }
        let Some((sig, block)) = piece.split_once(':') else {
            return Err(inval(format!(
                "--custom-signals: {piece:?}: expected SIGNAL:BLOCK (or 0 to clear the list)"
            )));
        };
        let n = crate::cli::parse_num(sig)
            .map_err(|e| inval(format!("--custom-signals: {piece:?}: {e}")))?;
        if n == 0 || n > 512 {
            return Err(inval(format!(
                "--custom-signals: {piece:?}: signal {n} out of range (1 to 512)"
            )));
        }
        if let Some(why) = reserved_signal(n) {
            return Err(inval(format!(
                "--custom-signals: {piece:?}: signal {n} cannot be used: {why}"
            )));
        }
        if block.is_empty() {
            return Err(inval(format!(
                "--custom-signals: {piece:?}: no configuration block named"
            )));
        }
        out.retain(|(s, _)| *s != n as i32);
        out.push((n as i32, block.to_string()));
    }
    Ok(out)
}

impl Config {
    /// The signal numbers of --custom-signals.
    pub fn custom_signal_numbers(&self) -> Vec<i32> {
        self.custom_signals.iter().map(|(s, _)| *s).collect()
    }

    /// The configuration block selected by policy index `index` (0: the start one).
    pub fn block_config(&self, index: usize) -> Option<&Config> {
        match index {
            0 => Some(self),
            i => self.alternates.get(i - 1),
        }
    }

    /// The policy index of block `name`: a --custom-signals block of that name, else the start
    /// block when it has that name.
    pub fn block_index(&self, name: &str) -> Option<usize> {
        self.alternates
            .iter()
            .position(|c| c.block == name)
            .map(|i| i + 1)
            .or((self.block == name).then_some(0))
    }

    /// Resolves every block of --custom-signals (`cli` is the start command line, `argv` the
    /// program's arguments, read again with each block's keys overriding, see
    /// [`crate::cli::parse_block`]) into a full configuration, checked now: a block that is
    /// missing or does not validate stops the start, naming signal and block. Settings that
    /// cannot change at run time and differ from the start's get a warning naming key and block,
    /// and the start value is kept; a different --mode is an error (the block's handler and
    /// arguments were written for its mode).
    pub fn with_custom_signals(
        mut self,
        cli: &Cli,
        argv: &[std::ffi::OsString],
    ) -> Result<Config, ConfigError> {
        for (sig, block) in parse_custom_signals(&cli.custom_signals)? {
            let index = match self.alternates.iter().position(|c| c.block == block) {
                Some(i) => i + 1,
                None => {
                    let what = |msg: &str| format!("--custom-signals {sig}:{block}: {msg}");
                    let bcli = crate::cli::parse_block(argv.to_vec(), &block).map_err(|e| {
                        ConfigError {
                            code: e.code,
                            msg: what(&e.msg),
                        }
                    })?;
                    let mut c = Config::from_cli(&bcli).map_err(|e| ConfigError {
                        code: e.code,
                        msg: what(&format!("block [{block}] does not validate: {}", e.msg)),
                    })?;
                    if c.mode != self.mode {
                        return Err(inval(what(&format!(
                            "block [{block}] has mode {}, the start configuration mode {}: the mode cannot change at run time",
                            c.mode.name(),
                            self.mode.name()
                        ))));
                    }
                    c.block = block.clone();
                    self.keep_fixed(&mut c, sig);
                    self.alternates.push(c);
                    self.alternates.len()
                }
            };
            self.custom_signals.push((sig, index));
        }
        Ok(self)
    }

    /// Settings of block `c` that cannot change at run time: where they differ from the start
    /// configuration, a warning and the start value.
    fn keep_fixed(&self, c: &mut Config, sig: i32) {
        let block = c.block.clone();
        let warn = |key: &str| {
            crate::warning!(
                "--custom-signals {sig}:{block}: block [{block}] sets {key} differently, which cannot change at run time: the start value is kept"
            )
        };
        macro_rules! fixed {
            ($($field:ident => $key:literal),* $(,)?) => {$(
                if c.$field != self.$field {
                    warn($key);
                    c.$field = self.$field.clone();
                }
            )*};
        }
        // The default dump dir follows the label, which may change: only an explicit one warns.
        let default_dump = |cfg: &Config| {
            cfg.dump_dir.as_ref().is_some_and(|d| {
                d == &dump_dir_path(
                    &cfg.watch_dir,
                    &format!("{DEFAULT_DUMP_DIR_PREFIX}{}", cfg.label),
                )
            })
        };
        if default_dump(c) || c.dump_dir.is_none() && c.dump_off.is_some() {
            c.dump_dir = self.dump_dir.clone();
        }
        c.dump_off = self.dump_off.clone();
        fixed!(
            watch_dir => "watch-dir",
            background => "background",
            pid_file => "pid-file",
            status_file => "status-file",
            dump_dir => "dump-dir",
            socket => "socket",
            socket_owner => "socket-own",
            socket_mode => "socket-mod",
            threading => "threading",
            cgroup_name => "cgroup-group-name",
            worker_uid => "uid",
            worker_gid => "gid",
            helper_uid => "privileged-uid",
            helper_gid => "privileged-gid",
            handler_uid => "sync-handler-uid",
            handler_gid => "sync-handler-gid",
            handler_caps => "sync-handler-capabilities",
            lists_dir => "lists-dir",
            keep_lists => "dont-unlink-lists",
            splitting => "splitting",
            one_file_system => "one-file-system",
            exclude_mount_points => "exclude-mount-points",
            modification_signature => "modification-signature",
            cancel_mon_stat => "cancel-syscalls",
            have_recursive_sync => "have-recursive-sync",
            prefer_include => "rsync-prefer-include",
            exit_on_no_events => "exit-on-no-events",
            only_initialsync => "only-initialsync",
            skip_initialsync => "skip-initialsync",
            full_initialsync => "full-initialsync",
        );
    }

    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let splitting = Splitting::parse(&cli.splitting).ok_or_else(|| {
            inval(format!(
                "--splitting={}: unknown value; accepted: {}",
                cli.splitting,
                Splitting::ACCEPTED
            ))
        })?;
        if splitting == Splitting::Off {
            if let Some(o) = [
                (cli.secure_splitting, "--secure-splitting"),
                (cli.seccomp_filter, "--seccomp-filter"),
            ]
            .iter()
            .find_map(|&(on, o)| on.then_some(o))
            {
                return Err(inval(format!(
                    "--splitting=off together with {o}: {o} asks for the worker's seccomp filter, which --splitting=off switches off; give one of them"
                )));
            }
        }
        match cli.monitor.as_str() {
            // Empty: unset, the default (as clsync).
            "inotify" | "" => {}
            "gio" | "kqueue" | "bsm" | "bsd" | "dtracepipe" => {
                return Err(inval(format!(
                "--monitor={}: not available on Linux in clsync-rs; inotify is the monitor here",
                cli.monitor
            )))
            }
            other => {
                return Err(inval(format!(
                    "--monitor={other}: unknown monitor (inotify)"
                )))
            }
        }
        // off and non-privileged: the worker has its own network namespace anyway (unless
        // --splitting=off); everywhere: so have the helper and the handlers.
        let detach_network_everywhere = match cli.detach_network.as_str() {
            "" | "off" | "non-privileged" => false,
            "everywhere" => true,
            other => {
                return Err(inval(format!(
                    "--detach-network={other}: expected off, non-privileged or everywhere"
                )))
            }
        };
        // Empty: not given, the four (clsync: none; here the helper needs all four).
        if let Some(c) = cli.preserve_capabilities.as_ref().filter(|c| !c.is_empty()) {
            let want = scaps::parse_cap_list(c).map_err(|e| inval(format!("-C: {e}")))?;
            if let Some(x) = want.iter().find(|c| !scaps::HELPER_CAPS.contains(c)) {
                return Err(inval(format!(
                    "-C {c}: {x} is not one of the helper's capabilities (CAP_DAC_READ_SEARCH, CAP_SETUID, CAP_SETGID, CAP_KILL)"
                )));
            }
            if want.len() < scaps::HELPER_CAPS.len() {
                return Err(inval(format!(
                    "-C {c}: the helper needs all of CAP_DAC_READ_SEARCH, CAP_SETUID, CAP_SETGID and CAP_KILL to do its work"
                )));
            }
        }
        let cgroup_name = cli.cgroup_group_name.clone();
        if let Some(n) = &cgroup_name {
            if n.is_empty() || n.contains('/') || n == "." || n == ".." {
                return Err(inval(format!(
                    "--cgroup-group-name={n}: one path component, created under the cgroup the daemon starts in"
                )));
            }
        }
        if let Some(w) = &cli.inherit_capabilities {
            match w.as_str() {
                "" | "permittied" | "dont-touch" | "clsync" | "empty" => crate::warning!(
                    "--inherit-capabilities={w}: ignored; the sync handler gets exactly --sync-handler-capabilities"
                ),
                other => return Err(inval(format!("--inherit-capabilities={other}: unknown value"))),
            }
        }
        // clsync's chdir(NULL) fails first (EFAULT), whatever else is missing.
        if cli.watch_dir.is_none() {
            return Err(ConfigError {
                code: 14,
                msg: "--watch-dir (-W) is required".to_string(),
            });
        }
        let watch = cli
            .watch_dir
            .as_deref()
            .ok_or_else(|| inval("--watch-dir (-W) is required"))?;
        // Exit codes are the errno, as clsync's (ENOENT, ENOTDIR, EACCES, ...).
        let watch_dir = std::fs::canonicalize(watch).map_err(|e| ConfigError {
            code: e.raw_os_error().unwrap_or(2),
            msg: format!("watch dir \"{watch}\": {e}"),
        })?;
        if !watch_dir.is_dir() {
            return Err(ConfigError {
                code: 20,
                msg: format!("watch dir \"{}\" is not a directory", watch_dir.display()),
            });
        }
        std::fs::read_dir(&watch_dir).map_err(|e| ConfigError {
            code: 13,
            msg: format!("watch dir \"{}\" cannot be read: {e}", watch_dir.display()),
        })?;

        let destination = match cli.destination_dir.as_deref() {
            None => None,
            Some(d) if is_remote(d) => Some(d.to_string()),
            Some(d) => {
                let p = std::fs::canonicalize(d).map_err(|e| ConfigError {
                    code: e.raw_os_error().unwrap_or(2),
                    msg: format!("destination dir \"{d}\": {e}"),
                })?;
                if p == Path::new("/") {
                    return Err(inval("destination dir \"/\" is refused"));
                }
                if !p.is_dir() {
                    return Err(inval(format!(
                        "destination dir \"{}\" is not a directory",
                        p.display()
                    )));
                }
                if p.starts_with(&watch_dir) || watch_dir.starts_with(&p) {
                    return Err(inval(format!(
                        "destination dir \"{}\" and watch dir \"{}\" overlap",
                        p.display(),
                        watch_dir.display()
                    )));
                }
                Some(p.to_string_lossy().into_owned())
            }
        };
        // After the watch and destination dirs: clsync resolves them before it validates.
        let mode = match cli.mode {
            None => return Err(inval(
                "--mode (-M) is required (simple, direct, shell, rsyncshell, rsyncdirect, so or rsyncso)",
            )),
            Some(ModeArg::Rsyncdirect) => Mode::RsyncDirect,
            Some(ModeArg::Rsyncshell) => Mode::RsyncShell,
            Some(ModeArg::Direct) => Mode::Direct,
            Some(ModeArg::Shell) => Mode::Shell,
            Some(ModeArg::Simple) => Mode::Simple,
            Some(ModeArg::So) => Mode::So,
            Some(ModeArg::Rsyncso) => Mode::RsyncSo,
        };
        // Every positional argument replaces the mode's default arguments; a single '' clears.
        let handler_args: Option<Vec<Vec<u8>>> = match cli.handler_args.as_slice() {
            [] => None,
            [one] if one.is_empty() => None,
            args => Some(args.iter().map(|a| a.as_bytes().to_vec()).collect()),
        };
        if mode == Mode::RsyncDirect && destination.is_none() {
            return Err(inval(
                "mode rsyncdirect needs a destination: give --destination-dir (-D)",
            ));
        }
        let handler = match (cli.sync_handler.as_deref(), mode) {
            (Some(h), m) if m.is_so() => std::fs::canonicalize(h)
                .map_err(|e| noent(format!("shared object \"{h}\": {e}")))?,
            // A bare name that exists in the start directory is that file, as clsync resolves
            // -S (realpath before the PATH lookup).
            (Some(h), _) if !h.contains('/') && Path::new(h).is_file() => {
                resolve_program(&format!("./{h}"))?
            }
            (Some(h), _) => resolve_program(h)?,
            (None, Mode::RsyncDirect) => resolve_program("rsync")?,
            (None, Mode::Direct) => resolve_program("cp")?,
            (None, m) => {
                return Err(inval(format!(
                    "mode {} needs a sync handler: give --sync-handler (-S)",
                    m.name()
                )))
            }
        };
        // clsync's loading checks, now, as root: a shared object that fails them stops the start
        // (the handler child checks the file it loads again).
        let shared_object = if mode.is_so() {
            let so_mode = if mode == Mode::So {
                crate::privsep::soload::SoMode::Sync
            } else {
                crate::privsep::soload::SoMode::Rsync
            };
            let so = crate::privsep::soload::SharedObject::new(handler.clone(), so_mode);
            crate::privsep::soload::open_checked(&so.path, &so.owners)
                .map_err(|msg| ConfigError { code: 1, msg })?;
            if handler_args.is_some() {
                crate::warning!(
                    "mode {}: the handler arguments are ignored (the shared object's function gets the {})",
                    mode.name(),
                    if mode == Mode::So { "events" } else { "list files" }
                );
            }
            Some(so)
        } else {
            None
        };
        if mode == Mode::Direct && destination.is_none() && handler_args.is_none() {
            if cli.sync_handler.is_none() {
                // clsync 0.4.5 runs `cp <files> /` here; we refuse.
                return Err(inval(
                    "mode direct with its default arguments copies to %destination-dir%/: give --destination-dir (-D)",
                ));
            }
            crate::warning!(
                "mode direct without --destination-dir: the handler's last argument is \"/\""
            );
        }

        let rules_options = ParseOptions {
            auto_add_rules_w: cli.auto_add_rules_w,
        };
        let rules = match &cli.rules_file {
            None => Rules::default(),
            Some(f) if f.is_empty() => {
                // As clsync: an error line, and no rules.
                crate::error!("--rules-file is empty: running without rules");
                Rules::default()
            }
            Some(f) => {
                let text =
                    std::fs::read(f).map_err(|e| noent(format!("rules file \"{f}\": {e}")))?;
                Rules::parse_with(&text, rules_options)
                    .map_err(|e| inval(format!("rules file \"{f}\": {e}")))?
            }
        };
        if cli.auto_add_rules_w && mode.is_rsync() {
            // As clsync warns.
            crate::warning!(
                "option \"--auto-add-rules-w\" in modes \"rsyncdirect\", \"rsyncshell\" and \"rsyncso\" may cause unexpected problems"
            );
        }

        let (def_uid, def_gid) = identity::default_unprivileged();
        let id =
            |spec: &Option<String>, def: u32, user: bool, opt: &str| -> Result<u32, ConfigError> {
                match spec {
                    // Empty: the default (clsync reads it as 0, root; here never by accident).
                    None => Ok(def),
                    Some(s) if s.is_empty() => Ok(def),
                    Some(s) => if user {
                        identity::resolve_uid(s)
                    } else {
                        identity::resolve_gid(s)
                    }
                    .map_err(|e| inval(format!("--{opt}={s}: {e}"))),
                }
            };
        let worker_uid = id(&cli.uid, def_uid, true, "uid")?;
        if worker_uid == 0 {
            crate::warning!(
                "--uid 0: the worker runs as root (still without capabilities, sandboxed); a separate user is safer"
            );
        }
        let worker_gid = id(&cli.gid, def_gid, false, "gid")?;
        let helper_uid = id(
            &cli.privileged_uid,
            nix::unistd::getuid().as_raw(),
            true,
            "privileged-uid",
        )?;
        let helper_gid = id(
            &cli.privileged_gid,
            nix::unistd::getgid().as_raw(),
            false,
            "privileged-gid",
        )?;
        let handler_uid = id(&cli.sync_handler_uid, helper_uid, true, "sync-handler-uid")?;
        let handler_gid = id(&cli.sync_handler_gid, helper_gid, false, "sync-handler-gid")?;
        let handler_caps = match &cli.sync_handler_capabilities {
            None => scaps::default_handler_caps(),
            Some(s) => scaps::parse_cap_list(s)
                .map_err(|e| inval(format!("--sync-handler-capabilities: {e}")))?,
        };

        let lists_dir = match &cli.lists_dir {
            None => None,
            Some(l) if l.is_empty() => return Err(noent("--lists-dir: empty path")),
            Some(l) => {
                let p = PathBuf::from(l);
                let abs = if p.is_absolute() {
                    p
                } else {
                    watch_dir.join(p)
                };
                let check = std::fs::canonicalize(&abs).unwrap_or_else(|_| abs.clone());
                if check.starts_with(&watch_dir) {
                    return Err(inval(format!(
                        "lists dir \"{}\" is inside the watched tree, which its writers control: choose a directory outside it",
                        check.display()
                    )));
                }
                Some(abs)
            }
        };

        // Files the daemon writes: relative to the watch dir (as clsync resolves them), and never
        // inside the watched tree, which tenants write.
        let own_file = |opt: &str, v: &Option<String>| -> Result<Option<PathBuf>, ConfigError> {
            let Some(v) = v else { return Ok(None) };
            outside_tree(&watch_dir, opt, v).map(Some)
        };
        let pid_file = own_file("pid-file", &cli.pid_file)?;
        let standby_file = cli
            .standby_file
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| watch_dir.join(s));
        if standby_file.is_some() && mode == Mode::Simple {
            return Err(inval("--standby-file cannot be used with mode simple"));
        }
        let socket = own_file("socket", &cli.socket)?;
        if socket.is_none()
            && (cli.socket_own.is_some() || cli.socket_mod.is_some() || cli.socket_auth.is_some())
        {
            return Err(inval(
                "--socket-own, --socket-mod and --socket-auth need --socket",
            ));
        }
        if let Some(a) = cli
            .socket_auth
            .as_deref()
            .filter(|a| !a.is_empty() && *a != "null")
        {
            return Err(inval(format!("--socket-auth={a}: only null is supported; protect the socket with --socket-own and --socket-mod")));
        }
        let socket_mode = cli
            .socket_mod
            .as_deref()
            .map(|m| {
                u32::from_str_radix(m.trim(), 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| inval(format!("--socket-mod={m}: an octal mode")))
            })
            .transpose()?;
        let socket_owner = cli
            .socket_own
            .as_deref()
            .map(|o| -> Result<(Option<u32>, Option<u32>), ConfigError> {
                let (u, g) = o.split_once(':').map_or((o, None), |(u, g)| (u, Some(g)));
                let uid = (!u.is_empty())
                    .then(|| identity::resolve_uid(u))
                    .transpose()
                    .map_err(|e| inval(format!("--socket-own: {e}")))?;
                let gid = g
                    .filter(|g| !g.is_empty())
                    .map(identity::resolve_gid)
                    .transpose()
                    .map_err(|e| inval(format!("--socket-own: {e}")))?;
                Ok((uid, gid))
            })
            .transpose()?;
        let status_file = own_file("status-file", &cli.status_file)?;
        // clsync's default dump dir is in /tmp: when that is inside the watched tree (a daemon
        // watching / or /tmp), dumps are off rather than the start refused, since the
        // administrator did not choose it; an explicit --dump-dir inside the tree is refused.
        let (dump_dir, dump_off) = match &cli.dump_dir {
            // clsync fails only when a dump is asked for; so do dumps here.
            Some(d) if d.is_empty() => (None, Some("--dump-dir is empty".to_string())),
            Some(d) => (Some(outside_tree(&watch_dir, "dump-dir", d)?), None),
            None => {
                let d = format!("{DEFAULT_DUMP_DIR_PREFIX}{}", cli.label);
                match outside_tree(&watch_dir, "dump-dir", &d) {
                    Ok(p) => (Some(p), None),
                    Err(e) => (None, Some(format!("the default {}", e.msg))),
                }
            }
        };
        let hook = |opt: &str, v: &Option<String>| -> Result<Option<PathBuf>, ConfigError> {
            v.as_deref()
                .filter(|h| !h.is_empty())
                .map(|h| {
                    resolve_program(h).map_err(|e| ConfigError {
                        code: e.code,
                        msg: format!("--{opt}: {}", e.msg),
                    })
                })
                .transpose()
        };
        // A chown/chgrp/chmod handler in direct or simple mode is performed natively (see
        // handler::fixer): never following a tenant's symlink, never reading a name as an option.
        let fixer = {
            let name = handler
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if matches!(mode, Mode::Direct | Mode::Simple)
                && crate::handler::fixer::recognised(&name)
            {
                if cli.unsafe_external_handler {
                    crate::warning!(
                        "--unsafe-external-handler: running {} itself; it may follow a tenant's symlink out of the tree",
                        handler.display()
                    );
                    None
                } else {
                    let args: Vec<String> = handler_args
                        .iter()
                        .flatten()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    let ids = crate::handler::fixer::Ids {
                        user: &|n| identity::resolve_uid(n).map_err(|e| e.to_string()),
                        group: &|n| identity::resolve_gid(n).map_err(|e| e.to_string()),
                    };
                    Some(crate::handler::fixer::parse(&name, &args, &ids).map_err(|e| {
                        inval(format!(
                            "{e}. A {name} handler is performed by the built-in fixer, which does not follow symlinks; \
                             to run {name} itself anyway (unsafe on a tree others write), pass --unsafe-external-handler"
                        ))
                    })?)
                }
            } else {
                None
            }
        };
        let modification_signature = crate::handler::signature::parse(&cli.modification_signature)
            .map_err(|e| inval(format!("--modification-signature: {e}")))?;
        let mut cancel_mon_stat = false;
        for w in cli
            .cancel_syscalls
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
        {
            match w {
                "mon_stat" => cancel_mon_stat = true,
                other => {
                    return Err(inval(format!(
                        "--cancel-syscalls: unknown syscall group {other:?} (only mon_stat)"
                    )))
                }
            }
        }
        if cli.check_execvp_arguments && mode == Mode::Direct {
            // As clsync refuses it (its check would reject direct's path arguments).
            return Err(inval(
                "--check-execvp-arguments cannot be used with --mode=direct",
            ));
        }
        if cli.synclist_simplify && (mode.is_rsync() || cli.lists_dir.is_none()) {
            return Err(inval(
                "--synclist-simplify needs a non-rsync mode and --lists-dir (-L)",
            ));
        }
        if cli.have_recursive_sync && mode.is_rsync() {
            return Err(inval(
                "option \"--have-recursive-sync\" with modes \"rsyncdirect\", \"rsyncshell\" and \"rsyncso\" are incompatible",
            ));
        }
        if cli.have_recursive_sync && fixer.is_some() {
            return Err(inval(
                "--have-recursive-sync cannot be combined with the built-in chown/chgrp/chmod fixer, which changes the paths it is given and no deeper",
            ));
        }
        let initial_args: Option<Vec<Vec<u8>>> = cli
            .initialsync_args
            .as_deref()
            .map(crate::confile::split_args)
            .filter(|a| !a.is_empty())
            .map(|a| a.into_iter().map(String::into_bytes).collect());
        if cli.threading != crate::cli::Threading::Off
            && (cli.only_initialsync
                || cli.exit_on_no_events
                || cli.max_iterations > 0
                || cli.pre_exit_hook.is_some())
        {
            return Err(inval(
                "--threading cannot be combined with --only-initialsync, --exit-on-no-events, --max-iterations or --pre-exit-hook",
            ));
        }
        if cancel_mon_stat && modification_signature != 0 {
            return Err(inval("--modification-signature needs the per-event stat that --cancel-syscalls=mon_stat cancels"));
        }
        let pre_exit_hook = hook("pre-exit-hook", &cli.pre_exit_hook)?;
        let exit_hook = hook("exit-hook", &cli.exit_hook)?;
        if cli.skip_initialsync && (cli.exit_on_no_events || cli.only_initialsync) {
            return Err(inval("--skip-initialsync cannot be combined with --exit-on-no-events or --only-initialsync"));
        }
        if cli.rsync_prefer_include && !mode.is_rsync() {
            crate::warning!(
                "--rsync-prefer-include has no effect in mode {}",
                mode.name()
            );
        }
        if cli.only_initialsync && cli.exit_on_no_events {
            return Err(inval(
                "--only-initialsync cannot be combined with --exit-on-no-events",
            ));
        }
        let mut ignore_exitcodes = Vec::new();
        for group in &cli.ignore_exitcode {
            for &c in group {
                if c == 0 {
                    ignore_exitcodes.clear();
                } else {
                    ignore_exitcodes.push(c);
                }
            }
        }
        compat_noops(cli);
        permitted_hook_files(cli)?;
        let root_switch = root_switch(cli)?;
        let cfg = Config {
            watch_dir,
            destination,
            mode,
            handler,
            shared_object,
            handler_args,
            rules,
            rules_file: cli
                .rules_file
                .as_ref()
                .filter(|f| !f.is_empty())
                .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| PathBuf::from(f))),
            rules_options,
            timeout_sync: cli.timeout_sync,
            ignore_failures: cli.ignore_failures,
            prefer_include: cli.rsync_prefer_include,
            inclimit: cli.rsync_inclimit,
            full_initialsync: cli.full_initialsync,
            one_file_system: cli.one_file_system || cli.exclude_mount_points,
            exclude_mount_points: cli.exclude_mount_points,
            background: cli.background,
            pid_file,
            status_file,
            dump_dir,
            dump_off,
            pre_exit_hook,
            exit_hook,
            fixer,
            modification_signature,
            cancel_mon_stat,
            synclist_simplify: cli.synclist_simplify,
            have_recursive_sync: cli.have_recursive_sync,
            initial_args,
            threading: cli.threading,
            socket,
            standby_file,
            socket_owner,
            socket_mode,
            cgroup_name,
            delay_sync: cli.delay_sync,
            delay_collect: cli.delay_collect,
            delay_bigfile: cli.delay_collect_bigfile,
            threshold_bigfile: cli.threshold_bigfile,
            ignore_exitcodes,
            retries: cli.retries,
            worker_uid,
            worker_gid,
            helper_uid,
            helper_gid,
            handler_uid,
            handler_gid,
            handler_caps,
            lists_dir,
            keep_lists: cli.dont_unlink_lists,
            label: cli.label.clone(),
            exit_on_no_events: cli.exit_on_no_events,
            only_initialsync: cli.only_initialsync,
            skip_initialsync: cli.skip_initialsync,
            max_iterations: cli.max_iterations,
            splitting,
            root_switch,
            detach_network_everywhere,
            block: cli
                .config_block
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            custom_signals: Vec::new(),
            alternates: Vec::new(),
        };
        if cfg.have_recursive_sync && !cfg.mode.is_so() {
            let p = crate::privsep::policy::ExecPolicy::from_config(&cfg);
            if !p.initial_template.lists().is_empty() {
                return Err(inval(
                    "--have-recursive-sync: the arguments of its initialsync calls name a list file (%INCLUDE-LIST-PATH% or %EXCLUDE-LIST-PATH%), which those calls do not have; give clsync's `---` set (-----=ARGS, or the key --- in a config file), e.g. \"initialsync %label% %INCLUDE-LIST%\"",
                ));
            }
        }
        Ok(cfg)
    }

    /// The effective settings, one `key = value` per line (for --check-config), with the
    /// handler's argv as it will be run (list files shown as <include-list>/<exclude-list>).
    pub fn describe(&self) -> String {
        use crate::privsep::policy::ExecPolicy;
        use crate::privsep::protocol::{ListKind, SyncType};
        let p = ExecPolicy::from_config(self);
        let lp = |k: ListKind| match k {
            ListKind::Include => b"<include-list>".to_vec(),
            ListKind::Exclude => b"<exclude-list>".to_vec(),
        };
        let paths: Vec<Vec<u8>> = if p.template.takes_paths() {
            vec![b"<paths...>".to_vec()]
        } else {
            vec![]
        };
        let ty = if self.mode.is_rsync() {
            SyncType::Rsynclist
        } else {
            SyncType::Synclist
        };
        let argv: Vec<String> = match self.mode {
            Mode::So => vec![format!(
                "{}: clsyncapi_sync(n, events)",
                self.handler.display()
            )],
            Mode::RsyncSo => vec![format!(
                "{}: clsyncapi_rsync(<include-list>, {})",
                self.handler.display(),
                if self.prefer_include {
                    "NULL"
                } else {
                    "<exclude-list>"
                }
            )],
            _ => std::iter::once(self.handler.display().to_string())
                .chain(
                    p.template
                        .render(&lp, ty, None, &paths)
                        .iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned()),
                )
                .collect(),
        };
        let mut out = String::new();
        let mut kv = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
        kv("mode", self.mode.name().to_string());
        kv("watch-dir", self.watch_dir.display().to_string());
        kv(
            "destination-dir",
            self.destination.clone().unwrap_or_default(),
        );
        kv("sync-handler", self.handler.display().to_string());
        kv("handler-argv", argv.join(" "));
        if self.have_recursive_sync {
            let init = if self.mode == Mode::So {
                format!(
                    "{}: clsyncapi_sync(1, <absolute dir, recursive>)",
                    self.handler.display()
                )
            } else {
                let dir = if p.initial_template.takes_paths() {
                    vec![b"<absolute dir>".to_vec()]
                } else {
                    vec![]
                };
                std::iter::once(self.handler.display().to_string())
                    .chain(
                        p.initial_template
                            .render(&lp, SyncType::Initialsync, None, &dir)
                            .iter()
                            .map(|a| String::from_utf8_lossy(a).into_owned()),
                    )
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            kv("initialsync-argv", init);
        }
        kv(
            "rules",
            format!(
                "{} rules{}{}",
                self.rules.len(),
                if self.rules_options.auto_add_rules_w {
                    format!(" ({} added by --auto-add-rules-w)", self.rules.auto_added())
                } else {
                    String::new()
                },
                self.rules_file
                    .as_ref()
                    .map(|f| format!(" from {}", f.display()))
                    .unwrap_or_default()
            ),
        );
        kv("delay-sync", self.delay_sync.to_string());
        kv("delay-collect", self.delay_collect.to_string());
        kv("delay-collect-bigfile", self.delay_bigfile.to_string());
        kv("threshold-bigfile", self.threshold_bigfile.to_string());
        kv("timeout-sync", self.timeout_sync.to_string());
        kv("retries", self.retries.to_string());
        kv(
            "ignore-exitcode",
            self.ignore_exitcodes
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        kv(
            "uid/gid (worker)",
            format!("{}:{}", self.worker_uid, self.worker_gid),
        );
        kv(
            "privileged-uid/gid",
            format!("{}:{}", self.helper_uid, self.helper_gid),
        );
        kv(
            "sync-handler-uid/gid",
            format!("{}:{}", self.handler_uid, self.handler_gid),
        );
        kv(
            "sync-handler-capabilities",
            self.handler_caps
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        kv("label", self.label.clone());
        kv(
            "splitting",
            match self.splitting {
                Splitting::Process => "process".to_string(),
                Splitting::Thread => {
                    "process (--splitting=thread runs as process: a sandboxed worker and a privileged helper)".to_string()
                }
                Splitting::Off => {
                    "off (the worker is not confined: no seccomp, landlock, namespaces, cgroup limits or no_new_privs)".to_string()
                }
            },
        );
        kv(
            "detach-network",
            if self.detach_network_everywhere {
                "everywhere (helper and handlers in the daemon's own network namespace: loopback only, down)".to_string()
            } else {
                "non-privileged (the worker's own network namespace)".to_string()
            },
        );
        let rs = &self.root_switch;
        kv(
            "chroot",
            match &rs.chroot {
                Some(d) => format!(
                    "{} (pivot-root {}; own mount namespace)",
                    d.display(),
                    rs.pivot.name()
                ),
                None => "off".to_string(),
            },
        );
        kv(
            "mountpoints",
            match &rs.mountpoints {
                Some(m) => format!(
                    "{} kept (/ and /proc always), every other mount detached in the daemon's mount namespace",
                    m.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => "off".to_string(),
            },
        );
        kv(
            "dump-dir",
            match (&self.dump_dir, &self.dump_off) {
                (Some(d), _) => d.display().to_string(),
                (None, why) => format!("off ({})", why.as_deref().unwrap_or_default()),
            },
        );
        kv("config-block", self.block.clone());
        kv(
            "custom-signals",
            self.custom_signals
                .iter()
                .filter_map(|(sig, i)| self.block_config(*i).map(|c| format!("{sig}:{}", c.block)))
                .collect::<Vec<_>>()
                .join(","),
        );
        // Each block's effective settings, as a switch to it would use them.
        for alt in &self.alternates {
            for line in alt.describe().lines() {
                if !line.starts_with("config-block =") && !line.starts_with("custom-signals =") {
                    out.push_str(&format!("[{}] {line}\n", alt.block));
                }
            }
        }
        out
    }

    /// Whether an exit status of the sync handler counts as success.
    pub fn exit_ok(&self, code: i32) -> bool {
        code == 0
            || (self.mode == Mode::RsyncDirect && code == 24)
            || self.ignore_exitcodes.contains(&code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("clsync").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn pivot_root_words_as_clsync_and_empty_is_off() {
        for (v, want) in [
            ("", PivotRoot::Off),
            ("off", PivotRoot::Off),
            ("direct", PivotRoot::Direct),
            ("auto", PivotRoot::Auto),
            ("auto-ro", PivotRoot::AutoRo),
        ] {
            assert_eq!(PivotRoot::parse(v), Some(want), "{v}");
        }
        for v in ["1", "ro", "Auto", "auto_ro", "on"] {
            assert_eq!(PivotRoot::parse(v), None, "{v:?}");
        }
        let e = root_switch(&cli(&["--pivot-root", "sideways"])).unwrap_err();
        assert_eq!(e.code, 22);
        assert!(e.msg.contains("off, direct, auto, auto-ro"), "{}", e.msg);
    }

    #[test]
    fn pivot_root_without_chroot_is_einval_and_off_or_empty_chroot_is_fine() {
        let e = root_switch(&cli(&["--pivot-root", "auto"])).unwrap_err();
        assert_eq!(e.code, 22);
        assert!(e.msg.contains("--pivot-root=auto") && e.msg.contains("--chroot"));
        let e = root_switch(&cli(&["--chroot", "", "--pivot-root", "direct"])).unwrap_err();
        assert_eq!(e.code, 22, "an empty --chroot unsets it");
        let rs = root_switch(&cli(&["--pivot-root", "off"])).unwrap();
        assert!(!rs.active());
        let rs = root_switch(&cli(&["--chroot", "/", "--pivot-root", ""])).unwrap();
        assert_eq!(rs.chroot.as_deref(), Some(Path::new("/")));
        assert_eq!(rs.pivot, PivotRoot::Off);
        let e = root_switch(&cli(&["--chroot", "/nonexistent-clsync-chroot"])).unwrap_err();
        assert_eq!(e.code, 2);
    }

    #[test]
    fn mountpoints_list_resets_on_empty_element_and_empty_is_unset() {
        let m = |v: &str| {
            root_switch(&cli(&["--mountpoints", v]))
                .unwrap()
                .mountpoints
        };
        assert_eq!(
            m("/a,/b"),
            Some(vec![PathBuf::from("/a"), PathBuf::from("/b")])
        );
        assert_eq!(m("/a,,/b"), Some(vec![PathBuf::from("/b")]));
        assert_eq!(m(""), None);
        assert_eq!(
            m("/a,"),
            None,
            "a list that ends empty is unset (as clsync)"
        );
    }

    #[test]
    fn custom_signals_lists_reset_with_zero_and_a_repeated_signal_keeps_its_last_block() {
        let l =
            |v: &[&str]| parse_custom_signals(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            l(&["40:a,41:b", "40:c"]).unwrap(),
            vec![(41, "b".to_string()), (40, "c".to_string())]
        );
        assert_eq!(l(&["40:a,0,0x2a:z"]).unwrap(), vec![(42, "z".to_string())]);
        assert_eq!(l(&["40:a", "0"]).unwrap(), vec![]);
        for bad in ["40", "40:", "x:b", "-1:b", "513:b", "9:b", "33:b"] {
            assert!(l(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn splitting_in_words_and_numbers() {
        for (v, want) in [
            ("off", Splitting::Off),
            ("0", Splitting::Off),
            ("thread", Splitting::Thread),
            ("1", Splitting::Thread),
            ("process", Splitting::Process),
            ("2", Splitting::Process),
            // Empty is the default, never off.
            ("", Splitting::Process),
        ] {
            assert_eq!(Splitting::parse(v), Some(want), "{v}");
        }
        for v in ["3", "-1", "Process", "OFF", "02", "threads", "none"] {
            assert_eq!(Splitting::parse(v), None, "{v:?}");
        }
        assert_eq!(Splitting::Thread.effective(), Splitting::Process);
        assert_eq!(Splitting::Off.effective(), Splitting::Off);
        assert_eq!(Splitting::default(), Splitting::Process);
    }

    #[test]
    fn dump_dirs_are_taken_from_the_watch_dir_and_normalised_without_the_file_system() {
        let w = Path::new("/srv/www");
        assert_eq!(dump_dir_path(w, "/tmp/d"), Path::new("/tmp/d"));
        assert_eq!(dump_dir_path(w, "/tmp//d/./"), Path::new("/tmp/d"));
        assert_eq!(dump_dir_path(w, "../dumps"), Path::new("/srv/www/../dumps"));
        assert_eq!(dump_dir_path(w, "d"), Path::new("/srv/www/d"));
        assert!(outside_tree(w, "dump-dir", "d").is_err());
        assert_eq!(outside_tree(w, "dump-dir", "").unwrap_err().code, 2);
    }

    #[test]
    fn remote_destinations_are_kept_verbatim() {
        assert!(is_remote("user@host:/x"));
        assert!(is_remote("host:x"));
        assert!(is_remote("rsync://host/mod"));
        assert!(!is_remote("/srv/dst"));
        assert!(!is_remote("./a:b"));
        assert!(!is_remote("RSYNC://x"));
    }
}
