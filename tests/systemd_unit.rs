//! contrib/clsync@.service: its exposure as `systemd-analyze security` scores it, and the daemon
//! working under the unit's capability bounding set and no_new_privs (systemd is not PID 1 here,
//! so the unit's limits are applied with setpriv).

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn unit() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib/clsync@.service");
    fs::read_to_string(p).unwrap()
}

fn directive<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .collect()
}

#[test]
fn the_unit_scores_3_5_or_lower() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib/clsync@.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&p)
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for ").nth(1))
        .and_then(|r| r.split(": ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 3.5, "exposure {score} > 3.5:\n{text}");
}

#[test]
fn the_daemon_syncs_under_the_units_capability_bounding_set() {
    let u = unit();
    let caps: Vec<String> = directive(&u, "CapabilityBoundingSet")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty());
    assert_eq!(directive(&u, "NoNewPrivileges"), ["yes"]);
    let exec = directive(&u, "ExecStart")[0];
    let handler_caps = exec
        .split_whitespace()
        .find(|a| a.starts_with("--sync-handler-capabilities="))
        .expect("the unit sets the handler's capabilities");

    let s = Scratch::new("unit-caps");
    populate_sample_tree(&s.src());
    let mut args: Vec<OsString> = vec![
        format!("--bounding-set=-all,{}", caps.join(",")).into(),
        "--no-new-privs".into(),
        clsync_bin().into(),
    ];
    args.extend(rsyncdirect_args(&s, 0, &[handler_caps]));
    let mut d = Daemon::spawn(std::path::Path::new("/usr/bin/setpriv"), &s, &args, &[]);
    d.wait_ready();
    assert_trees_equal(&s.src(), &s.dst());
    fs::write(s.src().join("after-start"), b"x").unwrap();
    wait_synced(&s.src(), &s.dst(), SYNC_TIMEOUT);
    let st = d.stop();
    assert!(st.success(), "{}", d.stderr());
}
