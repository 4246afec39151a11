//! The frozen exec policy: what the helper will run, built from the trusted configuration before
//! the fork and never changed by the worker. An Exec request only *selects* the configured
//! handler and supplies list contents and typed per-call values; the program path, the argument
//! template, the uid, gid and capabilities all come from here.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use caps::Capability;

use crate::config::{Config, Mode};
use crate::handler::fixer::Fixer;
use crate::handler::template::Template;
use crate::privsep::protocol::ListKind;
use crate::privsep::soload::SharedObject;

/// clsync's limit on argv entries of one call; `%INCLUDE-LIST%` calls are split to fit it.
pub const MAX_ARGV: usize = 256;

#[derive(Clone, Debug)]
pub struct ExecPolicy {
    pub program: CString,
    pub template: Template,
    /// Paths in `%INCLUDE-LIST%` are absolute (simple mode) rather than relative.
    pub absolute_paths: bool,
    pub watch_dir: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub caps: Vec<Capability>,
    pub label: String,
    pub keep_lists: bool,
    /// The rules file the helper reads for the worker (ReadRules).
    pub rules_file: Option<std::path::PathBuf>,
    /// --standby-file, checked by the helper for the worker.
    pub standby_file: Option<std::path::PathBuf>,
    /// --dump-dir (absolute, %label% expanded, outside the tree): the only place a Dump
    /// writes; None when dumps are off.
    pub dump_dir: Option<std::path::PathBuf>,
    /// --modification-signature field mask (0: off); the helper digests these stat fields.
    pub signature: u16,
    /// The built-in fixer that replaces a recognised chown/chgrp/chmod handler.
    pub fixer: Option<Fixer>,
    /// Modes so and rsyncso: the shared object a handler child loads instead of an exec.
    pub shared_object: Option<SharedObject>,
    /// --have-recursive-sync: calls of type initialsync (one absolute path) are allowed, with
    /// this template (clsync's `---` argument set, or the primary one).
    pub have_recursive_sync: bool,
    pub initial_template: Template,
    /// Hooks, run as `[hook, label]` with the handler's identity.
    pub pre_exit_hook: Option<CString>,
    pub exit_hook: Option<CString>,
}

/// clsync's default `---` set for mode shell (used with --have-recursive-sync).
pub const DEFAULT_INITIAL_ARGS: [&str; 3] = ["initialsync", "%label%", "%INCLUDE-LIST%"];

/// The default handler arguments of each mode (clsync 0.4.5's, see the man page).
pub fn default_args(mode: Mode, prefer_include: bool) -> Vec<&'static str> {
    match mode {
        Mode::RsyncShell if prefer_include => vec!["rsynclist", "%label%", "%INCLUDE-LIST-PATH%"],
        Mode::RsyncDirect if prefer_include => vec![
            "-aH",
            "--delete",
            "--modify-window=-1",
            "--include-from",
            "%INCLUDE-LIST-PATH%",
            "--exclude=*",
            "%watch-dir%/",
            "%destination-dir%/",
        ],
        Mode::Simple => vec!["sync", "%label%", "%EVENT-MASK%", "%INCLUDE-LIST%"],
        Mode::Direct => vec!["%INCLUDE-LIST%", "%destination-dir%/"],
        Mode::Shell => vec!["synclist", "%label%", "%INCLUDE-LIST-PATH%"],
        Mode::RsyncShell => vec![
            "rsynclist",
            "%label%",
            "%INCLUDE-LIST-PATH%",
            "%EXCLUDE-LIST-PATH%",
        ],
        // clsync's argv plus --modify-window=-1: rsync's quick check otherwise compares whole
        // seconds, so a file rewritten with the same size in the second of its last sync is
        // skipped and the change is lost (clsync 0.4.5 loses it).
        Mode::RsyncDirect => vec![
            "-aH",
            "--delete",
            "--modify-window=-1",
            "--exclude-from",
            "%EXCLUDE-LIST-PATH%",
            "--include-from",
            "%INCLUDE-LIST-PATH%",
            "--exclude=*",
            "%watch-dir%/",
            "%destination-dir%/",
        ],
        // No argv: the shared object's function is called. rsyncso's "template" only names the
        // list files clsyncapi_rsync gets, so Exec carries exactly those.
        Mode::So => vec![],
        Mode::RsyncSo if prefer_include => vec!["%INCLUDE-LIST-PATH%"],
        Mode::RsyncSo => vec!["%INCLUDE-LIST-PATH%", "%EXCLUDE-LIST-PATH%"],
    }
}

impl ExecPolicy {
    pub fn from_config(cfg: &Config) -> ExecPolicy {
        let program = CString::new(cfg.handler.as_os_str().as_bytes()).unwrap_or_default();
        let watch_dir = cfg.watch_dir.as_os_str().as_bytes().to_vec();
        let lower = |name: &str| -> Option<Vec<u8>> {
            match name {
                "label" => Some(cfg.label.clone().into_bytes()),
                "watch-dir" => Some(watch_dir.clone()),
                "destination-dir" => cfg.destination.clone().map(String::into_bytes),
                "sync-handler" => Some(cfg.handler.as_os_str().as_bytes().to_vec()),
                "mode" => Some(cfg.mode.name().as_bytes().to_vec()),
                _ => None,
            }
        };
        let mut args: Vec<Vec<u8>> = match &cfg.handler_args {
            Some(a) if !cfg.mode.is_so() => a.clone(),
            _ => default_args(cfg.mode, cfg.prefer_include)
                .into_iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        };
        // The default direct handler is cp: with a tenant's symlink `evil -> /etc/shadow` among
        // the paths, plain cp copies the target's content out. -P: never dereference.
        if cfg.mode == Mode::Direct
            && cfg.handler_args.is_none()
            && cfg.handler.file_name().is_some_and(|n| n == "cp")
        {
            args.insert(0, b"-P".to_vec());
        }
        let template = Template::parse(&args, cfg.prefer_include, &lower);
        // --have-recursive-sync calls: clsync's `---` set; without one, shell's default
        // `initialsync %label% %INCLUDE-LIST%` when no handler arguments were given at all,
        // otherwise the primary set (%TYPE% is then `initialsync`).
        let initial_template = match (&cfg.initial_args, cfg.mode) {
            (Some(a), _) => Template::parse(a, cfg.prefer_include, &lower),
            (None, Mode::Shell) if cfg.handler_args.is_none() => {
                let a: Vec<Vec<u8>> = DEFAULT_INITIAL_ARGS
                    .iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect();
                Template::parse(&a, cfg.prefer_include, &lower)
            }
            _ => template.clone(),
        };
        ExecPolicy {
            program,
            template,
            absolute_paths: cfg.mode == Mode::Simple,
            watch_dir: watch_dir.clone(),
            uid: cfg.handler_uid,
            gid: cfg.handler_gid,
            caps: cfg.handler_caps.clone(),
            label: cfg.label.clone(),
            keep_lists: cfg.keep_lists,
            rules_file: cfg.rules_file.clone(),
            fixer: cfg.fixer.clone(),
            shared_object: cfg.shared_object.clone(),
            have_recursive_sync: cfg.have_recursive_sync,
            initial_template,
            signature: cfg.modification_signature,
            standby_file: cfg.standby_file.clone(),
            dump_dir: cfg.dump_dir.clone(),
            pre_exit_hook: cfg
                .pre_exit_hook
                .as_ref()
                .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok()),
            exit_hook: cfg
                .exit_hook
                .as_ref()
                .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok()),
        }
    }

    /// The list files the template needs, in order. An Exec must send exactly these.
    pub fn lists(&self) -> Vec<ListKind> {
        self.template.lists()
    }

    /// Most paths one call may carry (0 when the template takes none).
    pub fn max_paths(&self) -> usize {
        if self.template.takes_paths() {
            MAX_ARGV
                .saturating_sub(1 + self.template.fixed_len())
                .max(1)
        } else {
            0
        }
    }
}
