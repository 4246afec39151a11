//! clsync's command line (the options this build implements so far), clap-defined.
//! Names, short letters and defaults follow clsync 0.4.5; see man/clsync.1.
#![forbid(unsafe_code)]

use clap::{ArgAction, Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Threading {
    // `--threading=` is off, as in clsync (an empty word is its value 0).
    #[default]
    #[value(alias = "")]
    Off,
    Safe,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    // `--output=` is stderr, as in clsync (an empty word is its value 0).
    #[value(alias = "")]
    Stderr,
    Stdout,
    Syslog,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Rsyncdirect,
    Rsyncshell,
    Direct,
    Shell,
    Simple,
    So,
    Rsyncso,
}

/// clsync's numbers are strtol(…, 0): decimal, 0x hex, leading-0 octal, surrounding blanks, an
/// optional `+` before the number (and its base prefix); nothing after the prefix but digits.
/// An empty (or blank) value is 0, as strtol reads it (`--retries=`, `--background=`).
pub fn parse_num(s: &str) -> Result<u64, String> {
    let t = s.trim_matches(|c| c == ' ' || c == '\t' || c == '\r' || c == '\n');
    if t.is_empty() {
        return Ok(0);
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        (&t[1..], 8)
    } else {
        (t, 10)
    };
    // `from_str_radix` takes a sign of its own, which strtol does not after a prefix or a sign.
    let r = if digits.starts_with(['+', '-']) {
        None
    } else {
        u64::from_str_radix(digits, radix).ok()
    };
    r.ok_or_else(|| format!("argument \"{s}\" can't be parsed as a number"))
}

/// `-x`'s comma list as clsync reads it: decimal digits only (no blanks, signs or base
/// prefixes), each element taken modulo 256 like the exit status it is compared with, and an
/// empty element is 0, which clears the codes before it.
fn parse_codes(s: &str) -> Result<Vec<i32>, String> {
    s.split(',')
        .map(|p| {
            if !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "--ignore-exitcode: {p:?} is not a decimal exit code (in {s:?})"
                ));
            }
            Ok(p.bytes()
                .fold(0i32, |n, b| (n * 10 + i32::from(b - b'0')) % 256))
        })
        .collect()
}

#[derive(Parser, Debug)]
#[command(
    name = "clsync",
    version,
    about = "Live file-sync daemon: inotify + aggregation + rsync, privilege-separated and sandboxed",
    disable_help_subcommand = true,
    args_override_self = true
)]
pub struct Cli {
    /// Directory to watch (required)
    #[arg(short = 'W', long = "watch-dir", value_name = "DIR")]
    pub watch_dir: Option<String>,

    /// Destination: a local directory, user@host:path, or scheme://… (required by rsyncdirect)
    #[arg(short = 'D', long = "destination-dir", value_name = "DIR")]
    pub destination_dir: Option<String>,

    /// Sync-handler mode
    #[arg(short = 'M', long = "mode", value_enum)]
    pub mode: Option<ModeArg>,

    /// Sync handler program (default: rsync for rsyncdirect)
    #[arg(short = 'S', long = "sync-handler", value_name = "PROGRAM")]
    pub sync_handler: Option<String>,

    /// Rules file ([+-][*fdwms]regexp per line)
    #[arg(short = 'R', long = "rules-file", value_name = "FILE")]
    pub rules_file: Option<String>,

    /// After each + rule (not w), add +w rules for the directories above it, so walks reach it
    #[arg(long = "auto-add-rules-w")]
    pub auto_add_rules_w: bool,

    /// Minimal seconds between two sync passes
    #[arg(short = 'w', long = "delay-sync", value_parser = parse_num, default_value = "30")]
    pub delay_sync: u64,

    /// Seconds to collect events for ordinary files
    #[arg(short = 't', long = "delay-collect", value_parser = parse_num, default_value = "30")]
    pub delay_collect: u64,

    /// Seconds to collect events for big files
    #[arg(short = 'T', long = "delay-collect-bigfile", value_parser = parse_num, default_value = "1800")]
    pub delay_collect_bigfile: u64,

    /// Files larger than this many bytes go to the big-file queue
    #[arg(short = 'B', long = "threshold-bigfile", value_parser = parse_num, default_value = "134217728")]
    pub threshold_bigfile: u64,

    /// Handler exit codes that count as success (comma list, repeatable; 0 clears)
    #[arg(short = 'x', long = "ignore-exitcode", value_parser = parse_codes, action = ArgAction::Append)]
    pub ignore_exitcode: Vec<Vec<i32>>,

    /// rsync modes: list every path to sync instead of excluding what the rules refuse
    #[arg(long = "rsync-prefer-include")]
    pub rsync_prefer_include: bool,

    /// rsync modes: most include lines per call; longer lists are split (0 = no limit)
    #[arg(long = "rsync-inclimit", value_parser = parse_num, default_value = "20000")]
    pub rsync_inclimit: u64,

    /// The initial sync takes everything, ignoring the rules
    #[arg(short = 'F', long = "full-initialsync")]
    pub full_initialsync: bool,

    /// Do not cross mount points while walking
    #[arg(long = "one-file-system")]
    pub one_file_system: bool,

    /// Like --one-file-system, and the content of mount points is excluded from rsync
    #[arg(short = 'X', long = "exclude-mount-points")]
    pub exclude_mount_points: bool,

    /// Seconds a handler may run; then its process group is killed and the sync counts as failed
    /// (0 = no limit)
    #[arg(short = 'k', long = "timeout-sync", value_parser = parse_num, default_value = "86400")]
    pub timeout_sync: u64,

    /// After the last try of a failed sync, go on as if it succeeded
    #[arg(long = "ignore-failures")]
    pub ignore_failures: bool,

    /// Accepted, changes nothing here: clsync 0.4.5 reads it only in its BSM monitor (FreeBSD
    /// audit queue full: exit instead of a warning); a sync skipped by --modification-signature
    /// never ends the daemon, as in clsync
    #[arg(long = "exit-on-sync-skipping")]
    pub exit_on_sync_skipping: bool,

    /// Total tries of a failing sync (0 = forever)
    #[arg(short = 'r', long = "retries", value_parser = parse_num, default_value = "1")]
    pub retries: u64,

    /// User the worker runs as (default nobody)
    #[arg(short = 'u', long = "uid", value_name = "USER")]
    pub uid: Option<String>,

    /// Group the worker runs as (default nogroup)
    #[arg(short = 'g', long = "gid", value_name = "GROUP")]
    pub gid: Option<String>,

    /// User of the privileged helper (default: the starting user)
    #[arg(long = "privileged-uid", value_name = "USER")]
    pub privileged_uid: Option<String>,

    /// Group of the privileged helper (default: the starting group)
    #[arg(long = "privileged-gid", value_name = "GROUP")]
    pub privileged_gid: Option<String>,

    /// User the sync handler runs as (default: --privileged-uid)
    #[arg(long = "sync-handler-uid", value_name = "USER")]
    pub sync_handler_uid: Option<String>,

    /// Group the sync handler runs as (default: --privileged-gid)
    #[arg(long = "sync-handler-gid", value_name = "GROUP")]
    pub sync_handler_gid: Option<String>,

    /// Capabilities the sync handler gets (ambient), comma list
    /// [default: CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_DAC_READ_SEARCH,CAP_FOWNER,CAP_FSETID,CAP_MKNOD]
    #[arg(long = "sync-handler-capabilities", value_name = "CAPS")]
    pub sync_handler_capabilities: Option<String>,

    /// Directory for the list files (created 0700 if missing)
    #[arg(short = 'L', long = "lists-dir", value_name = "DIR")]
    pub lists_dir: Option<String>,

    /// Keep list files after the handler ran
    #[arg(short = 'U', long = "dont-unlink-lists")]
    pub dont_unlink_lists: bool,

    /// Label of this instance (handler argument %label%)
    #[arg(short = 'l', long = "label", default_value = "nolabel")]
    pub label: String,

    /// More output (repeatable)
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,

    /// Debug output (repeatable)
    #[arg(short = 'd', long = "debug", action = ArgAction::Count)]
    pub debug: u8,

    /// No output at all
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,

    /// `-vN` / `--verbose=N`: set the verbosity (clsync's attached optional argument)
    #[arg(long = "verbose-level", hide = true)]
    pub verbose_level: Option<u8>,

    /// `-dN` / `--debug=N`: set the debug level
    #[arg(long = "debug-level", hide = true)]
    pub debug_level: Option<u8>,

    /// Where log and audit lines go
    #[arg(short = 'Y', long = "output", value_enum, default_value = "stderr")]
    pub output: OutputArg,

    /// The syslog socket for -Y syslog (machines or containers without /dev/log)
    #[arg(
        long = "syslog-socket",
        value_name = "PATH",
        default_value = "/dev/log"
    )]
    pub syslog_socket: String,

    /// syslog facility for -Y syslog (daemon, local0 … local7, auth, …)
    #[arg(
        long = "syslog-facility",
        value_name = "NAME",
        default_value = "daemon"
    )]
    pub syslog_facility: String,

    /// syslog ident (tag) for -Y syslog
    #[arg(long = "syslog-ident", value_name = "NAME", default_value = "clsync")]
    pub syslog_ident: String,

    /// Configuration file (clsync's keyfile format, or TOML for *.toml); /NULL/ reads none
    /// [default: the first of ~/.clsync.conf, /etc/clsync/clsync.conf, /etc/clsync.conf,
    /// /usr/local/etc/clsync/clsync.conf, /usr/local/etc/clsync.conf]
    #[arg(short = 'H', long = "config-file", value_name = "FILE")]
    pub config_file: Option<String>,

    /// Block of the configuration file to use [default: default]
    #[arg(short = 'K', long = "config-block", value_name = "NAME")]
    pub config_block: Option<String>,

    /// Parent block of the configuration block (overrides its config-block-inherits)
    #[arg(long = "config-block-inherits", value_name = "NAME")]
    pub config_block_inherits: Option<String>,

    /// On signal SIG, switch to configuration block BLOCK (comma list of SIG:BLOCK, repeatable;
    /// `0` clears the list). Every block is read and checked at start
    #[arg(long = "custom-signals", value_name = "SIG:BLOCK[,...]", action = ArgAction::Append)]
    pub custom_signals: Vec<String>,

    /// Parallel syncs: off, safe (never two syncs of one path at once), full
    #[arg(short = 'p', long = "threading", value_enum, default_value = "off")]
    pub threading: Threading,

    /// Non-rsync modes: list lines hold the path only (needs -L)
    #[arg(long = "synclist-simplify")]
    pub synclist_simplify: bool,

    /// Non-rsync modes: the handler syncs directories recursively: the initial sync and each
    /// new directory are one `initialsync` call with the absolute path
    #[arg(long = "have-recursive-sync")]
    pub have_recursive_sync: bool,

    /// clsync's `---`: the handler arguments of --have-recursive-sync calls, one string split on
    /// blanks (quotes group); `-----=ARGS` on the command line, key `---` in a config file
    #[arg(long = "initialsync-args", value_name = "ARGS", hide = true)]
    pub initialsync_args: Option<String>,

    /// clsync's `--`: handler arguments as one string split on blanks (quotes group), repeatable;
    /// `----=ARGS` on the command line (positional arguments replace them, as in clsync)
    #[arg(long = "handler-args", value_name = "ARGS", hide = true, action = ArgAction::Append)]
    pub handler_args_line: Vec<String>,

    /// Skip an event when none of these lstat fields changed since the path's last sync
    /// (dev,ino,mode,nlink,uid,gid,rdev,size,blksize,blocks,atime,mtime,ctime or *)
    #[arg(
        long = "modification-signature",
        value_name = "FIELDS",
        default_value = ""
    )]
    pub modification_signature: String,

    /// Syscalls to avoid: mon_stat (no lstat per event: no big-file queue, every object a file
    /// for the rules)
    #[arg(long = "cancel-syscalls", value_name = "LIST", default_value = "")]
    pub cancel_syscalls: String,

    /// Run a chown/chgrp/chmod handler itself instead of the built-in fixer, which never follows
    /// symlinks (UNSAFE when others write the tree)
    #[arg(long = "unsafe-external-handler")]
    pub unsafe_external_handler: bool,

    /// Control socket (clsync's line protocol, plus `status` as JSON)
    #[arg(short = 's', long = "socket", value_name = "PATH")]
    pub socket: Option<String>,

    /// Owner of the control socket (USER[:GROUP])
    #[arg(long = "socket-own", value_name = "USER[:GROUP]")]
    pub socket_own: Option<String>,

    /// Mode of the control socket (octal)
    #[arg(long = "socket-mod", value_name = "MODE")]
    pub socket_mod: Option<String>,

    /// Authentication on the control socket: null (none; rely on --socket-own/--socket-mod)
    #[arg(long = "socket-auth", value_name = "WORD")]
    pub socket_auth: Option<String>,

    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit
    #[arg(long = "completions", value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,

    /// Client: send COMMAND (status, version, info, quit, die, dump) to a daemon's control
    /// socket and print the answer
    #[arg(long = "ctl", value_name = "SOCKET")]
    pub ctl: Option<String>,

    /// Run the daemon (helper, worker, handlers) with DIR as its root, in its own mount
    /// namespace; the watch dir, handler and /tmp must exist at the same paths inside DIR
    #[arg(long = "chroot", value_name = "DIR")]
    pub chroot: Option<String>,

    /// How --chroot changes the root: off (chroot only), direct (pivot_root; DIR must be a
    /// mount point), auto (bind DIR first), auto-ro (as auto, read-only)
    #[arg(long = "pivot-root", value_name = "WAY")]
    pub pivot_root: Option<String>,

    /// Detach every mount not in this comma list, in the daemon's own mount namespace (an
    /// empty element clears the list; / and /proc are always kept)
    #[arg(long = "mountpoints", value_name = "DIRS")]
    pub mountpoints: Option<String>,

    /// While this file exists, syncs wait (events are still collected)
    #[arg(long = "standby-file", value_name = "FILE")]
    pub standby_file: Option<String>,

    /// Accepted for compatibility: the daemon always reads what the kernel still holds before it
    /// exits, and syncs it
    #[arg(long = "sync-on-quit")]
    pub sync_on_quit: bool,

    /// Run in the background (fork, new session; standard fds are kept, as clsync does)
    #[arg(short = 'b', long = "background")]
    pub background: bool,

    /// Write the daemon's pid to this file (removed at exit)
    #[arg(short = 'z', long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<String>,

    /// Keep the daemon's state word in this file (removed at exit)
    #[arg(long = "status-file", value_name = "FILE")]
    pub status_file: Option<String>,

    /// Where signal 29 and the control socket's `dump` write a dump of the queues (must not
    /// exist; created with mode 0750) [default: /tmp/clsync-dump-%label%]
    #[arg(long = "dump-dir", value_name = "DIR")]
    pub dump_dir: Option<String>,

    /// Run `HOOK label` before the final sync when leaving on SIGQUIT/SIGALRM or
    /// --exit-on-no-events
    #[arg(long = "pre-exit-hook", value_name = "HOOK")]
    pub pre_exit_hook: Option<String>,

    /// Accepted, changes nothing here: clsync's execvp check also lets these files run as
    /// `FILE label` hooks; here only --exit-hook/--pre-exit-hook run, fixed at start (comma list,
    /// an empty element clears it)
    #[arg(long = "add-permitted-hook-files", value_name = "FILES")]
    pub add_permitted_hook_files: Option<String>,

    /// Run `HOOK label` when the daemon exits normally
    #[arg(long = "exit-hook", value_name = "HOOK")]
    pub exit_hook: Option<String>,

    /// Validate the command line and configuration, print the effective settings and exit
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Exit once there are no events left after the initial sync
    #[arg(long = "exit-on-no-events")]
    pub exit_on_no_events: bool,

    /// Run the initial sync and exit, without watching
    #[arg(long = "only-initialsync")]
    pub only_initialsync: bool,

    /// Do not run the initial sync
    #[arg(long = "skip-initialsync")]
    pub skip_initialsync: bool,

    /// Exit after this many sync passes (0 = never)
    #[arg(long = "max-iterations", value_parser = parse_num, default_value = "0")]
    pub max_iterations: u64,

    /// Privilege separation: process or 2 (the default), thread or 1 (runs as process), off or 0
    /// (debugging only: the worker is not sandboxed)
    #[arg(long = "splitting", default_value = "process")]
    pub splitting: String,

    /// Accepted for compatibility: privilege separation and the sandbox are on unless
    /// --splitting=off
    #[arg(long = "secure-splitting")]
    pub secure_splitting: bool,

    /// The event source: inotify (the only one on Linux)
    #[arg(long = "monitor", value_name = "NAME", default_value = "inotify")]
    pub monitor: String,

    /// Accepted for compatibility: the helper always checks every exec against the configuration
    #[arg(long = "check-execvp-arguments")]
    pub check_execvp_arguments: bool,

    /// Accepted for compatibility: the worker runs under a seccomp allowlist unless --splitting=off
    #[arg(long = "seccomp-filter")]
    pub seccomp_filter: bool,

    /// Accepted for compatibility: the worker can open no file at all (landlock)
    #[arg(long = "forbid-devices")]
    pub forbid_devices: bool,

    /// off | non-privileged (the worker always has its own network namespace) | everywhere
    #[arg(
        long = "detach-network",
        value_name = "WHERE",
        default_value = "non-privileged"
    )]
    pub detach_network: String,

    /// Accepted for compatibility: the worker always has its own IPC and UTS namespaces
    #[arg(long = "detach-ipc", value_name = "N", default_value = "1")]
    pub detach_ipc: String,

    /// Accepted for compatibility: the worker always has its own IPC and UTS namespaces
    #[arg(long = "detach-miscellanea")]
    pub detach_miscellanea: bool,

    /// Accepted, changes nothing here: it tunes clsync's fts walk, which this build does not use
    #[arg(long = "fts-experimental-optimization")]
    pub fts_experimental_optimization: bool,

    /// Accepted, changes nothing here: clsync's privileged thread (--splitting=thread) does not
    /// exist; the helper is a process
    #[arg(long = "forget-privthread-info")]
    pub forget_privthread_info: bool,

    /// Accepted, changes nothing here: it permits mprotect in clsync's own seccomp filter; the
    /// worker's allowlist here is fixed and never permits executable memory
    #[arg(long = "permit-mprotect")]
    pub permit_mprotect: bool,

    /// Accepted, changes nothing here: clsync's SysV shared memory does not exist; helper and
    /// worker talk over a socket
    #[arg(long = "shm-mprotect")]
    pub shm_mprotect: bool,

    /// Name of the daemon's cgroup (under the cgroup it starts in) [default: clsync-%PID%]
    #[arg(long = "cgroup-group-name", value_name = "NAME")]
    pub cgroup_group_name: Option<String>,

    /// The helper's capabilities: a subset of CAP_DAC_READ_SEARCH,CAP_SETUID,CAP_SETGID,CAP_KILL
    /// (it always keeps exactly these four; giving fewer is refused)
    #[arg(short = 'C', long = "preserve-capabilities", value_name = "CAPS")]
    pub preserve_capabilities: Option<String>,

    /// clsync's inheritable-set policy; here the handler's capabilities are set with
    /// --sync-handler-capabilities
    #[arg(long = "inherit-capabilities", value_name = "WORD")]
    pub inherit_capabilities: Option<String>,

    /// Arguments for the sync handler (replace the mode's default arguments)
    #[arg(value_name = "HANDLER-ARGS")]
    pub handler_args: Vec<String>,
}

/// Every long option of clsync 0.4.5 (with the security group of its full build): a config key
/// naming one that this build lacks is an error, not an ignored key.
pub const CLSYNC_OPTIONS: &[&str] = &[
    "watch-dir",
    "sync-handler",
    "rules-file",
    "destination-dir",
    "mode",
    "socket",
    "socket-mod",
    "socket-own",
    "socket-auth",
    "status-file",
    "pid-file",
    "dump-dir",
    "standby-file",
    "lists-dir",
    "chroot",
    "exit-hook",
    "pre-exit-hook",
    "background",
    "config-file",
    "config-block",
    "config-block-inherits",
    "custom-signals",
    "uid",
    "gid",
    "privileged-uid",
    "privileged-gid",
    "sync-handler-uid",
    "sync-handler-gid",
    "pivot-root",
    "detach-network",
    "detach-ipc",
    "detach-miscellanea",
    "check-execvp-arguments",
    "forget-privthread-info",
    "permit-mprotect",
    "shm-mprotect",
    "splitting",
    "add-permitted-hook-files",
    "mountpoints",
    "preserve-capabilities",
    "inherit-capabilities",
    "threading",
    "retries",
    "ignore-failures",
    "exit-on-sync-skipping",
    "output",
    "one-file-system",
    "exclude-mount-points",
    "max-iterations",
    "modification-signature",
    "timeout-sync",
    "delay-sync",
    "delay-collect",
    "delay-collect-bigfile",
    "threshold-bigfile",
    "cancel-syscalls",
    "have-recursive-sync",
    "synclist-simplify",
    "rsync-prefer-include",
    "fts-experimental-optimization",
    "rsync-inclimit",
    "ignore-exitcode",
    "dont-unlink-lists",
    "full-initialsync",
    "only-initialsync",
    "skip-initialsync",
    "exit-on-no-events",
    "sync-on-quit",
    "verbose",
    "debug",
    "quiet",
    "monitor",
    "label",
    "help",
    "version",
    "secure-splitting",
    "seccomp-filter",
    "forbid-devices",
    "cgroup-group-name",
    "auto-add-rules-w",
];

/// The options of [`CLSYNC_OPTIONS`] that Debian's clsync 0.4.5 is built without (they do not take
/// part in its prefix matching).
const NOT_IN_DEBIAN_BUILD: &[&str] = &[
    "secure-splitting",
    "seccomp-filter",
    "forbid-devices",
    "cgroup-group-name",
    "auto-add-rules-w",
];

/// A configuration-file problem that stops the start (clsync exits 255 for `-H` failures).
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub msg: String,
}

/// Parses `argv` and merges the configuration file into it, clsync-style: the file is `-H` (or
/// the first of [`crate::confile::search_list`] that exists; `-H /NULL/` reads none), the block
/// `-K` (default `default`) with its `config-block-inherits` chain; a key is used only when the
/// command line did not set that option, and the file's `--` arguments follow the command
/// line's. Returns clap's own error for a bad command line.
pub fn parse_with_config(
    argv: Vec<std::ffi::OsString>,
) -> Result<Result<Cli, CliError>, clap::Error> {
    parse_merged(argv, None)
}

/// Options a --custom-signals block cannot change at run time and that the validated
/// configuration does not hold (so [`crate::config::Config`] cannot compare them): a block that
/// gives one a value other than the start block's gets a warning and the start value stays.
/// The block-selecting keys themselves (config-file, config-block, config-block-inherits) are
/// skipped silently.
pub const FIXED_AT_RUN_TIME: &[&str] = &[
    "custom-signals",
    "add-permitted-hook-files",
    "monitor",
    "output",
    "syslog-socket",
    "syslog-facility",
    "syslog-ident",
    "verbose",
    "debug",
    "quiet",
    "chroot",
    "pivot-root",
    "mountpoints",
    "preserve-capabilities",
    "inherit-capabilities",
    "detach-network",
    "detach-ipc",
    "detach-miscellanea",
    "secure-splitting",
    "seccomp-filter",
    "forbid-devices",
    "check-execvp-arguments",
    "forget-privthread-info",
    "permit-mprotect",
    "shm-mprotect",
    "fts-experimental-optimization",
    "exit-on-sync-skipping",
    "sync-on-quit",
    "socket-auth",
];

/// The command line as for `--custom-signals SIG:block`: the start configuration (command line
/// and start block, as [`parse_with_config`]) with the keys of `block` (and the blocks it
/// inherits) overriding it, as clsync re-reads a block on its signal. Keys of
/// [`FIXED_AT_RUN_TIME`] are not taken (a warning when they differ from the start block's).
pub fn parse_block(argv: Vec<std::ffi::OsString>, block: &str) -> Result<Cli, CliError> {
    match parse_merged(argv, Some(block)) {
        Ok(r) => r,
        Err(e) => Err(CliError {
            code: 22,
            msg: e.to_string().trim_end().to_string(),
        }),
    }
}

fn parse_merged(
    argv: Vec<std::ffi::OsString>,
    over: Option<&str>,
) -> Result<Result<Cli, CliError>, clap::Error> {
    use crate::confile::{self, Value};
    use clap::parser::ValueSource;
    use clap::{ArgAction, CommandFactory, FromArgMatches};

    let cmd = Cli::command();
    let argv = clsync_argv(&cmd, argv)?;
    let matches = cmd.clone().try_get_matches_from(argv.iter())?;
    let cli = Cli::from_arg_matches(&matches)?;
    let mut expander = Expander::new(&cmd);
    let mut cli_values = expander.command_line(&cmd, &argv);
    // `-H ''` is not given: the search list is read (as clsync).
    let file = match cli.config_file.as_deref().filter(|p| !p.is_empty()) {
        Some("/NULL/") => None,
        Some(p) => match confile::load(std::path::Path::new(p)) {
            Ok(f) => Some(f),
            Err(e) => {
                return Ok(Err(CliError {
                    code: 255,
                    msg: e.to_string(),
                }))
            }
        },
        None => confile::search_list()
            .into_iter()
            .find(|p| p.exists())
            .map(|p| confile::load(&p))
            .transpose()
            .unwrap_or_else(|e| {
                crate::warning!("{e}: ignored");
                None
            }),
    };
    if file.is_none() {
        if let Some(b) = over {
            return Ok(Err(CliError {
                code: 22,
                msg: format!("block [{b}]: no configuration file is read (give one with -H)"),
            }));
        }
    }
    let Some(file) = file else {
        let mut cli = cli;
        handler_args_from_lines(&mut cli);
        apply_expanded(&mut cli, &cli_values);
        return Ok(Ok(cli));
    };
    let block = cli
        .config_block
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let keys = match file.resolve(&block, cli.config_block_inherits.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            return Ok(Err(CliError {
                code: 255,
                msg: e.to_string(),
            }))
        }
    };
    let mut extra: Vec<std::ffi::OsString> =
        vec![argv.first().cloned().unwrap_or_else(|| "clsync".into())];
    let mut positional: Vec<String> = Vec::new();
    let mut initial_args: Option<String> = None;
    // In clsync's option-table order, which is the order their values are expanded in.
    let mut keys = keys;
    keys.sort_by_key(|(k, _)| {
        CLSYNC_OPTIONS
            .iter()
            .position(|o| o == k)
            .unwrap_or(CLSYNC_OPTIONS.len())
    });
    let start_text: Vec<(String, String)> = keys
        .iter()
        .map(|(k, v)| (k.clone(), value_text(v)))
        .collect();
    for (key, value) in keys {
        let text = match &value {
            Value::Text(t) => t.clone(),
            Value::Args(a) => a.join(" "),
        };
        match key.as_str() {
            "--" => {
                positional = match value {
                    Value::Args(a) => a,
                    Value::Text(t) => confile::split_args(&t),
                };
                continue;
            }
            // The --have-recursive-sync argument set; the command line's `-----=` wins.
            "---" => {
                initial_args = Some(match value {
                    Value::Args(a) => a.iter().map(|w| quote_arg(w)).collect::<Vec<_>>().join(" "),
                    Value::Text(t) => t,
                });
                continue;
            }
            "config-file" | "config-block" | "config-block-inherits" => continue,
            // As clsync: a `version` key prints the version and exits, a `help` key the options,
            // whatever the value.
            "version" | "help" => {
                extra.push(format!("--{key}").into());
                continue;
            }
            _ => {}
        }
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
        else {
            match unknown_key(&file, &block, &key) {
                Some(e) => return Ok(Err(e)),
                None => continue,
            }
        };
        if matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        let text = expander.store(&key, &text);
        match arg.get_action() {
            // A flag's or level's value is a number, as clsync reads it (`= 0x0` is off, `= yes`
            // an error).
            ArgAction::SetTrue | ArgAction::Count => {
                let n = match parse_num(&text) {
                    Ok(n) => n,
                    Err(e) => {
                        let msg = format!("{}: block [{block}]: {key}: {e}", file.path.display());
                        return Ok(Err(CliError { code: 22, msg }));
                    }
                };
                if matches!(arg.get_action(), ArgAction::Count) {
                    // -d/-v: the level.
                    extra.push(format!("--{key}-level={}", n.min(u64::from(u8::MAX))).into());
                } else if n != 0 {
                    extra.push(format!("--{key}").into());
                }
            }
            _ => extra.push(format!("--{key}={text}").into()),
        }
    }
    extra.extend(argv.iter().skip(1).cloned());
    let mut block_positional: Option<Vec<String>> = None;
    let mut block_initial: Option<String> = None;
    if let Some(b) = over {
        // A --custom-signals block must exist (a missing -K block configures nothing, as in
        // clsync; a signal that would switch to nothing is a mistake worth stopping the start).
        if !file.blocks.contains_key(b) {
            return Ok(Err(CliError {
                code: 22,
                msg: format!("{}: no block [{b}]", file.path.display()),
            }));
        }
        let keys = match file.resolve(b, None) {
            Ok(k) => k,
            Err(e) => {
                return Ok(Err(CliError {
                    code: 22,
                    msg: e.to_string(),
                }))
            }
        };
        let mut ov: Vec<std::ffi::OsString> = Vec::new();
        for (key, value) in keys {
            let text = value_text(&value);
            match key.as_str() {
                "--" => {
                    block_positional = Some(match value {
                        Value::Args(a) => a,
                        Value::Text(t) => confile::split_args(&t),
                    });
                    continue;
                }
                "---" => {
                    block_initial = Some(match value {
                        Value::Args(a) => {
                            a.iter().map(|w| quote_arg(w)).collect::<Vec<_>>().join(" ")
                        }
                        Value::Text(t) => t,
                    });
                    continue;
                }
                "config-file" | "config-block" | "config-block-inherits" => continue,
                k if FIXED_AT_RUN_TIME.contains(&k) => {
                    if !start_text.iter().any(|(sk, st)| *sk == key && *st == text) {
                        crate::warning!(
                            "{}: block [{b}]: {key:?} cannot change at run time: the start value is kept",
                            file.path.display()
                        );
                    }
                    continue;
                }
                _ => {}
            }
            let Some(arg) = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
            else {
                match unknown_key(&file, b, &key) {
                    Some(e) => return Ok(Err(e)),
                    None => continue,
                }
            };
            // The block's value wins over the command line's, expanded as it is read.
            cli_values.remove(&key);
            let text = if arg.get_action().takes_values() {
                expander.store(&key, &text)
            } else {
                text
            };
            match arg.get_action() {
                ArgAction::SetTrue => {
                    if matches!(text.trim(), "" | "0" | "false") {
                        // Off, whatever the command line or the start block said.
                        let short = arg.get_short().map(|c| format!("-{c}"));
                        let long = format!("--{key}");
                        extra.retain(|o| {
                            let o = o.to_string_lossy();
                            o != long && short.as_deref() != Some(&*o)
                        });
                    } else {
                        ov.push(format!("--{key}").into());
                    }
                }
                ArgAction::Count => {
                    let n: usize = text.trim().parse().unwrap_or(1);
                    ov.extend(std::iter::repeat_n(
                        std::ffi::OsString::from(format!("--{key}")),
                        n,
                    ));
                }
                _ => ov.push(format!("--{key}={text}").into()),
            }
        }
        // The block's options go before a `--` of the command line (after it, all is positional).
        let at = extra
            .iter()
            .skip(1)
            .position(|a| a == "--")
            .map_or(extra.len(), |i| i + 1);
        extra.splice(at..at, ov);
    }
    let m = cmd.clone().try_get_matches_from(extra.iter())?;
    let mut merged = Cli::from_arg_matches(&m)?;
    match block_positional {
        // The block's handler arguments replace the command line's and the start block's.
        Some(a) => merged.handler_args = a,
        None => {
            // The file's `--` follows the command line's positional arguments, unless `----=`
            // set them.
            if merged.handler_args_line.is_empty() {
                merged.handler_args.extend(positional);
            }
            handler_args_from_lines(&mut merged);
        }
    }
    if block_initial.is_some() {
        // The block's `---` wins over the command line's, as its other keys do.
        merged.initialsync_args = block_initial;
    } else if merged.initialsync_args.is_none() {
        merged.initialsync_args = initial_args;
    }
    apply_expanded(&mut merged, &cli_values);
    Ok(Ok(merged))
}

/// clsync's `----=ARGS` (see [`Cli::handler_args_line`]): split and appended in order, unless
/// positional arguments were given, which replace them.
fn handler_args_from_lines(cli: &mut Cli) {
    if cli.handler_args.is_empty() {
        for line in &cli.handler_args_line {
            cli.handler_args.extend(crate::confile::split_args(line));
        }
    }
}

/// A key that names no option (every clsync option is one here: see the unit test
/// `every_clsync_option_is_an_option_here`): an error in a TOML file, which is strict; a warning
/// in clsync's keyfile format, where clsync ignores it.
fn unknown_key(file: &crate::confile::ConfFile, block: &str, key: &str) -> Option<CliError> {
    let msg = format!(
        "{}: block [{block}]: unknown key {key:?}",
        file.path.display()
    );
    if file.strict {
        return Some(CliError { code: 22, msg });
    }
    crate::warning!("{msg}: ignored");
    None
}

/// A configuration value as the text of an option's value.
fn value_text(v: &crate::confile::Value) -> String {
    match v {
        crate::confile::Value::Text(t) => t.clone(),
        crate::confile::Value::Args(a) => a.join(" "),
    }
}

/// One argument as a word [`crate::confile::split_args`] gives back unchanged.
fn quote_arg(w: &str) -> String {
    if !w.is_empty() && !w.contains([' ', '\t', '"', '\'', '\\']) {
        return w.to_string();
    }
    let mut q = String::from("\"");
    for c in w.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// clsync's getopt conventions that clap does not have, rewritten into clap's forms before
/// parsing (options only; everything after `--` is left alone):
/// - an unambiguous prefix of a long option names it (`--watch=src`, `--only-init`); an
///   ambiguous one is an error listing the candidates;
/// - an attached number after a flag (clsync's optional-numeric options) sets it: `=0` turns it
///   off, even if given earlier (`-b1`, `--exit-on-no-events=1`, `--sync-on-quit=0`), and a
///   value that is not a number is an error;
/// - `-dN`/`--debug=N` and `-vN`/`--verbose=N` set the level;
/// - `-----=ARGS` is clsync's long option `---` (the --have-recursive-sync argument set).
fn clsync_argv(
    cmd: &clap::Command,
    argv: Vec<std::ffi::OsString>,
) -> Result<Vec<std::ffi::OsString>, clap::Error> {
    use clap::error::ErrorKind;
    let longs: Vec<&str> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .collect();
    let is_flag = |long: &str| {
        cmd.get_arguments().any(|a| {
            a.get_long() == Some(long) && matches!(a.get_action(), clap::ArgAction::SetTrue)
        })
    };
    let short_flag = |c: char| {
        cmd.get_arguments()
            .find(|a| {
                a.get_short() == Some(c) && matches!(a.get_action(), clap::ArgAction::SetTrue)
            })
            .and_then(|a| a.get_long())
    };
    let bad = |msg: String| clap::Error::raw(ErrorKind::InvalidValue, format!("{msg}\n"));
    // `-dN`/`--debug=N`, `-vN`/`--verbose=N`: the level (a number as strtol reads it, so an
    // empty one is 0), as the hidden option that holds it.
    let level_arg = |c: char, given: &str, v: &str| {
        let n = parse_num(v).map_err(|e| bad(format!("{given}: {e}")))?;
        let long = if c == 'd' {
            "debug-level"
        } else {
            "verbose-level"
        };
        Ok::<std::ffi::OsString, clap::Error>(
            format!("--{long}={}", n.min(u64::from(u8::MAX))).into(),
        )
    };
    let mut out: Vec<std::ffi::OsString> = Vec::with_capacity(argv.len());
    // Sets or clears flag `long` (given as `given`) from its attached number.
    let flag_value = |out: &mut Vec<std::ffi::OsString>, long: &str, given: &str, v: &str| {
        let n = parse_num(v).map_err(|e| bad(format!("{given}: {e}")))?;
        let short = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_short());
        if n == 0 {
            // Off, whatever came before (later options override earlier ones).
            out.retain(|o| {
                let o = o.to_string_lossy();
                o != format!("--{long}") && short.is_none_or(|c| o != format!("-{c}"))
            });
        } else {
            out.push(format!("--{long}").into());
        }
        Ok::<(), clap::Error>(())
    };
    let mut iter = argv.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    let takes_value = |a: Option<&clap::Arg>| a.is_some_and(|a| a.get_action().takes_values());
    let mut positional = false;
    // The previous element was an option whose value is the next element, taken verbatim.
    let mut value_next = false;
    for a in iter {
        let s = a.to_string_lossy().into_owned();
        if std::mem::take(&mut value_next) {
            // Joined to its option (always `--long` here), so that clap takes it even when it
            // begins with `-` (getopt does: `--label -x` labels the daemon "-x"). So every
            // option value ends up as `--long=value`, which Expander::command_line reads.
            match out.last_mut() {
                Some(opt) => {
                    opt.push("=");
                    opt.push(&a);
                }
                None => out.push(a),
            }
            continue;
        }
        if positional || s == "--" {
            positional = true;
            out.push(a);
            continue;
        }
        if let Some(v) = s.strip_prefix("-----=") {
            out.push(format!("--initialsync-args={v}").into());
            continue;
        }
        if let Some(v) = s.strip_prefix("----=") {
            out.push(format!("--handler-args={v}").into());
            continue;
        }
        if let Some(body) = s.strip_prefix("--") {
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let long = if longs.contains(&name)
                || cmd.get_arguments().any(|x| x.get_long() == Some(name))
                || name == "help"
                || name == "version"
            {
                name.to_string()
            } else {
                // A prefix names one of clsync's own options (Debian's build, help and version
                // included) when it can; only then the options this build adds, so that none of
                // them makes a prefix clsync accepts ambiguous (--check-, --for).
                let mut hits: Vec<&str> = CLSYNC_OPTIONS
                    .iter()
                    .copied()
                    .filter(|o| !NOT_IN_DEBIAN_BUILD.contains(o) && o.starts_with(name))
                    .collect();
                if hits.is_empty() {
                    hits = longs
                        .iter()
                        .copied()
                        .filter(|l| l.starts_with(name))
                        .collect();
                }
                match hits.as_slice() {
                    [one] => one.to_string(),
                    [] => name.to_string(), // clap reports the unknown option
                    many => {
                        return Err(bad(format!(
                            "option --{name} is ambiguous: {}",
                            many.iter()
                                .map(|l| format!("--{l}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )))
                    }
                }
            };
            match (long.as_str(), value) {
                ("debug", Some(v)) => out.push(level_arg('d', &s, v)?),
                ("verbose", Some(v)) => out.push(level_arg('v', &s, v)?),
                // clsync prints its version for `--version=N` too.
                ("version", Some(_)) => out.push("--version".into()),
                (l, Some(v)) if is_flag(l) => flag_value(&mut out, l, &s, v)?,
                (l, Some(v)) => out.push(format!("--{l}={v}").into()),
                (l, None) => {
                    value_next = takes_value(cmd.get_arguments().find(|x| x.get_long() == Some(l)));
                    out.push(format!("--{l}").into());
                }
            }
            continue;
        }
        // Short options, as getopt reads them: what follows a flag's letter is its number (`-b1`,
        // `-U0`, `-d5`; so `-dd` and `-qd` are errors, as in clsync), and what follows an
        // option's letter is its value, as it is (`-l=x` labels the daemon "=x").
        let mut chars = s.chars();
        if let (Some('-'), Some(c)) = (chars.next(), chars.next()) {
            let rest = chars.as_str();
            let arg = cmd.get_arguments().find(|x| x.get_short() == Some(c));
            if rest.is_empty() {
                value_next = takes_value(arg);
                if let Some(long) = arg.filter(|_| value_next).and_then(|a| a.get_long()) {
                    // The value follows: `-l x` as `--label=x` (joined above).
                    out.push(format!("--{long}").into());
                    continue;
                }
            } else if c == 'd' || c == 'v' {
                out.push(level_arg(c, &s, rest)?);
                continue;
            } else if let Some(long) = short_flag(c) {
                flag_value(&mut out, long, &s, rest)?;
                continue;
            } else if let Some(long) = arg
                .filter(|a| a.get_action().takes_values())
                .and_then(|a| a.get_long())
            {
                use std::os::unix::ffi::OsStrExt;
                let mut o = std::ffi::OsString::from(format!("--{long}="));
                o.push(std::ffi::OsStr::from_bytes(
                    &a.as_bytes()[1 + c.len_utf8()..],
                ));
                out.push(o);
                continue;
            }
        }
        out.push(a);
    }
    Ok(out)
}

/// clsync's `%name%` in option values: the value of the option `name` (a long option name) as
/// stored at that moment, `%PID%` the daemon's pid, `%%` a percent sign; an unknown or unset name
/// expands to nothing and an unterminated `%` ends the value, but a value that expands to nothing
/// at all is kept as written. As in clsync 0.4.5, values are expanded as they are read: the
/// command line's in argv order, then the configuration file's keys in clsync's option-table
/// order ([`CLSYNC_OPTIONS`]), each seeing only what was stored before it (the label is
/// `nolabel` from the start). Handler arguments are not expanded here (see handler::template).
struct Expander {
    /// The values stored so far (expanded), by long option name.
    stored: std::collections::BTreeMap<String, String>,
    /// Long option names this build knows (an unset one is warned about).
    known: Vec<String>,
}

impl Expander {
    fn new(cmd: &clap::Command) -> Expander {
        let known = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .map(str::to_string)
            .collect();
        let mut stored = std::collections::BTreeMap::new();
        stored.insert("label".to_string(), "nolabel".to_string());
        Expander { stored, known }
    }

    /// Expands `v` against the values stored so far and stores the result as `name`'s value.
    fn store(&mut self, name: &str, v: &str) -> String {
        let e = self.expand(v);
        self.stored.insert(name.to_string(), e.clone());
        e
    }

    fn expand(&self, v: &str) -> String {
        if !v.contains('%') {
            return v.to_string();
        }
        let mut out = String::new();
        let mut rest = v;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let Some(j) = after.find('%') else {
                crate::warning!("option value {v:?}: unterminated %: the rest is dropped");
                rest = "";
                break;
            };
            let name = &after[..j];
            if name.is_empty() {
                out.push('%');
            } else if name == "PID" {
                out.push_str(&std::process::id().to_string());
            } else if let Some(val) = self.stored.get(name) {
                out.push_str(val);
            } else if self.known.iter().any(|k| k == name) {
                crate::warning!("variable \"{name}\" is not set");
            }
            rest = &after[j + 1..];
        }
        out.push_str(rest);
        // When nothing at all was emitted (`%unset%`), clsync keeps the value as written.
        if out.is_empty() {
            v.to_string()
        } else {
            out
        }
    }

    /// Stores the command line's option values in argv order (every occurrence, so a later one
    /// sees an earlier one: `-l a -l %label%b` is `ab`); returns each option's last (expanded)
    /// value by long name. `argv` is [`clsync_argv`]'s, where every value is `--long=value`.
    fn command_line(
        &mut self,
        cmd: &clap::Command,
        argv: &[std::ffi::OsString],
    ) -> std::collections::BTreeMap<String, String> {
        let mut last = std::collections::BTreeMap::new();
        for a in argv.iter().skip(1) {
            let a = a.to_string_lossy();
            if a == "--" {
                break;
            }
            let Some((long, v)) = a.strip_prefix("--").and_then(|b| b.split_once('=')) else {
                continue;
            };
            let stored = cmd.get_arguments().any(|x| {
                x.get_long() == Some(long) && !x.is_hide_set() && x.get_action().takes_values()
            });
            if stored {
                let e = self.store(long, v);
                last.insert(long.to_string(), e);
            }
        }
        last
    }
}

/// Puts the expanded command-line values (see [`Expander::command_line`]) into `cli`.
fn apply_expanded(cli: &mut Cli, values: &std::collections::BTreeMap<String, String>) {
    for (name, field) in [
        ("watch-dir", &mut cli.watch_dir),
        ("destination-dir", &mut cli.destination_dir),
        ("sync-handler", &mut cli.sync_handler),
        ("rules-file", &mut cli.rules_file),
        ("lists-dir", &mut cli.lists_dir),
        ("pid-file", &mut cli.pid_file),
        ("status-file", &mut cli.status_file),
        ("dump-dir", &mut cli.dump_dir),
        ("exit-hook", &mut cli.exit_hook),
        ("pre-exit-hook", &mut cli.pre_exit_hook),
        ("cgroup-group-name", &mut cli.cgroup_group_name),
        ("standby-file", &mut cli.standby_file),
        ("chroot", &mut cli.chroot),
        ("pivot-root", &mut cli.pivot_root),
        ("mountpoints", &mut cli.mountpoints),
    ] {
        if let Some(v) = values.get(name) {
            *field = Some(v.clone());
        }
    }
    for (name, field) in [
        ("label", &mut cli.label),
        ("syslog-ident", &mut cli.syslog_ident),
    ] {
        if let Some(v) = values.get(name) {
            v.clone_into(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("clsync").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn every_clsync_option_is_an_option_here() {
        // A config key that names none is only warned about in a keyfile (as clsync does with
        // keys it does not know), so every option clsync has must be one here.
        let cmd = <Cli as clap::CommandFactory>::command();
        let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        let missing: Vec<&&str> = CLSYNC_OPTIONS
            .iter()
            // clap's own; a config file's `help`/`version` key is handled before the lookup.
            .filter(|o| !longs.contains(o) && !["help", "version"].contains(o))
            .collect();
        assert!(missing.is_empty(), "not options here: {missing:?}");
    }

    #[test]
    fn later_options_override_earlier_ones_and_lists_accumulate() {
        let c = parse(&["-w1", "-w", "5", "-x", "23", "-x", "24,025", "-t010"]);
        let lv = parse_with_config(
            ["clsync", "-H", "/NULL/", "-d5", "-v0", "-d", "0"]
                .iter()
                .map(Into::into)
                .collect(),
        )
        .unwrap()
        .unwrap();
        assert_eq!((lv.debug_level, lv.verbose_level), (Some(5), Some(0)));
        assert_eq!(
            lv.handler_args,
            ["0"],
            "-d 0 is -d plus the handler argument 0, as in clsync"
        );
        assert_eq!(c.delay_sync, 5);
        assert_eq!(c.delay_collect, 8, "a leading 0 is octal, as strtol(…, 0)");
        assert_eq!(c.ignore_exitcode, vec![vec![23], vec![24, 25]]);
    }

    fn full(args: &[&str]) -> Result<Cli, String> {
        let argv = std::iter::once("clsync")
            .chain(["-H", "/NULL/"])
            .chain(args.iter().copied())
            .map(Into::into)
            .collect();
        match parse_with_config(argv) {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.msg),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn unambiguous_long_prefixes_name_their_option_and_ambiguous_ones_are_errors() {
        let c = full(&["--watch=src", "--only-init", "--dest", "d", "--lab=x"]).unwrap();
        assert_eq!(c.watch_dir.as_deref(), Some("src"));
        assert!(c.only_initialsync);
        assert_eq!(c.destination_dir.as_deref(), Some("d"));
        assert_eq!(c.label, "x");
        let e = full(&["--sync=x"]).unwrap_err();
        assert!(e.contains("--sync is ambiguous"), "{e}");
        assert!(
            e.contains("--sync-handler") && e.contains("--sync-on-quit"),
            "{e}"
        );
        // An exact name wins over longer ones it prefixes (--debug, not --debug-level).
        assert_eq!(full(&["--debug"]).unwrap().debug, 1);
    }

    #[test]
    fn flags_take_clsyncs_attached_numbers_and_zero_turns_them_off() {
        let c = full(&[
            "--exit-on-no-events=1",
            "-b1",
            "-U0",
            "--one-file-system=0x1",
        ])
        .unwrap();
        assert!(c.exit_on_no_events && c.background && !c.dont_unlink_lists && c.one_file_system);
        // Later ones override earlier ones, in either spelling.
        let c = full(&[
            "-b",
            "--background=0",
            "--exit-on-no-events",
            "--exit-on-no=0",
        ])
        .unwrap();
        assert!(!c.background && !c.exit_on_no_events);
        let c = full(&["--sync-on-quit=0", "--sync-on-quit=2"]).unwrap();
        assert!(c.sync_on_quit);
        let e = full(&["--exit-on-no-events=yes"]).unwrap_err();
        assert!(
            e.contains("--exit-on-no-events=yes") && e.contains("number"),
            "{e}"
        );
        // -d5 / --deb=5 set the level; a value given separately is taken verbatim.
        let c = full(&["--deb=5", "-l", "-b1", "--label", "--exit-on-no-events=1"]).unwrap();
        assert_eq!(c.debug_level, Some(5));
        assert_eq!(c.label, "--exit-on-no-events=1");
        assert!(!c.background && !c.exit_on_no_events);
        // An empty value, separate or attached.
        assert_eq!(full(&["-l", ""]).unwrap().label, "");
        assert_eq!(full(&["--label", ""]).unwrap().label, "");
    }

    #[test]
    fn positional_arguments_anywhere_and_after_double_dash() {
        let c = parse(&["-Mdirect", "a", "-W", "x", "--", "-b", "%INCLUDE-LIST%"]);
        assert_eq!(c.mode, Some(ModeArg::Direct));
        assert_eq!(c.watch_dir.as_deref(), Some("x"));
        assert_eq!(c.handler_args, ["a", "-b", "%INCLUDE-LIST%"]);
    }

    #[test]
    fn a_custom_signals_block_overrides_the_start_configuration_and_the_command_line() {
        let conf =
            std::env::temp_dir().join(format!("clsync-cli-block-{}.conf", std::process::id()));
        std::fs::write(
            &conf,
            "[default]\nlabel = start\ndelay-sync = 7\nbackground = 1\n--- = one %INCLUDE-LIST%\n-- = a b\n\n\
             [b]\nconfig-block-inherits = default\ndelay-sync = 1\nbackground = 0\nverbose = 3\n-- = c\n\n\
             [c]\nretries = 4\n",
        )
        .unwrap();
        let argv = |extra: &[&str]| -> Vec<std::ffi::OsString> {
            [
                "clsync",
                "-H",
                conf.to_str().unwrap(),
                "-w",
                "5",
                "-l",
                "cmd",
            ]
            .iter()
            .chain(extra)
            .map(Into::into)
            .collect()
        };
        let start = parse_with_config(argv(&["-----=cmdline %INCLUDE-LIST%", "-b"]))
            .unwrap()
            .unwrap();
        assert_eq!((start.delay_sync, start.label.as_str()), (5, "cmd"));
        let b = parse_block(argv(&["-----=cmdline %INCLUDE-LIST%", "-b"]), "b").unwrap();
        // The block's keys (with those it inherits) win over the command line.
        assert_eq!((b.delay_sync, b.label.as_str()), (1, "start"));
        assert!(!b.background, "background = 0 in the block turns -b off");
        assert_eq!(b.verbose, 0, "logging is fixed at run time");
        assert_eq!(b.handler_args, ["c"]);
        assert_eq!(b.initialsync_args.as_deref(), Some("one %INCLUDE-LIST%"));
        // A block without `---` or `--` keeps the command line's and the start's.
        let c = parse_block(argv(&["-----=cmdline %INCLUDE-LIST%", "--", "x"]), "c").unwrap();
        // What the block does not set stays.
        assert_eq!((c.retries, c.delay_sync, c.label.as_str()), (4, 5, "cmd"));
        assert_eq!(
            c.initialsync_args.as_deref(),
            Some("cmdline %INCLUDE-LIST%")
        );
        assert_eq!(c.handler_args, ["x", "a", "b"]);
        let e = parse_block(argv(&[]), "nosuch").unwrap_err();
        assert!(e.msg.contains("no block [nosuch]"), "{}", e.msg);
        let _ = std::fs::remove_file(&conf);
    }

    #[test]
    fn numbers_are_checked() {
        assert_eq!(parse_num(" 0x10\n"), Ok(16));
        assert!(parse_num("12abc")
            .unwrap_err()
            .contains("can't be parsed as a number"));
    }

    #[test]
    fn numbers_in_every_base_with_blanks() {
        assert_eq!(parse_num("30"), Ok(30));
        assert_eq!(parse_num(" 0x1F\n"), Ok(31));
        assert_eq!(parse_num("0X1f"), Ok(31));
        assert_eq!(parse_num("010"), Ok(8));
        assert_eq!(parse_num("0"), Ok(0));
        assert_eq!(parse_num("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_num(""), Ok(0), "strtol reads nothing as 0");
        assert_eq!(parse_num(" \t"), Ok(0));
        for bad in ["0x", "08", "1e3", "18446744073709551616", "-1", "1 2"] {
            assert!(parse_num(bad).is_err(), "{bad:?}");
        }
    }

    /// Found by the randomized tests: `from_str_radix` accepted a sign after the base prefix
    /// (`0x+1f` was 31, `0+7` was 7), and a leading `+` hid the prefix (`+010` was ten, not eight).
    #[test]
    fn sign_only_before_the_base_prefix() {
        for bad in [
            "0x+1f", "0X+8", "0+7", "0x-1", "0-7", "++5", "+-5", "+", "+0x",
        ] {
            assert!(parse_num(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_num("+5"), Ok(5));
        assert_eq!(parse_num("+010"), Ok(8));
        assert_eq!(parse_num("+0x10"), Ok(16));
        assert_eq!(parse_num(" +0 "), Ok(0));
    }
}
