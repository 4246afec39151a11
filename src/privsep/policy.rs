//! The frozen exec policy: what the helper will run, built from the trusted configuration before
//! the fork and never changed by the worker. An Exec request only *selects* a configured handler
//! and supplies list contents; every program path, argument, uid, gid and capability comes from
//! here.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use caps::Capability;

use crate::config::{Config, Mode};
use crate::privsep::protocol::ListKind;

/// One element of an argument template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    Lit(CString),
    /// Replaced by the path of the list file the helper wrote for this job.
    List(ListKind),
}

#[derive(Clone, Debug)]
pub struct ExecPolicy {
    pub program: CString,
    pub argv: Vec<Arg>,
    pub uid: u32,
    pub gid: u32,
    pub caps: Vec<Capability>,
    pub label: String,
    pub keep_lists: bool,
}

fn lit(s: &str) -> Arg {
    // Only administrator-supplied strings get here; an embedded NUL cannot come from a C argv.
    Arg::Lit(CString::new(s).unwrap_or_default())
}

fn lit_bytes(b: &[u8]) -> Arg {
    Arg::Lit(CString::new(b).unwrap_or_default())
}

impl ExecPolicy {
    pub fn from_config(cfg: &Config) -> ExecPolicy {
        let program = CString::new(cfg.handler.as_os_str().as_bytes()).unwrap_or_default();
        let argv = match cfg.mode {
            // clsync's rsyncdirect argv: rsync -aH --delete --exclude-from L --include-from L
            // --exclude=* W/ D/, plus --modify-window=-1: rsync's quick check otherwise compares
            // whole seconds, so a file rewritten with the same size in the second of its last
            // sync is skipped and the change is lost (clsync 0.4.5 loses it).
            Mode::RsyncDirect => {
                let mut w = cfg.watch_dir.as_os_str().as_bytes().to_vec();
                w.push(b'/');
                let mut d = cfg.destination.clone().unwrap_or_default().into_bytes();
                if !d.ends_with(b"/") {
                    d.push(b'/');
                }
                vec![
                    Arg::Lit(program.clone()),
                    lit("-aH"),
                    lit("--delete"),
                    lit("--modify-window=-1"),
                    lit("--exclude-from"),
                    Arg::List(ListKind::Exclude),
                    lit("--include-from"),
                    Arg::List(ListKind::Include),
                    lit("--exclude=*"),
                    lit_bytes(&w),
                    lit_bytes(&d),
                ]
            }
        };
        ExecPolicy {
            program,
            argv,
            uid: cfg.handler_uid,
            gid: cfg.handler_gid,
            caps: cfg.handler_caps.clone(),
            label: cfg.label.clone(),
            keep_lists: cfg.keep_lists,
        }
    }

    /// The list files the template needs, in template order. An Exec must send exactly these.
    pub fn lists(&self) -> Vec<ListKind> {
        self.argv
            .iter()
            .filter_map(|a| match a {
                Arg::List(k) => Some(*k),
                Arg::Lit(_) => None,
            })
            .collect()
    }
}
