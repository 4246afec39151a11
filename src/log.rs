//! Log output in clsync's style (`Error: …`, `Warning: …`, `Info: …`, `Debug<N>: …`) and audit
//! records (`audit: key=value …`). Each line is written with a single write(2) so the worker's and
//! the helper's lines never interleave mid-line.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

static VERBOSE: AtomicI32 = AtomicI32::new(3);
static DEBUG: AtomicI32 = AtomicI32::new(0);
static QUIET: AtomicU8 = AtomicU8::new(0);
/// 0 = stderr, 1 = stdout.
static OUTPUT: AtomicU8 = AtomicU8::new(0);

pub fn configure(verbose: i32, debug: i32, quiet: bool, stdout: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    DEBUG.store(debug, Ordering::Relaxed);
    QUIET.store(quiet as u8, Ordering::Relaxed);
    OUTPUT.store(stdout as u8, Ordering::Relaxed);
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
    emit(line.as_bytes());
}

fn emit(bytes: &[u8]) {
    // One write_all on an unbuffered handle: a single write(2) for any line under PIPE_BUF.
    if OUTPUT.load(Ordering::Relaxed) == 1 {
        let _ = std::io::stdout().lock().write_all(bytes);
    } else {
        let _ = std::io::stderr().lock().write_all(bytes);
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
    emit(line.as_bytes());
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
