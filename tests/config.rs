//! Configuration files (clsync's keyfile format and the native TOML form) merged with the command
//! line, checked through `--check-config`, which validates and prints the effective settings.

mod common;

use common::*;
use std::fs;
use std::process::Command;

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn keyfile_blocks_inheritance_and_command_line_precedence() {
    let s = Scratch::new("conf-keyfile");
    let conf = s.path("clsync.conf");
    fs::write(
        &conf,
        format!(
            "# as in clsync's examples: tabs, comments, comma lists\n\
             [default]\n\
             watch-dir\t= {src}\n\
             mode\t\t= rsyncdirect\n\
             destination-dir\t= {dst}\n\
             delay-sync\t= 7\n\
             ignore-exitcode\t= 23,24\n\
             syslog\t\t= 1\n\
             \n\
             [fast]\n\
             config-block-inherits = default\n\
             delay-sync = 1\n\
             label = fastlbl\n",
            src = s.src().display(),
            dst = s.dst().display()
        ),
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    let (code, out, err) = check_config(&["-H", c]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(line(&out, "mode"), "rsyncdirect");
    assert_eq!(line(&out, "watch-dir"), s.src().display().to_string());
    assert_eq!(line(&out, "delay-sync"), "7");
    assert_eq!(line(&out, "ignore-exitcode"), "23,24");
    assert!(
        err.contains("unknown key \"syslog\""),
        "unknown keys are reported: {err}"
    );
    // -K picks the block, its parent supplies the rest, the command line wins over both.
    let (code, out, err) = check_config(&["-H", c, "-K", "fast", "-w", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(line(&out, "delay-sync"), "3");
    assert_eq!(line(&out, "label"), "fastlbl");
    assert_eq!(line(&out, "destination-dir"), s.dst().display().to_string());
    // -x on the command line replaces the file's list rather than adding to it.
    let (_, out, _) = check_config(&["-H", c, "-x", "5"]);
    assert_eq!(line(&out, "ignore-exitcode"), "5");
}

#[test]
fn keyfile_handler_arguments_follow_the_command_lines() {
    let s = Scratch::new("conf-args");
    let conf = s.path("c.conf");
    fs::write(
        &conf,
        format!(
            "[default]\nwatch-dir = {}\nmode = direct\nsync-handler = /bin/echo\n-- = \"%INCLUDE-LIST%\" 'a b'\n",
            s.src().display()
        ),
    )
    .unwrap();
    let (code, out, err) = check_config(&["-H", conf.to_str().unwrap(), "first"]);
    assert_eq!(code, 0, "{err}");
    // (The handler path is canonicalized: /bin may be a link to /usr/bin.)
    let argv = line(&out, "handler-argv");
    assert!(argv.ends_with("/echo first <paths...> a b"), "{argv}");
}

#[test]
fn toml_rejects_unknown_keys_by_name() {
    let s = Scratch::new("conf-toml");
    let conf = s.path("c.toml");
    fs::write(
        &conf,
        format!(
            "[default]\nwatch-dir = \"{}\"\nmode = \"shell\"\nsync-handler = \"/bin/true\"\ndelay-sync = 2\nexit-on-no-events = true\n",
            s.src().display()
        ),
    )
    .unwrap();
    let (code, out, err) = check_config(&["-H", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(line(&out, "delay-sync"), "2");
    fs::write(&conf, "[default]\nmode = \"shell\"\ndelay-snyc = 2\n").unwrap();
    let (code, _, err) = check_config(&["-H", conf.to_str().unwrap()]);
    assert_eq!(code, 22);
    assert!(err.contains("unknown key \"delay-snyc\""), "{err}");
}

#[test]
fn broken_or_missing_config_files_are_errors_and_a_missing_block_configures_nothing() {
    let s = Scratch::new("conf-bad");
    let (code, _, err) = check_config(&["-H", s.path("missing.conf").to_str().unwrap()]);
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("missing.conf"), "{err}");
    let conf = s.path("cycle.conf");
    fs::write(
        &conf,
        "[a]\nconfig-block-inherits = b\n[b]\nconfig-block-inherits = a\n",
    )
    .unwrap();
    let (code, _, err) = check_config(&["-H", conf.to_str().unwrap(), "-K", "a"]);
    assert_eq!(code, 255);
    assert!(err.contains("cycle: a -> b -> a"), "{err}");
    // As clsync: the file loads, the missing block gives nothing (here with a warning), and the
    // start goes on to what is missing then (the watch dir: clsync's EFAULT).
    let (code, _, err) = check_config(&["-H", conf.to_str().unwrap(), "-K", "nosuch"]);
    assert_eq!(code, 14, "{err}");
    assert!(err.contains("no block [nosuch]"), "{err}");
}

#[test]
fn option_values_expand_other_options_like_clsync() {
    let s = Scratch::new("conf-expand");
    fs::create_dir(s.path("site-a")).unwrap();
    let conf = s.path("c.conf");
    fs::write(
        &conf,
        format!(
            "[lxc]\nwatch-dir = {root}/%label%\nmode = rsyncdirect\ndestination-dir = {dst}\npid-file = {root}/clsync-%label%.pid\n",
            root = s.root().display(),
            dst = s.dst().display()
        ),
    )
    .unwrap();
    let (code, out, err) =
        check_config(&["-H", conf.to_str().unwrap(), "-K", "lxc", "-l", "site-a"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        line(&out, "watch-dir"),
        s.path("site-a").display().to_string()
    );
    let (_, out, _) = check_config(&[
        "-H",
        "/NULL/",
        "-M",
        "rsyncdirect",
        "-W",
        s.src().to_str().unwrap(),
        "-D",
        s.dst().to_str().unwrap(),
        "-l",
        "100%%",
    ]);
    assert_eq!(line(&out, "label"), "100%");
}

#[test]
fn security_options_of_clsync_are_accepted_or_refused_clearly() {
    let s = Scratch::new("conf-security");
    let (src, dst) = (s.src(), s.dst());
    let base = [
        "-H",
        "/NULL/",
        "-M",
        "rsyncdirect",
        "-W",
        src.to_str().unwrap(),
        "-D",
        dst.to_str().unwrap(),
    ];
    let ok = |extra: &[&str]| {
        let a: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        check_config(&a)
    };
    for extra in [
        &["--secure-splitting"][..],
        &[
            "--check-execvp-arguments",
            "--seccomp-filter",
            "--forbid-devices",
        ],
        &[
            "--detach-network=non-privileged",
            "--detach-network=everywhere",
            "--detach-ipc=1",
            "--detach-miscellanea",
        ],
        &["-C", "CAP_DAC_READ_SEARCH,CAP_SETUID,CAP_SETGID,CAP_KILL"],
        &["--monitor=inotify", "--splitting=process"],
        &["--splitting=2"],
        &["--splitting=thread"],
        &["--splitting=1"],
        &["--splitting=off"],
        &["--splitting=0"],
    ] {
        let (code, _, err) = ok(extra);
        assert_eq!(code, 0, "{extra:?}: {err}");
    }
    for (extra, msg) in [
        (&["--monitor=gio"][..], "not available on Linux"),
        (
            &["--detach-network=somewhere"],
            "expected off, non-privileged or everywhere",
        ),
        (
            &["-C", "CAP_SYS_ADMIN"],
            "not one of the helper's capabilities",
        ),
        (&["-C", "CAP_KILL"], "needs all of"),
        (
            &["--splitting=3"],
            "--splitting=3: unknown value; accepted: process or 2 (the default), thread or 1, off or 0",
        ),
        (&["--splitting=bogus"], "--splitting=bogus: unknown value"),
        (
            &["--splitting=off", "--seccomp-filter"],
            "--splitting=off together with --seccomp-filter",
        ),
        (
            &["--secure-splitting", "--splitting=0"],
            "--splitting=off together with --secure-splitting",
        ),
    ] {
        let (code, _, err) = ok(extra);
        assert_eq!(code, 22, "{extra:?}");
        assert!(err.contains(msg), "{extra:?}: {err}");
    }
}

#[test]
fn every_option_is_in_the_man_page_and_the_completions() {
    use clap::CommandFactory;
    let man = fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("man/clsync.1"),
    )
    .unwrap();
    // roff escapes each '-' as "\-".
    let man = man.replace("\\-", "-");
    let out = Command::new(clsync_bin())
        .args(["--completions", "bash"])
        .output()
        .unwrap();
    let bash = String::from_utf8_lossy(&out.stdout);
    let cmd = clsync_rs::cli::Cli::command();
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let Some(long) = a.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        assert!(
            man.contains(&format!("-{long}")),
            "--{long} is not documented in man/clsync.1"
        );
        assert!(
            bash.contains(&format!("--{long}")),
            "--{long} is not in the bash completions"
        );
    }
}

#[test]
fn the_initial_sync_argument_set_comes_from_the_key_triple_dash() {
    let s = Scratch::new("conf-initial-args");
    let conf = s.path("c.conf");
    fs::write(
        &conf,
        format!(
            "[default]\nwatch-dir = {}\nmode = shell\nsync-handler = /bin/echo\nhave-recursive-sync = 1\n--- = rec %label% \"a b\" %INCLUDE-LIST%\n",
            s.src().display()
        ),
    )
    .unwrap();
    let (code, out, err) = check_config(&["-H", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let init = line(&out, "initialsync-argv");
    assert!(
        init.ends_with("/echo rec nolabel a b <absolute dir>"),
        "{init}"
    );
    // The command line's -----= wins; TOML takes an array.
    let (code, out, err) = check_config(&["-H", conf.to_str().unwrap(), "-----=cli %TYPE%"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        line(&out, "initialsync-argv").ends_with("/echo cli initialsync"),
        "{out}"
    );
    let toml = s.path("c.toml");
    fs::write(
        &toml,
        format!(
            "[default]\nwatch-dir = \"{}\"\nmode = \"shell\"\nsync-handler = \"/bin/echo\"\nhave-recursive-sync = true\n\"---\" = [\"t\", \"x \\\"y\", \"%INCLUDE-LIST%\"]\n",
            s.src().display()
        ),
    )
    .unwrap();
    let (code, out, err) = check_config(&["-H", toml.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        line(&out, "initialsync-argv").ends_with("/echo t x \"y <absolute dir>"),
        "{out}"
    );
}

#[test]
fn check_config_prints_the_effective_splitting() {
    let s = Scratch::new("conf-splitting");
    let (src, dst) = (s.src(), s.dst());
    for (v, want) in [
        (None, "process"),
        (Some("process"), "process"),
        (Some("2"), "process"),
        (
            Some("thread"),
            "process (--splitting=thread runs as process",
        ),
        (Some("1"), "process (--splitting=thread runs as process"),
        (Some("off"), "off (the worker is not confined"),
        (Some("0"), "off (the worker is not confined"),
    ] {
        let arg = v.map(|v| format!("--splitting={v}"));
        let mut a = vec![
            "-H",
            "/NULL/",
            "-M",
            "rsyncdirect",
            "-W",
            src.to_str().unwrap(),
            "-D",
            dst.to_str().unwrap(),
        ];
        a.extend(arg.as_deref());
        let (code, out, err) = check_config(&a);
        assert_eq!(code, 0, "{v:?}: {err}");
        let got = line(&out, "splitting");
        assert!(
            got == want || (want.contains('(') && got.starts_with(want)),
            "{v:?}: splitting = {got}"
        );
    }
}

/// clsync options that configure a mechanism this build does not have (fts tuning, clsync's
/// privileged thread, its shared memory, its own seccomp filter, ...): accepted on the command
/// line and as keyfile keys, one info line each saying why nothing changes, and the daemon runs
/// and syncs as without them.
const NOOPS: &[&str] = &[
    "fts-experimental-optimization",
    "forget-privthread-info",
    "shm-mprotect",
    "permit-mprotect",
    "exit-on-sync-skipping",
];

#[test]
fn accepted_no_op_options_log_why_and_the_daemon_still_syncs() {
    let s = Scratch::new("conf-noops");
    let (src, dst) = (s.src(), s.dst());
    let base = [
        "-H",
        "/NULL/",
        "-M",
        "rsyncdirect",
        "-W",
        src.to_str().unwrap(),
        "-D",
        dst.to_str().unwrap(),
    ];
    for opt in NOOPS {
        let flag = format!("--{opt}");
        let a: Vec<&str> = base.iter().copied().chain([flag.as_str()]).collect();
        let (code, _, err) = check_config(&a);
        assert_eq!(code, 0, "{opt}: {err}");
        let info: Vec<&str> = err
            .lines()
            .filter(|l| l.contains(&flag) && l.contains("changes nothing here"))
            .collect();
        assert_eq!(info.len(), 1, "{opt}: one info line expected:\n{err}");
        assert!(info[0].starts_with("Info: "), "{}", info[0]);
        assert!(info[0].contains("sandbox is unaffected"), "{}", info[0]);
        // Without the option: no such line.
        let (_, _, err) = check_config(&base);
        assert!(!err.contains(&flag), "{err}");
    }
    // As keyfile keys (clsync's `key = 1`).
    let conf = s.path("c.conf");
    fs::write(
        &conf,
        format!(
            "[default]\nwatch-dir = {}\nmode = rsyncdirect\ndestination-dir = {}\n{}",
            src.display(),
            dst.display(),
            NOOPS
                .iter()
                .map(|o| format!("{o} = 1\n"))
                .collect::<String>()
        ),
    )
    .unwrap();
    let (code, _, err) = check_config(&["-H", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for opt in NOOPS {
        assert!(err.contains(&format!("--{opt}: accepted")), "{opt}: {err}");
    }
    // The daemon runs with all of them and syncs.
    populate_sample_tree(&src);
    let mut args: Vec<std::ffi::OsString> = rsyncdirect_args(&s, 0, &["--only-initialsync"]);
    args.extend(NOOPS.iter().map(|o| format!("--{o}").into()));
    let (st, err) = run_to_exit(&s, &args, START_TIMEOUT);
    assert_eq!(st.and_then(|st| st.code()), Some(0), "{err}");
    assert_trees_equal(&src, &dst);
}

/// `--add-permitted-hook-files` (clsync: more files its execvp check lets run as `FILE label`
/// hooks) is read as clsync reads it and accepted with an info line, but no listed file is ever
/// run: the helper's exec policy holds only the configured --exit-hook/--pre-exit-hook.
#[test]
fn add_permitted_hook_files_is_read_like_clsync_but_runs_nothing() {
    let s = Scratch::new("conf-permitted-hooks");
    let (src, dst) = (s.src(), s.dst());
    let base = [
        "-H",
        "/NULL/",
        "-M",
        "rsyncdirect",
        "-W",
        src.to_str().unwrap(),
        "-D",
        dst.to_str().unwrap(),
    ];
    let with = |v: &str| {
        let opt = format!("--add-permitted-hook-files={v}");
        let a: Vec<&str> = base.iter().copied().chain([opt.as_str()]).collect();
        check_config(&a)
    };
    for (v, n) in [
        ("/bin/true,/bin/false", 2),
        ("/bin/true", 1),
        // An empty element clears the list (clsync 0.4.5 hangs on an empty last element).
        ("/bin/true,,/bin/false", 1),
        ("/bin/true,", 0),
        ("", 0),
    ] {
        let (code, _, err) = with(v);
        assert_eq!(code, 0, "{v:?}: {err}");
        assert!(
            err.contains(&format!(
                "Info: --add-permitted-hook-files: accepted, changes nothing here: {n} file(s)"
            )),
            "{v:?}: {err}"
        );
    }
    let many = (0..257)
        .map(|i| format!("/h{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let (code, _, err) = with(&many);
    assert_eq!(code, 22, "{err}");
    assert!(err.contains("too many permitted hook files"), "{err}");
    assert_eq!(with(&many[..many.rfind(',').unwrap()]).0, 0, "256 are fine");

    // A run: the listed file is never executed, the configured exit hook is.
    let listed = s.path("listed.sh");
    write_script(
        &listed,
        &format!("#!/bin/sh\ntouch {}\n", s.path("listed-ran").display()),
    );
    let hook = s.path("exit-hook.sh");
    write_script(
        &hook,
        &format!(
            "#!/bin/sh\necho \"$@\" > {}\n",
            s.path("hook-ran").display()
        ),
    );
    let conf = s.path("c.conf");
    fs::write(
        &conf,
        format!(
            "[default]\nadd-permitted-hook-files = {}\nexit-hook = {}\n",
            listed.display(),
            hook.display()
        ),
    )
    .unwrap();
    populate_sample_tree(&src);
    let mut args = rsyncdirect_args(&s, 0, &["--only-initialsync"]);
    let i = args.iter().position(|a| a == "/NULL/").unwrap();
    args[i] = conf.clone().into();
    let (st, err) = run_to_exit(&s, &args, START_TIMEOUT);
    assert_eq!(st.and_then(|st| st.code()), Some(0), "{err}");
    assert!(
        err.contains("--add-permitted-hook-files: accepted"),
        "{err}"
    );
    assert_trees_equal(&src, &dst);
    assert_eq!(
        fs::read_to_string(s.path("hook-ran")).unwrap_or_default(),
        "nolabel\n",
        "the exit hook runs as `hook label`"
    );
    assert!(!s.path("listed-ran").exists(), "a listed file was run");
}

/// `--auto-add-rules-w` and its key: --check-config shows the rules it added, and the rsync
/// modes get clsync's warning.
#[test]
fn auto_add_rules_w_is_shown_and_warned_about_in_rsync_modes() {
    let s = Scratch::new("conf-auto-w");
    let rules = s.path("rules");
    fs::write(&rules, "+f^www/site/index\\.html$\n-*\n").unwrap();
    let conf = s.path("c.conf");
    fs::write(
        &conf,
        format!(
            "[default]\nwatch-dir = {}\nrules-file = {}\nauto-add-rules-w = 1\n",
            s.src().display(),
            rules.display()
        ),
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    let (code, out, err) = check_config(&["-H", c, "-Mshell", "-S", "/bin/true"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        line(&out, "rules").starts_with("5 rules (3 added by --auto-add-rules-w)"),
        "{out}"
    );
    assert!(!err.contains("auto-add-rules-w"), "{err}");
    let (code, out, err) =
        check_config(&["-H", c, "-Mrsyncdirect", "-D", s.dst().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(line(&out, "rules").starts_with("5 rules"), "{out}");
    assert!(
        err.contains("Warning: option \"--auto-add-rules-w\" in modes"),
        "{err}"
    );
    // Without it: the file's two rules.
    let (_, out, _) = check_config(&[
        "-H",
        "/NULL/",
        "-Mshell",
        "-S",
        "/bin/true",
        "-W",
        s.src().to_str().unwrap(),
        "-R",
        rules.to_str().unwrap(),
    ]);
    assert!(line(&out, "rules").starts_with("2 rules from"), "{out}");
}
