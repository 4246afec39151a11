//! The janitor: a tiny process that guarantees nothing the daemon created outlives it, however
//! the worker and the helper end (even by SIGKILL).
//!
//! The helper forks it right after the main fork, while still root. It keeps one fd — the read
//! end of a pipe whose write ends the worker and the helper hold — and blocks in read(2). EOF
//! means both are gone; a byte means the helper is ending in order and has moved the worker out
//! of its cgroup (it then waits for the janitor, so nothing is left when the daemon's pid exits).
//! The byte's value means nothing: no other input exists. Then it kills what is left in the handlers
//! cgroup, removes the daemon's cgroups (the v1 hierarchy roots are mode 0555, so this needs
//! CAP_DAC_OVERRIDE, which the helper does not have) and the helper's private lists directory.
//! It keeps only CAP_DAC_OVERRIDE and CAP_KILL, is not dumpable, and runs the helper's seccomp
//! denylist.
#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::signal::SigSet;

use crate::sandbox::cgroup::DaemonCgroups;
use crate::sys;

pub struct JanitorSetup {
    pub wait: OwnedFd,
    pub cgroups: Option<DaemonCgroups>,
    /// Our private lists directory, removed with its content (None: the administrator's -L, or -U).
    pub lists_dir: Option<PathBuf>,
    /// The pid and status files.
    pub remove_files: Vec<PathBuf>,
    /// The worker, moved out of its cgroup if it still lives (it waits for us).
    pub worker: nix::unistd::Pid,
    /// Kept open until the clean-up is done; the worker waits for its EOF.
    pub done: Option<OwnedFd>,
}

/// Never returns.
pub fn run(s: JanitorSetup) -> ! {
    let mut keep = vec![s.wait.as_raw_fd()];
    keep.extend(s.done.as_ref().map(|d| d.as_raw_fd()));
    keep.extend(crate::log::syslog_fd());
    keep.extend(s.cgroups.iter().flat_map(DaemonCgroups::fds));
    let _ = sys::close_all_except(&keep);
    if let Err(e) = confine() {
        crate::warning!("janitor: {e}");
    }
    // The administrator's signals are for the worker; the janitor ends on its own once both are
    // gone.
    let mut mask = SigSet::empty();
    for sig in crate::sys::ADMIN_SIGNALS {
        mask.add(sig);
    }
    let _ = mask.thread_block();
    // EOF: both are gone. One byte: the helper is cleaning up and asks us to go ahead now.
    let mut b = [0u8; 1];
    while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(&s.wait, &mut b) {}
    if let Some(cg) = s.cgroups {
        if let Err(e) = cg.kill_all_handlers() {
            crate::warning!("janitor: {e}");
        }
        // A worker still alive (it waits for us after losing its helper) goes back to the group
        // it started in, so its own group can go.
        for parent in cg.parent_paths() {
            let _ = std::fs::write(parent.join("cgroup.procs"), s.worker.as_raw().to_string());
        }
        // The worker leaves its group when it has fully exited (or when the helper moved it
        // out): wait for that, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let busy = |cg: &DaemonCgroups| {
            cg.worker_paths().iter().any(|p| {
                std::fs::read_to_string(p.join("cgroup.procs")).is_ok_and(|t| !t.trim().is_empty())
            })
        };
        while busy(&cg) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if let Err(e) = cg.remove() {
            crate::warning!("janitor: {e}");
        }
    }
    for f in &s.remove_files {
        if let Err(e) = std::fs::remove_file(f) {
            if e.kind() != std::io::ErrorKind::NotFound {
                crate::warning!("janitor: cannot remove {}: {e}", f.display());
            }
        }
    }
    if let Some(dir) = s.lists_dir {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                crate::warning!(
                    "janitor: cannot remove the lists dir {}: {e}",
                    dir.display()
                );
            }
        }
    }
    sys::exit_now(0)
}

fn confine() -> Result<(), String> {
    let keep: CapsHashSet = [Capability::CAP_DAC_OVERRIDE, Capability::CAP_KILL]
        .into_iter()
        .collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(|e| e.to_string())?;
    caps::clear(None, CapSet::Ambient).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Effective, &keep).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| e.to_string())?;
    crate::sandbox::caps::set_not_dumpable().map_err(|e| e.to_string())?;
    crate::sandbox::seccomp::install_helper().map_err(|e| e.to_string())?;
    Ok(())
}
