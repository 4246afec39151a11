//! clsync's command line (the options this build implements so far), clap-defined.
//! Names, short letters and defaults follow clsync 0.4.5; see man/clsync.1.
#![forbid(unsafe_code)]

use clap::{ArgAction, Parser, ValueEnum};

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
pub fn parse_num(s: &str) -> Result<u64, String> {
    let t = s.trim_matches(|c| c == ' ' || c == '\t' || c == '\r' || c == '\n');
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

fn parse_codes(s: &str) -> Result<Vec<i32>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            parse_num(p)
                .and_then(|n| i32::try_from(n).map_err(|_| format!("exit code {p} out of range")))
        })
        .collect()
}

#[derive(Parser, Debug)]
#[command(
    name = "clsync",
    version,
    about = "Live file-sync daemon: inotify + aggregation + rsync, privilege-separated and sandboxed",
    disable_help_subcommand = true
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

    /// Configuration file; only /NULL/ (read none) in this build
    #[arg(short = 'H', long = "config-file", value_name = "FILE")]
    pub config_file: Option<String>,

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

    /// Privilege separation: process (the default, always on) or off (debugging only)
    #[arg(long = "splitting", default_value = "process")]
    pub splitting: String,

    /// Accepted for compatibility: privilege separation and the sandbox are always on
    #[arg(long = "secure-splitting")]
    pub secure_splitting: bool,

    /// Arguments for the sync handler (replace the mode's default arguments)
    #[arg(value_name = "HANDLER-ARGS")]
    pub handler_args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_every_base_with_blanks() {
        assert_eq!(parse_num("30"), Ok(30));
        assert_eq!(parse_num(" 0x1F\n"), Ok(31));
        assert_eq!(parse_num("0X1f"), Ok(31));
        assert_eq!(parse_num("010"), Ok(8));
        assert_eq!(parse_num("0"), Ok(0));
        assert_eq!(parse_num("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "",
            " ",
            "0x",
            "08",
            "1e3",
            "18446744073709551616",
            "-1",
            "1 2",
        ] {
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
