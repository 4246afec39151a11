//! The control socket (`--socket`): clsync's line protocol, served by the worker on a listening
//! socket root bound before the fork (the worker cannot create sockets). Any number of
//! connections, each a small line buffer; a malformed line closes that connection only.
//!
//! Lines are `<num> <id> [args…]`; replies reuse `<num>`: `200` version → `300`, `201` info →
//! `301`, `250` quit → `350 … :Bye.` and close, `240` die → the daemon ends as on SIGTERM (the
//! connection closes with no reply, as in clsync), `0`/`1` protocol negotiation, `260` (ours)
//! status → `360 <json>`; a bare `status` line also answers the JSON. Unknown ids `< 1000` get
//! `160 … :Unknown command.`, others `161`. `set` (211) is `<num> 211 <key> <value>` (clsync's
//! `\x03/` terminators after key and value are accepted, and not needed): `config-block <name>`
//! switches to one of the --custom-signals blocks (or back to the start block) exactly as their
//! signal does; `delay-sync`, `delay-collect`, `delay-collect-bigfile`, `threshold-bigfile`,
//! `timeout-sync`, `retries` and `max-iterations` change the worker's own tunables (until the
//! next block switch, which brings the block's values). Success is `311  :Set`; an unknown key or
//! a bad value `162` (clsync's EINVAL reply, naming it); any other clsync key `164` (EPERM): it
//! is fixed at run time (blocks included: mode, ids, capabilities, …), or it would change the
//! privileged helper's frozen policy (handler, arguments, destination, rules file, label, hooks),
//! which only a configured block may select.
//! `dump [dir]` (202) writes clsync's dump of
//! the queues into the configured --dump-dir (`302  :Ready`); a `dir` that is not that one is
//! refused with clsync's EPERM reply (`164`), a dump the helper could not write with its
//! custom error (`199 sync_dump…`, e.g. errno 17 when the directory exists).
#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};

/// Cap on a pending line: a client that sends more without a newline is cut off.
const MAX_LINE: usize = 4096;
/// Cap on connections at once; more are accepted and closed at once.
const MAX_CONNS: usize = 64;

/// What the daemon tells the control socket about itself.
pub struct Snapshot {
    pub status: String,
    pub label: String,
    pub config_block: String,
    pub queued: usize,
    pub running: usize,
    pub watched: usize,
    pub iteration: u64,
    pub last_sync: Option<(i32, u64)>,
    pub failures: u64,
    /// The tunables `set` may change, with their current values (shown by `status`).
    pub settings: Vec<(&'static str, u64)>,
}

/// What a command asks of the daemon.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Die,
    /// `num 202 [dir]`: a dump, answered once it is done (see [`dump_reply`]).
    Dump {
        num: u64,
        dir: Option<String>,
    },
    /// `num 211 key value`: a setting the daemon applies (see [`set_reply`]).
    Set {
        num: u64,
        setting: Setting,
    },
}

/// What `set` may change at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// Switch to this configuration block (one frozen at start).
    ConfigBlock(String),
    DelaySync(u64),
    DelayCollect(u64),
    DelayCollectBigfile(u64),
    ThresholdBigfile(u64),
    TimeoutSync(u64),
    Retries(u64),
    MaxIterations(u64),
}

/// Why a `set` was not applied: `Invalid` (162, an unknown key or a bad value) or `Denied` (164).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    Invalid(String),
    Denied(String),
}

/// Keys of the privileged helper's policy that a --custom-signals block may set (what it runs,
/// with which arguments and files): frozen at start, one policy per block, so only a block switch
/// changes them. Every other clsync option (the mode, the ids and capabilities, the paths the
/// daemon writes, …) is fixed at run time, blocks included (`Config::keep_fixed`).
const BLOCK_POLICY_KEYS: &[&str] = &[
    "sync-handler",
    "label",
    "destination-dir",
    "rules-file",
    "exit-hook",
    "pre-exit-hook",
    "standby-file",
];

/// Reads `set`'s key and value into a [`Setting`].
pub fn setting(key: &str, value: &str) -> Result<Setting, SetError> {
    let num = |what: &str| {
        crate::cli::parse_num(value)
            .map_err(|_| SetError::Invalid(format!("{what}: value \"{value}\" is not a number")))
    };
    Ok(match key {
        "config-block" => {
            if value.is_empty() {
                return Err(SetError::Invalid("config-block: no block named".into()));
            }
            Setting::ConfigBlock(value.to_string())
        }
        "delay-sync" => Setting::DelaySync(num(key)?),
        "delay-collect" => Setting::DelayCollect(num(key)?),
        "delay-collect-bigfile" => Setting::DelayCollectBigfile(num(key)?),
        "threshold-bigfile" => Setting::ThresholdBigfile(num(key)?),
        "timeout-sync" => Setting::TimeoutSync(num(key)?),
        "retries" => Setting::Retries(num(key)?),
        "max-iterations" => Setting::MaxIterations(num(key)?),
        k if BLOCK_POLICY_KEYS.contains(&k) => {
            return Err(SetError::Denied(format!(
                "{k}: it would change the privileged helper's policy, frozen at start; configure it in a block and switch with config-block"
            )))
        }
        k if crate::cli::CLSYNC_OPTIONS.contains(&k) => {
            return Err(SetError::Denied(format!(
                "{k}: fixed at run time in this build"
            )))
        }
        k => return Err(SetError::Invalid(format!("unknown key \"{k}\""))),
    })
}

/// The reply to a `set` numbered `num`: clsync's `311  :Set`, EINVAL (162) or EPERM (164).
pub fn set_reply(num: u64, r: &Result<(), SetError>) -> String {
    match r {
        Ok(()) => format!("{num} 311  :Set\n"),
        Err(SetError::Invalid(why)) => {
            format!("{num} 162 {why}\x03/ :Invalid argument: \"{why}\".\n")
        }
        Err(SetError::Denied(why)) => {
            format!("{num} 164 {why}\x03/ :Permission denied: \"{why}\".\n")
        }
    }
}

/// `set`'s arguments: `key\x03/ value\x03/` (clsync's form) or `key value`.
fn set_args(rest: &str) -> (String, String) {
    let rest = rest.trim_start();
    let (key, value) = match rest.split_once("\x03/") {
        Some((k, v)) => (k, v),
        None => rest.split_once(' ').unwrap_or((rest, "")),
    };
    let value = value.trim();
    let value = value.strip_suffix("\x03/").unwrap_or(value).trim();
    (key.trim().to_string(), value.to_string())
}

/// What a served line asks of the daemon, for the callback of [`Control::serve`].
pub enum Ask<'a> {
    Dump(Option<&'a str>),
    Set(&'a Setting),
}

/// How a `dump` went, for its reply.
#[derive(Debug, PartialEq, Eq)]
pub enum DumpResult {
    /// Written: `302  :Ready`.
    Ready,
    /// Not attempted, and why: clsync's EPERM reply `164 <why>\x03/ :Permission denied: "<why>".`
    Denied(String),
    /// The dump directory could not be written: clsync's custom error
    /// `199 sync_dump\x03/ <dir>\x03/ <errno> <text>\x03/ :sync_dump(<dir>): Error #<errno>: "<text>".`
    Failed { dir: String, errno: i32 },
}

/// The reply line to a `dump` numbered `num`.
pub fn dump_reply(num: u64, r: &DumpResult) -> String {
    match r {
        DumpResult::Ready => format!("{num} 302  :Ready\n"),
        DumpResult::Denied(why) => {
            format!("{num} 164 {why}\x03/ :Permission denied: \"{why}\".\n")
        }
        DumpResult::Failed { dir, errno } => {
            let text = nix::errno::Errno::from_raw(*errno).desc();
            format!(
                "{num} 199 sync_dump\x03/ {dir}\x03/ {errno} {text}\x03/ :sync_dump({dir}): Error #{errno}: \"{text}\".\n"
            )
        }
    }
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

pub struct Control {
    listener: UnixListener,
    conns: Vec<Conn>,
}

/// The answer to one line: what to send back, whether to close the connection, what to do.
pub type Answer = (Option<String>, bool, Action);

/// Answers one request line; `None` (not `<num> <id>`) closes the connection.
pub fn answer(line: &str, snap: &Snapshot) -> Option<Answer> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim() == "status" {
        return Some((Some(json(snap)), false, Action::None));
    }
    let mut w = line.split(' ');
    let num: u64 = w.next().and_then(|n| n.parse().ok())?;
    let id: u32 = w
        .next()
        .and_then(|n| n.trim_start_matches(':').parse().ok())?;
    let reply = |code: u32, args: &str, text: &str| format!("{num} {code} {args} :{text}\n");
    Some(match id {
        0 | 1 => {
            let p = w.next().unwrap_or("0");
            (
                Some(format!("{num} 1 {p} :Protocol version is {p}.\n")),
                false,
                Action::None,
            )
        }
        200 => (
            Some(reply(
                300,
                "0 4 5 -clsync-rs",
                "clsync v0.4.5 compatible (clsync-rs)",
            )),
            false,
            Action::None,
        ),
        201 => (
            Some(reply(
                301,
                &format!("{}\x03/ {}\x03/ 0 0", snap.config_block, snap.label),
                &format!(
                    "config_block == \"{}\"; label == \"{}\"",
                    snap.config_block, snap.label
                ),
            )),
            false,
            Action::None,
        ),
        202 => {
            // clsync reads one `%s`; a client may end it with the `\x03/` terminator.
            let rest: Vec<&str> = w.collect();
            let dir = rest.join(" ");
            let dir = dir.trim().trim_end_matches("\x03/").trim();
            let dir = (!dir.is_empty()).then(|| dir.to_string());
            (None, false, Action::Dump { num, dir })
        }
        211 => {
            let rest: Vec<&str> = w.collect();
            let (key, value) = set_args(&rest.join(" "));
            match setting(&key, &value) {
                Ok(setting) => (None, false, Action::Set { num, setting }),
                Err(e) => (Some(set_reply(num, &Err(e))), false, Action::None),
            }
        }
        240 => (None, true, Action::Die),
        250 => (Some(reply(350, "", "Bye.")), true, Action::None),
        260 => (
            Some(format!("{num} 360 {}", json(snap))),
            false,
            Action::None,
        ),
        id if id < 1000 => (
            Some(format!("{num} 160 {id} {num} :Unknown command.\n")),
            false,
            Action::None,
        ),
        _ => (
            Some(format!(
                "{num} 161 {num} :Invalid command id. Required: 0 <= cmd_id < 1000.\n"
            )),
            false,
            Action::None,
        ),
    })
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// The JSON `status` answer (one line).
pub fn json(s: &Snapshot) -> String {
    let last = match s.last_sync {
        Some((code, t)) => format!("{{\"exit_code\":{code},\"time_unix\":{t}}}"),
        None => "null".into(),
    };
    format!(
        "{{\"state\":\"{}\",\"label\":\"{}\",\"config_block\":\"{}\",\"queued\":{},\"running\":{},\"watched\":{},\"iteration\":{},\"last_sync\":{},\"failures\":{},\"settings\":{{{}}}}}\n",
        esc(&s.status),
        esc(&s.label),
        esc(&s.config_block),
        s.queued,
        s.running,
        s.watched,
        s.iteration,
        last,
        s.failures,
        s.settings
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect::<Vec<_>>()
            .join(",")
    )
}

impl Control {
    pub fn new(listener: UnixListener) -> Control {
        Control {
            listener,
            conns: Vec::new(),
        }
    }

    /// The fds to poll: the listener first, then each connection.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd())
            .chain(self.conns.iter().map(|c| c.stream.as_fd()))
            .collect()
    }

    /// Accepts new connections (each greeted like clsync does).
    pub fn accept(&mut self) {
        use nix::sys::socket::{accept4, SockFlag};
        use std::os::fd::AsRawFd;
        loop {
            // accept4 with SOCK_NONBLOCK: the worker's seccomp filter has no ioctl(FIONBIO).
            match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                Ok(fd) => {
                    let mut stream = UnixStream::from(crate::sys::adopt_received_fd(fd));
                    if self.conns.len() >= MAX_CONNS {
                        continue; // dropped: closed
                    }
                    let _ = stream.write_all(b"0 0 0 :Protocol version is 0.\n");
                    self.conns.push(Conn {
                        stream,
                        buf: Vec::new(),
                    });
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    /// Serves the connection at `i` (its fd was readable); returns what the daemon should do.
    /// A `dump` or a `set` is done at once through `on_ask` (a dump given the directory the
    /// client named, if any), which returns the reply line.
    pub fn serve(
        &mut self,
        i: usize,
        snap: &Snapshot,
        on_ask: &mut dyn FnMut(u64, Ask) -> String,
    ) -> Action {
        let mut close = false;
        let mut action = Action::None;
        let mut chunk = [0u8; 1024];
        let Some(c) = self.conns.get_mut(i) else {
            return Action::None;
        };
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    close = true;
                    break;
                }
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    close = true;
                    break;
                }
            }
        }
        while let Some(pos) = c.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = c.buf.drain(..=pos).collect();
            match answer(&String::from_utf8_lossy(&line), snap) {
                Some((reply, end, act)) => {
                    if let Some(r) = reply {
                        let _ = c.stream.write_all(r.as_bytes());
                    }
                    match act {
                        Action::Die => action = Action::Die,
                        Action::Dump { num, dir } => {
                            let r = on_ask(num, Ask::Dump(dir.as_deref()));
                            let _ = c.stream.write_all(r.as_bytes());
                        }
                        Action::Set { num, setting } => {
                            let r = on_ask(num, Ask::Set(&setting));
                            let _ = c.stream.write_all(r.as_bytes());
                        }
                        Action::None => {}
                    }
                    if end {
                        close = true;
                        break;
                    }
                }
                None => {
                    close = true;
                    break;
                }
            }
        }
        if c.buf.len() > MAX_LINE {
            close = true;
        }
        if close {
            self.conns.swap_remove(i);
        }
        action
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            status: "running".into(),
            label: "lbl\"x".into(),
            config_block: "default".into(),
            queued: 2,
            running: 1,
            watched: 7,
            iteration: 3,
            last_sync: Some((0, 1_700_000_000)),
            failures: 0,
            settings: vec![("delay-sync", 30), ("retries", 1)],
        }
    }

    #[test]
    fn clsyncs_commands() {
        let (r, end, a) = answer("5 200\n", &snap()).unwrap();
        assert!(r.unwrap().starts_with("5 300 0 4 5 "));
        assert!(!end && a == Action::None);
        let (r, ..) = answer("6 201\n", &snap()).unwrap();
        assert!(r.unwrap().starts_with("6 301 default\x03/ lbl\"x\x03/"));
        assert_eq!(
            answer("7 250\n", &snap()).unwrap(),
            (Some("7 350  :Bye.\n".into()), true, Action::None)
        );
        assert_eq!(
            answer("8 240\n", &snap()).unwrap(),
            (None, true, Action::Die)
        );
        assert_eq!(
            answer("9 999\n", &snap()).unwrap().0.unwrap(),
            "9 160 999 9 :Unknown command.\n"
        );
        assert!(answer("9 1000\n", &snap())
            .unwrap()
            .0
            .unwrap()
            .starts_with("9 161 "));
        assert!(
            answer("hello\n", &snap()).is_none(),
            "not `<num> <id>`: the connection closes"
        );
    }

    #[test]
    fn dump_asks_the_daemon_and_answers_like_clsync() {
        let dump = |line: &str| answer(line, &snap()).unwrap();
        assert_eq!(
            dump("3 202 /tmp/d\n"),
            (
                None,
                false,
                Action::Dump {
                    num: 3,
                    dir: Some("/tmp/d".into())
                }
            )
        );
        assert_eq!(
            dump("4 202 /tmp/d\x03/\n").2,
            Action::Dump {
                num: 4,
                dir: Some("/tmp/d".into())
            }
        );
        assert_eq!(dump("5 202\n").2, Action::Dump { num: 5, dir: None });
        assert_eq!(dump_reply(3, &DumpResult::Ready), "3 302  :Ready\n");
        assert_eq!(
            dump_reply(
                6,
                &DumpResult::Failed {
                    dir: "/tmp/d".into(),
                    errno: 17
                }
            ),
            "6 199 sync_dump\x03/ /tmp/d\x03/ 17 File exists\x03/ :sync_dump(/tmp/d): Error #17: \"File exists\".\n"
        );
        assert_eq!(
            dump_reply(7, &DumpResult::Denied("no".into())),
            "7 164 no\x03/ :Permission denied: \"no\".\n"
        );
    }

    #[test]
    fn set_reads_clsyncs_terminated_form_and_plain_words() {
        let set = |line: &str| answer(line, &snap()).unwrap();
        assert_eq!(
            set("3 211 config-block\x03/ b\x03/\n").2,
            Action::Set {
                num: 3,
                setting: Setting::ConfigBlock("b".into())
            }
        );
        assert_eq!(
            set("4 211 delay-sync 0x10\n").2,
            Action::Set {
                num: 4,
                setting: Setting::DelaySync(16)
            }
        );
        assert_eq!(
            set("5 211 retries\x03/ 3\n").2,
            Action::Set {
                num: 5,
                setting: Setting::Retries(3)
            }
        );
        let (r, end, a) = set("6 211 sync-handler /bin/sh\n");
        assert!(!end && a == Action::None);
        assert!(r
            .unwrap()
            .starts_with("6 164 sync-handler: it would change the privileged helper's policy"));
        let r = set("7 211 pid-file\x03/ /x\x03/\n").0.unwrap();
        assert!(r.starts_with("7 164 pid-file: fixed at run time"), "{r}");
        // A block cannot change the ids or the mode either: not "switch with config-block".
        for key in ["uid", "mode", "sync-handler-uid", "dump-dir"] {
            let r = set(&format!("7 211 {key} 1\n")).0.unwrap();
            assert!(
                r.starts_with(&format!("7 164 {key}: fixed at run time")),
                "{r}"
            );
        }
        let r = set("8 211 bogus 1\n").0.unwrap();
        assert_eq!(
            r,
            "8 162 unknown key \"bogus\"\x03/ :Invalid argument: \"unknown key \"bogus\"\".\n"
        );
        let r = set("9 211 delay-collect x\n").0.unwrap();
        assert!(
            r.starts_with("9 162 delay-collect: value \"x\" is not a number"),
            "{r}"
        );
        assert!(set("10 211\n").0.unwrap().starts_with("10 162 unknown key"));
        assert_eq!(set_reply(11, &Ok(())), "11 311  :Set\n");
    }

    #[test]
    fn json_status_is_escaped() {
        let (r, ..) = answer("status\n", &snap()).unwrap();
        let r = r.unwrap();
        assert!(r.contains("\"label\":\"lbl\\\"x\""), "{r}");
        assert!(
            r.contains("\"last_sync\":{\"exit_code\":0,\"time_unix\":1700000000}"),
            "{r}"
        );
        assert!(r.ends_with("}\n"));
        assert!(
            r.contains("\"config_block\":\"default\"")
                && r.contains("\"settings\":{\"delay-sync\":30,\"retries\":1}"),
            "{r}"
        );
    }
}
