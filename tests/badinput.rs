//! Start-up errors: each bad command line must be refused with a non-zero exit status (not a
//! signal, not a panic) and a message on stderr naming the problem, before anything is synced:
//! the destination (and the source) are left exactly as they were, TMPDIR stays empty, and no
//! cgroup is left behind.

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// A scratch with content on both sides (so a sync would show), plus reference copies of both.
fn prepared(name: &str) -> Scratch {
    let s = Scratch::new(name);
    populate_sample_tree(&s.src());
    create_file(
        s.dst().join("canary"),
        b"must survive\n",
        Attrs::new(0o600).mtime(1_111_111_111, 111),
    );
    set_mtime(&s.dst(), 1_111_111_111, 0);
    fs::create_dir(s.path("ref-src")).unwrap();
    fs::create_dir(s.path("ref-dst")).unwrap();
    rsync_copy(&s.src(), &s.path("ref-src"));
    rsync_copy(&s.dst(), &s.path("ref-dst"));
    s
}

/// Runs clsync with `args`, expects a refusal whose stderr contains one of `any_of`
/// (case-insensitive), and checks nothing was touched or left behind.
/// Returns the stderr.
#[track_caller]
fn refused(s: &Scratch, args: Vec<OsString>, any_of: &[&str]) -> String {
    let mut d = Daemon::start(s, &args, &[]);
    let st = d.wait_exit(Duration::from_secs(20));
    let err = d.stderr();
    let st = st.unwrap_or_else(|| panic!("still running 20 s after a bad start; stderr:\n{err}"));
    assert!(
        st.code().is_some_and(|c| c != 0),
        "want a non-zero exit code, got {st}; stderr:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "a panic is not an error message:\n{err}"
    );
    let lower = err.to_lowercase();
    assert!(
        any_of.iter().any(|w| lower.contains(&w.to_lowercase())),
        "stderr does not name the problem (want one of {any_of:?}):\n{err}"
    );
    assert_trees_equal(&s.path("ref-dst"), &s.dst());
    assert_trees_equal(&s.path("ref-src"), &s.src());
    assert_eq!(dir_entries(&s.tmp()), Vec::<OsString>::new(), "TMPDIR");
    assert_eq!(daemon_cgroup_dirs(d.pid), Vec::<PathBuf>::new(), "cgroups");
    err
}

/// The usual arguments without the option pair `-<flag> value`.
fn without(s: &Scratch, flag: &str) -> Vec<OsString> {
    let full = rsyncdirect_args(s, 0, &[]);
    let mut out = Vec::new();
    let mut it = full.into_iter();
    while let Some(a) = it.next() {
        if a == flag {
            it.next();
        } else {
            out.push(a);
        }
    }
    out
}

/// The usual arguments with `-<flag>`'s value replaced.
fn with(s: &Scratch, flag: &str, value: impl Into<OsString>) -> Vec<OsString> {
    let mut v = rsyncdirect_args(s, 0, &[]);
    let i = v.iter().position(|a| a == flag).unwrap();
    v[i + 1] = value.into();
    v
}

#[test]
fn missing_watch_dir_option() {
    let s = prepared("bad-no-w");
    refused(&s, without(&s, "-W"), &["watch"]);
}

#[test]
fn nonexistent_watch_dir() {
    let s = prepared("bad-w-missing");
    let p = s.path("no-such-dir");
    refused(&s, with(&s, "-W", &p), &[p.to_str().unwrap()]);
}

#[test]
fn watch_dir_that_is_a_file() {
    let s = prepared("bad-w-file");
    let p = s.path("plain-file");
    fs::write(&p, b"not a directory\n").unwrap();
    let err = refused(&s, with(&s, "-W", &p), &[p.to_str().unwrap()]);
    // The message says what is wrong with it, not just which path.
    assert!(
        err.to_lowercase().contains("director"),
        "stderr does not say it is not a directory:\n{err}"
    );
}

#[test]
fn rsyncdirect_without_destination() {
    let s = prepared("bad-no-d");
    refused(&s, without(&s, "-D"), &["destination"]);
}

#[test]
fn unknown_option() {
    let s = prepared("bad-option");
    let mut args = rsyncdirect_args(&s, 0, &[]);
    args.push("--no-such-option-xyz".into());
    refused(&s, args, &["no-such-option-xyz"]);
}

#[test]
fn unknown_user_for_uid() {
    let s = prepared("bad-user");
    let args = rsyncdirect_args(&s, 0, &["--uid", "no-such-user-xyz"]);
    refused(&s, args, &["no-such-user-xyz"]);
}

#[test]
fn unknown_group_for_gid() {
    let s = prepared("bad-group");
    let args = rsyncdirect_args(&s, 0, &["--gid", "no-such-group-xyz"]);
    refused(&s, args, &["no-such-group-xyz"]);
}
