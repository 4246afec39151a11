//! The web-root recipe of clsync's manual, `-Mdirect -Schown … -- --from=root www-data:www-data
//! %INCLUDE-LIST%`, against a tenant who plants symlinks, hard links and option-like names. With
//! the built-in fixer nothing outside the tree changes; with --unsafe-external-handler (the real
//! chown, as clsync 0.4.5 runs it) the same attack succeeds, so the test can fail.

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const WWW: u32 = 33; // www-data on Debian

fn recipe(s: &Scratch, program: &str, extra: &[&str], args: &[&str]) -> Vec<OsString> {
    // As clsync's manual writes it (with -w0 -t0 -T0 instead of 3 s delays).
    let mut v: Vec<OsString> = [
        "-w0",
        "-t0",
        "-T0",
        "-x1",
        "-H",
        "/NULL/",
        "-Mdirect",
        "--uid",
        "0",
        "--gid",
        "0",
        "--modification-signature",
        "uid,gid",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    v.extend([
        "-W".into(),
        s.src().into_os_string(),
        "-S".into(),
        program.into(),
    ]);
    v.extend(extra.iter().map(OsString::from));
    v.push("--".into());
    v.extend(args.iter().map(OsString::from));
    v
}

/// A root-owned "system" file outside the tree, and a tenant's tree pointing at it.
fn tenant_tree(s: &Scratch) -> std::path::PathBuf {
    let victim = s.path("victim");
    fs::write(&victim, b"root:secret\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let src = s.src();
    std::os::unix::fs::symlink(&victim, src.join("evil")).unwrap();
    fs::write(src.join("uploaded"), b"page\n").unwrap();
    fs::write(src.join("--reference=victim"), b"x\n").unwrap();
    fs::write(src.join("-R"), b"x\n").unwrap();
    fs::create_dir(src.join("dir")).unwrap();
    fs::write(src.join("dir/linked"), b"x\n").unwrap();
    fs::hard_link(src.join("dir/linked"), s.path("outside-link")).unwrap();
    victim
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn the_manuals_chown_recipe_never_touches_a_symlink_target_or_reads_names_as_options() {
    let s = Scratch::new("webroot-chown");
    let victim = tenant_tree(&s);
    let mut d = Daemon::start(
        &s,
        &recipe(
            &s,
            "chown",
            &[],
            &["--from=root", "www-data:www-data", "%INCLUDE-LIST%"],
        ),
        &[],
    );
    d.wait_ready();
    let src = s.src();
    assert_eq!(owner(&src.join("uploaded")), (WWW, WWW), "{}", d.stderr());
    assert_eq!(
        owner(&src.join("--reference=victim")),
        (WWW, WWW),
        "a name is a name"
    );
    assert_eq!(owner(&src.join("-R")), (WWW, WWW));
    assert_eq!(
        owner(&src.join("evil")),
        (WWW, WWW),
        "the link itself, as chown -h"
    );
    assert_eq!(
        owner(&src.join("dir/linked")),
        (0, 0),
        "a file with two links is never changed"
    );
    // Live: a new symlink to the victim and a dir swapped in.
    std::os::unix::fs::symlink(&victim, src.join("evil2")).unwrap();
    fs::write(src.join("later"), b"x\n").unwrap();
    assert!(
        wait_for(SYNC_TIMEOUT, || owner(&src.join("later")) == (WWW, WWW)),
        "{}",
        d.stderr()
    );
    assert_eq!(
        owner(&victim),
        (0, 0),
        "the victim outside the tree changed owner"
    );
    assert_eq!(fs::read(&victim).unwrap(), b"root:secret\n");
    assert!(
        d.stderr()
            .contains("action=fix-skipped path=dir/linked reason=\"hard links\""),
        "{}",
        d.stderr()
    );
    d.stop();
}

#[test]
fn the_same_attack_works_with_the_external_chown() {
    let s = Scratch::new("webroot-external");
    let victim = tenant_tree(&s);
    let mut d = Daemon::start(
        &s,
        &recipe(
            &s,
            "chown",
            &["--unsafe-external-handler"],
            &["--from=root", "www-data:www-data", "%INCLUDE-LIST%"],
        ),
        &[],
    );
    d.wait_ready();
    assert!(
        d.stderr().contains("--unsafe-external-handler"),
        "the opt-out is loud: {}",
        d.stderr()
    );
    assert_eq!(
        owner(&victim),
        (WWW, WWW),
        "chown follows the tenant's symlink: the attack the fixer stops"
    );
    // Names beginning with '-' still reach chown as ./-name, never as options.
    assert_eq!(owner(&s.src().join("--reference=victim")), (WWW, WWW));
    d.stop();
}

#[test]
fn chmod_recipes_change_modes_in_the_tree_only() {
    let s = Scratch::new("webroot-chmod");
    let victim = tenant_tree(&s);
    let mut d = Daemon::start(
        &s,
        &recipe(&s, "chmod", &[], &["g+w,o-rwx", "%INCLUDE-LIST%"]),
        &[],
    );
    d.wait_ready();
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&s.src().join("uploaded")), 0o660, "{}", d.stderr());
    assert_eq!(mode(&victim), 0o600, "the symlink target kept its mode");
    d.stop();
}

#[test]
fn arguments_the_fixer_does_not_understand_refuse_the_start() {
    let s = Scratch::new("webroot-unknown");
    let mut d = Daemon::start(
        &s,
        &recipe(&s, "chown", &[], &["-R", "www-data", "%INCLUDE-LIST%"]),
        &[],
    );
    let st = d.wait_exit(START_TIMEOUT).expect("did not exit");
    assert_eq!(st.code(), Some(22));
    let err = d.stderr();
    assert!(
        err.contains("\"-R\"") && err.contains("--unsafe-external-handler"),
        "{err}"
    );
}

#[test]
fn the_default_direct_cp_copies_a_tenants_symlink_as_a_symlink() {
    let s = Scratch::new("webroot-cp");
    let victim = s.path("victim");
    fs::write(&victim, b"root:secret\n").unwrap();
    std::os::unix::fs::symlink(&victim, s.src().join("evil")).unwrap();
    fs::write(s.src().join("page"), b"page\n").unwrap();
    // -x1: cp refuses the directories in the list without -r (as with clsync).
    let args: Vec<OsString> = ["-w0", "-t0", "-T0", "-x1", "-H", "/NULL/", "-Mdirect"]
        .iter()
        .map(OsString::from)
        .chain([
            "-W".into(),
            s.src().into_os_string(),
            "-D".into(),
            s.dst().into_os_string(),
        ])
        .collect();
    let mut d = Daemon::start(&s, &args, &[]);
    d.wait_ready();
    assert!(
        wait_for(SYNC_TIMEOUT, || s.dst().join("page").exists()),
        "{}",
        d.stderr()
    );
    let copied = fs::symlink_metadata(s.dst().join("evil")).expect("evil copied");
    assert!(
        copied.file_type().is_symlink(),
        "cp dereferenced the tenant's symlink"
    );
    assert!(
        d.stderr().contains("argv=\"/usr/bin/cp -P "),
        "{}",
        d.stderr()
    );
    d.stop();
}
