//! Log output in clsync's style (`Error: …`, `Warning: …`, `Info: …`, `Debug<N>: …`) and audit
//! records (`audit: key=value …`). Each line is written with a single write(2) so the worker's and
//! the helper's lines never interleave mid-line.
//!
//! With `-Y syslog` every line goes as one datagram `<PRI>ident[pid]: message` to a syslog
//! socket (default /dev/log; `--syslog-socket` for machines and containers without it) that is
//! connected once, as root, before the fork: the worker cannot open sockets later. The syslog
//! daemon adds the timestamp. Audit records use priority notice, refusals and violations warning.
//! (Hand-written rather than the `syslog` crate: that crate owns and reconnects its socket, and
//! a reconnect is a `connect` the worker's seccomp filter denies.)
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

static VERBOSE: AtomicI32 = AtomicI32::new(3);
static DEBUG: AtomicI32 = AtomicI32::new(0);
static QUIET: AtomicU8 = AtomicU8::new(0);
/// 0 = stderr, 1 = stdout, 2 = syslog.
static OUTPUT: AtomicU8 = AtomicU8::new(0);

struct Syslog {
    sock: std::os::unix::net::UnixDatagram,
    facility: u8,
    ident: String,
}

static SYSLOG: std::sync::OnceLock<Syslog> = std::sync::OnceLock::new();

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Stderr,
    Stdout,
    Syslog,
}

/// syslog facility names and codes.
pub const FACILITIES: [(&str, u8); 20] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

pub fn facility_code(name: &str) -> Option<u8> {
    let n = name.trim().to_ascii_lowercase();
    let n = n.strip_prefix("log_").unwrap_or(&n);
    FACILITIES.iter().find(|(f, _)| *f == n).map(|(_, c)| *c)
}

/// Connects the syslog socket and sends every later line there. Call once, before the fork.
pub fn open_syslog(path: &std::path::Path, facility: u8, ident: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    sock.connect(path)?;
    let _ = SYSLOG.set(Syslog {
        sock,
        facility,
        ident: ident.to_string(),
    });
    OUTPUT.store(2, Ordering::Relaxed);
    Ok(())
}

/// The syslog socket's fd, which the fork's fd clean-up must keep.
pub fn syslog_fd() -> Option<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    SYSLOG.get().map(|s| s.sock.as_raw_fd())
}

/// syslog severities.
const LOG_ERR: u8 = 3;
const LOG_WARNING: u8 = 4;
const LOG_NOTICE: u8 = 5;
const LOG_INFO: u8 = 6;
const LOG_DEBUG: u8 = 7;

pub fn configure(verbose: i32, debug: i32, quiet: bool, output: Output) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    DEBUG.store(debug, Ordering::Relaxed);
    QUIET.store(quiet as u8, Ordering::Relaxed);
    let o = match output {
        Output::Stderr => 0,
        Output::Stdout => 1,
        // Becomes 2 once open_syslog() connected; stderr until then.
        Output::Syslog => 0,
    };
    OUTPUT.store(o, Ordering::Relaxed);
}

pub fn debug_level() -> i32 {
    DEBUG.load(Ordering::Relaxed)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    Error,
    Warning,
    Info,
    Debug(i32),
}

pub fn enabled(level: Level) -> bool {
    if QUIET.load(Ordering::Relaxed) != 0 {
        return false;
    }
    let v = VERBOSE.load(Ordering::Relaxed);
    match level {
        Level::Error => v >= 1,
        Level::Warning => v >= 2,
        Level::Info => v >= 3,
        Level::Debug(n) => DEBUG.load(Ordering::Relaxed) >= n,
    }
}

pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let mut line = match level {
        Level::Error => "Error: ".to_string(),
        Level::Warning => "Warning: ".to_string(),
        Level::Info => "Info: ".to_string(),
        Level::Debug(n) => format!("Debug{n}: "),
    };
    let _ = fmt::write(&mut line, args);
    line.push('\n');
    let sev = match level {
        Level::Error => LOG_ERR,
        Level::Warning => LOG_WARNING,
        Level::Info => LOG_INFO,
        Level::Debug(_) => LOG_DEBUG,
    };
    emit(sev, line.as_bytes());
}

fn emit(severity: u8, bytes: &[u8]) {
    match OUTPUT.load(Ordering::Relaxed) {
        2 => {
            if let Some(s) = SYSLOG.get() {
                let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                let mut msg = format!(
                    "<{}>{}[{}]: ",
                    s.facility as u32 * 8 + severity as u32,
                    s.ident,
                    std::process::id()
                )
                .into_bytes();
                msg.extend_from_slice(line);
                let _ = s.sock.send(&msg);
            }
        }
        // One write_all on an unbuffered handle: a single write(2) for any line under PIPE_BUF.
        1 => {
            let _ = std::io::stdout().lock().write_all(bytes);
        }
        _ => {
            let _ = std::io::stderr().lock().write_all(bytes);
        }
    }
}

/// An audit record: `audit: who=helper action=… key=value …`, values quoted when needed.
pub fn audit(action: &str, fields: &[(&str, &dyn fmt::Display)]) {
    let mut line = format!("audit: action={action}");
    for (k, v) in fields {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(&quote(&v.to_string()));
    }
    line.push('\n');
    // -q silences the terminal, never the syslog audit trail.
    if QUIET.load(Ordering::Relaxed) != 0 && OUTPUT.load(Ordering::Relaxed) != 2 {
        return;
    }
    let sev = if matches!(action, "refused" | "violation") {
        LOG_WARNING
    } else {
        LOG_NOTICE
    };
    emit(sev, line.as_bytes());
}

/// Quotes a value for key=value records: bare if it is plain, otherwise in double quotes with
/// `\"`, `\\` and non-printable bytes escaped, so a hostile file name cannot forge a field.
pub fn quote(v: &str) -> String {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'=');
    if plain {
        return v.to_string();
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => s.push_str(&format!("\\x{:02x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! warning { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warning, format_args!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($n:expr, $($t:tt)*) => { $crate::log::write($crate::log::Level::Debug($n), format_args!($($t)*)) } }

/// `audit_fields!["key" => value, …]` builds the field list of [`audit`].
#[macro_export]
macro_rules! audit_fields {
    ($($k:expr => $v:expr),* $(,)?) => { &[$(($k, &$v as &dyn std::fmt::Display)),*] };
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quote_cannot_forge_fields() {
        assert_eq!(quote("rsync"), "rsync");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("x\" uid=0"), "\"x\\\" uid=0\"");
        assert_eq!(quote("new\nline"), "\"new\\x0aline\"");
        assert_eq!(quote(""), "\"\"");
    }
}
