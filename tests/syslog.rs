//! Audit through syslog (`-Y syslog`), against a syslog socket the test creates: one parseable
//! `audit: action=… key=value …` record per privileged action and per refusal, from the process
//! that did it, with the configured facility and ident.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Receives datagrams until the daemon has exited and the socket stayed quiet for a moment.
fn collect(sock: &UnixDatagram, d: &mut Daemon) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + START_TIMEOUT;
    let mut buf = vec![0u8; 65536];
    let mut quiet_after_exit = 0;
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => {
                if d.try_wait().is_some() {
                    quiet_after_exit += 1;
                    if quiet_after_exit >= 3 {
                        break;
                    }
                }
            }
        }
    }
    out
}

/// Splits `<PRI>ident[pid]: message` into its parts.
fn parse(line: &str) -> (u32, String, i32, String) {
    let rest = line.strip_prefix('<').expect("no <PRI>");
    let (pri, rest) = rest.split_once('>').expect("no >");
    let (tag, msg) = rest.split_once(": ").expect("no ': '");
    let (ident, pid) = tag.split_once('[').expect("no [pid]");
    let pid = pid.trim_end_matches(']').parse().expect("pid");
    (
        pri.parse().expect("PRI"),
        ident.to_string(),
        pid,
        msg.to_string(),
    )
}

/// Parses an audit record's key=value fields (values bare or double-quoted with escapes).
fn fields(msg: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut rest = msg.strip_prefix("audit: ").expect("not an audit record");
    while !rest.is_empty() {
        let (k, r) = rest.split_once('=').expect("key without =");
        let (v, r) = if let Some(r) = r.strip_prefix('"') {
            let mut v = String::new();
            let mut it = r.char_indices();
            let mut end = r.len();
            while let Some((i, c)) = it.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = it.next() {
                            v.push(e);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &r[end..])
        } else {
            let end = r.find(' ').unwrap_or(r.len());
            (r[..end].to_string(), &r[end..])
        };
        assert!(
            m.insert(k.to_string(), v).is_none(),
            "duplicate key {k} in {msg:?}"
        );
        rest = r.trim_start();
    }
    m
}

fn run(s: &Scratch, env: &[(&str, &str)]) -> (Daemon, Vec<String>) {
    let sock_path = s.path("log");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let extra = [
        "-Y",
        "syslog",
        "--syslog-socket",
        sock_path.to_str().unwrap(),
        "--syslog-facility",
        "local3",
        "--syslog-ident",
        "clsync-test",
    ];
    let mut d = Daemon::start(s, &rsyncdirect_args(s, 0, &extra), env);
    let lines = collect(&sock, &mut d);
    (d, lines)
}

#[test]
fn privileged_actions_and_refusals_are_audited_to_syslog() {
    let s = Scratch::new("syslog-audit");
    populate_sample_tree(&s.src());
    let (d, lines) = run(&s, &[("CLSYNC_TEST_FORGE", "watch-absolute")]);
    assert!(!lines.is_empty(), "nothing reached the syslog socket");
    assert_eq!(
        d.stderr().trim(),
        "",
        "with -Y syslog nothing goes to stderr"
    );
    let worker = d.pid;
    let mut helper = None;
    let mut seen = BTreeMap::new();
    for l in &lines {
        let (pri, ident, pid, msg) = parse(l);
        assert_eq!(ident, "clsync-test");
        assert_eq!(pri / 8, 19, "facility local3 in {l:?}");
        if let Some(a) = msg.strip_prefix("audit: ") {
            let f = fields(&msg);
            let action = f["action"].clone();
            let sev = pri % 8;
            match action.as_str() {
                "refused" | "violation" => assert_eq!(sev, 4, "warning: {l}"),
                _ => assert_eq!(sev, 5, "notice: {l}"),
            }
            if action == "helper-start" {
                helper = Some(pid);
                assert_eq!(f["uid"], "0");
            }
            if action == "worker-sandbox" {
                assert_eq!(pid, worker, "{a}");
                assert_eq!(f["uid"], NOBODY.to_string());
                assert_eq!(f["caps"], "none");
            }
            seen.insert(action, (pid, f));
        }
    }
    let helper = helper.expect("no helper-start record");
    assert_ne!(helper, worker);
    let (pid, exec) = &seen["exec"];
    assert_eq!(*pid, helper, "exec is audited by the helper");
    assert_eq!(exec["uid"], "0");
    assert!(
        exec["argv"].starts_with("/usr/bin/rsync -aH --delete"),
        "{exec:?}"
    );
    assert!(
        exec["argv"].contains(&format!("{}/", s.src().display())),
        "{exec:?}"
    );
    let (pid, refused) = &seen["refused"];
    assert_eq!(*pid, helper);
    assert!(refused["reason"].contains("absolute"), "{refused:?}");
    assert!(refused["reason"].contains("/etc"), "{refused:?}");
}

#[test]
fn a_seccomp_violation_is_audited_to_syslog() {
    let s = Scratch::new("syslog-violation");
    let (d, lines) = run(&s, &[("CLSYNC_TEST_WORKER_SYSCALL", "ptrace")]);
    let v = lines
        .iter()
        .map(|l| parse(l))
        .find(|(_, _, _, m)| m.starts_with("audit: action=violation"))
        .unwrap_or_else(|| panic!("no violation record in {lines:#?}"));
    let f = fields(&v.3);
    assert_eq!(f["who"], "worker");
    assert_eq!(f["syscall"], libc::SYS_ptrace.to_string());
    assert_ne!(v.2, d.pid, "recorded by the helper, not the worker");
}
