//! The control socket (`--socket`): clsync's line protocol and our JSON status, any number of
//! connections, `die`, and the `clsync --ctl` client.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::Command;

fn ask(sock: &std::path::Path, line: &str) -> Option<String> {
    let s = UnixStream::connect(sock).ok()?;
    let mut r = BufReader::new(&s);
    let mut greeting = String::new();
    r.read_line(&mut greeting).ok()?;
    assert_eq!(greeting, "0 0 0 :Protocol version is 0.\n");
    (&s).write_all(line.as_bytes()).ok()?;
    let mut answer = String::new();
    r.read_line(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn many_connections_status_and_die() {
    let s = Scratch::new("ctl-socket");
    let sock = s.path("ctl.sock");
    let mut d = Daemon::rsyncdirect(
        &s,
        0,
        &[
            "-s",
            sock.to_str().unwrap(),
            "--socket-own",
            "4242:4243",
            "--socket-mod",
            "660",
        ],
    );
    d.wait_ready();
    let md = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.permissions().mode() & 0o777),
        (4242, 4243, 0o660)
    );
    // clsync 0.4.5 closes its socket for good at the 9th connection ever made.
    for i in 0..20 {
        let a =
            ask(&sock, &format!("{i} 200\n")).unwrap_or_else(|| panic!("connection {i} failed"));
        assert!(a.starts_with(&format!("{i} 300 ")), "{a}");
    }
    let status = ask(&sock, "status\n").unwrap();
    assert!(status.starts_with("{\"state\":\"running\""), "{status}");
    assert!(
        status.contains("\"watched\":1") && status.contains("\"last_sync\":{\"exit_code\":0"),
        "{status}"
    );
    // A malformed line closes that connection only.
    let bad = UnixStream::connect(&sock).unwrap();
    (&bad).write_all(b"hello\n").unwrap();
    assert!(ask(&sock, "1 201\n").unwrap().starts_with("1 301 default"));
    // The client.
    let out = Command::new(clsync_bin())
        .args(["--ctl", sock.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"state\":\"running\""));
    let out = Command::new(clsync_bin())
        .args(["--ctl", sock.to_str().unwrap(), "die"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let st = d
        .wait_exit(START_TIMEOUT)
        .expect("die did not end the daemon");
    assert!(st.success(), "{}", d.stderr());
    assert!(
        wait_for(SYNC_TIMEOUT, || !sock.exists()),
        "the socket was not removed"
    );
}

#[test]
fn socket_options_are_checked() {
    let s = Scratch::new("ctl-bad");
    for (extra, msg) in [
        (vec!["--socket-mod", "600"], "need --socket"),
        (vec!["-s", "inside.sock"], "inside the watched tree"),
        (
            vec!["-s", "/tmp/x.sock", "--socket-auth", "pam"],
            "only null",
        ),
    ] {
        let mut d = Daemon::rsyncdirect(&s, 0, &extra);
        let st = d.wait_exit(START_TIMEOUT).expect("did not exit");
        assert_eq!(st.code(), Some(22), "{extra:?}");
        assert!(d.stderr().contains(msg), "{extra:?}: {}", d.stderr());
    }
}
