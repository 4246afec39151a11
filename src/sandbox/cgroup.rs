//! The daemon's cgroups: `<current>/<name>/worker` and `<current>/<name>/handlers`, created
//! relative to this process's current cgroup in every relevant hierarchy:
//! - cgroup v1 hierarchies that carry the `pids` or `memory` controller (each may place us at a
//!   different path: on the test machines pids is at `/` and memory at `/process_api/<id>`);
//! - the cgroup2 hierarchy, wherever it is mounted: in pure v2 (`/sys/fs/cgroup`) it carries the
//!   limits; in a hybrid layout (`/sys/fs/cgroup/unified`) it usually has no controllers but still
//!   gives process tracking and `cgroup.kill`, so handlers can be killed as a group.
//!
//! cgroups-rs 0.3 is used for reading `/proc/self/cgroup` only. Its group handling does not fit
//! here: `Cgroup::create` panics on an unexpected path and ignores mkdir failures (it only logs),
//! a v1 hierarchy handle always spans *every* mounted controller (with relative paths we cannot
//! restrict it to pids and memory), its v2 mode creates groups below the mount root instead of
//! below our current group and ignores a hybrid `unified` mount, and it has no way to join a
//! group from a forked child without allocating. So directories and control files are handled
//! with plain file operations, which also keeps the errno for the error messages.

use super::{io_errno, Result, SandboxError};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Resource limits of one group. `None` leaves the limit unset (inherited from above).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of processes and threads (`pids.max`).
    pub pids_max: Option<u64>,
    /// Maximum memory in bytes (`memory.max` in v2, `memory.limit_in_bytes` in v1).
    pub memory_max: Option<u64>,
}

/// One hierarchy we created groups in.
#[derive(Debug)]
struct Hier {
    /// `None` for cgroup2, else the v1 controllers we use in it (`pids`, `memory`).
    v1_controllers: Option<Vec<String>>,
    /// The hierarchy's mount point (the prefix of `current` and `base`).
    mount: PathBuf,
    /// `<mount point>/<current group>`.
    current: PathBuf,
    /// `<current>/<name>`.
    base: PathBuf,
}

impl Hier {
    fn is_v2(&self) -> bool {
        self.v1_controllers.is_none()
    }
    fn worker(&self) -> PathBuf {
        self.base.join("worker")
    }
    fn handlers(&self) -> PathBuf {
        self.base.join("handlers")
    }
}

/// The daemon's worker and handlers groups.
///
/// Dropping it removes the groups (best effort) unless [`DaemonCgroups::disarm`] was called:
/// after fork, exactly one process must own the cleanup (the helper in the design); the other
/// copy must be disarmed.
#[derive(Debug)]
pub struct DaemonCgroups {
    hiers: Vec<Hier>,
    /// `<handlers>/cgroup.procs` of every hierarchy, prepared so that joining from a forked
    /// child needs no allocation.
    handlers_procs: Vec<CString>,
    /// Directories created so far, in creation order (removal goes in reverse).
    created: Vec<PathBuf>,
    armed: bool,
    /// After [`DaemonCgroups::anchor`]: an O_PATH descriptor of every hierarchy's mount point,
    /// through which all the paths above go (`/proc/self/fd/N/...`).
    anchors: Vec<std::os::fd::OwnedFd>,
}

/// A mounted cgroup hierarchy from `/proc/self/mountinfo`.
struct Mount {
    root: String,
    mount_point: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

/// Undo mountinfo's octal escapes (`\040` for a space and so on).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn cgroup_mounts() -> Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| SandboxError::path("reading", "/proc/self/mountinfo", &e))?;
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let (fstype, superopts) = (r[0], r[2]);
        let v2 = fstype == "cgroup2";
        if !v2 && fstype != "cgroup" {
            continue;
        }
        let controllers: Vec<String> = superopts
            .split(',')
            .filter(|o| *o == "pids" || *o == "memory")
            .map(str::to_string)
            .collect();
        if !v2 && controllers.is_empty() {
            continue;
        }
        // The same hierarchy may be mounted more than once: keep the first.
        if mounts
            .iter()
            .any(|m: &Mount| m.v2 == v2 && m.controllers == controllers)
        {
            continue;
        }
        mounts.push(Mount {
            root: unescape(l[3]),
            mount_point: PathBuf::from(unescape(l[4])),
            v2,
            controllers,
        });
    }
    Ok(mounts)
}

/// `<mount point>/<our group relative to the mount's root>`, or None if our group is not
/// visible below this mount.
fn current_dir(m: &Mount, rel: &HashMap<String, String>) -> Option<PathBuf> {
    let key = if m.v2 {
        String::new()
    } else {
        m.controllers.first()?.clone()
    };
    let cur = rel.get(&key)?;
    let cur = cur
        .strip_prefix(m.root.trim_end_matches('/'))
        .unwrap_or(cur);
    if !cur.is_empty() && !cur.starts_with('/') {
        return None;
    }
    if cur.split('/').any(|c| c == "..") {
        return None;
    }
    Some(m.mount_point.join(cur.trim_start_matches('/')))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0', '\n'])
        && name.len() <= 200
}

fn write_file(path: &Path, value: &str, step: &'static str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| SandboxError::path(step, path, &e))
}

fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn rmdir_retry(dir: &Path) -> std::io::Result<()> {
    // rmdir can fail with EBUSY for a moment after the last process left (v1 releases the css
    // asynchronously): retry briefly.
    let mut last = Ok(());
    for i in 0..10 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if io_errno(&e) == Errno::EBUSY => {
                last = Err(e);
                std::thread::sleep(Duration::from_millis(5 << i.min(4)));
            }
            Err(e) => return Err(e),
        }
    }
    last
}

impl DaemonCgroups {
    /// Create `<current>/<name>/worker` and `<current>/<name>/handlers` in every relevant
    /// hierarchy and apply the limits. Returns warnings for limits that could not be applied
    /// (the caller logs them); a hard error leaves nothing behind.
    pub fn create(
        name: &str,
        worker: Limits,
        handlers: Limits,
    ) -> Result<(DaemonCgroups, Vec<String>)> {
        if !valid_name(name) {
            return Err(SandboxError::Cgroup(format!(
                "invalid group name {name:?}: it must be one path component without '/'"
            )));
        }
        let rel = cgroups_rs::cgroup::get_cgroups_relative_paths()
            .map_err(|e| SandboxError::Cgroup(format!("reading /proc/self/cgroup: {e}")))?;
        let mounts = cgroup_mounts()?;
        let mut warnings = Vec::new();
        let mut cg = DaemonCgroups {
            hiers: Vec::new(),
            handlers_procs: Vec::new(),
            created: Vec::new(),
            armed: true,
            anchors: Vec::new(),
        };
        let v1_has = |c: &str| {
            mounts
                .iter()
                .any(|m| !m.v2 && m.controllers.iter().any(|x| x == c))
        };
        let want_pids = worker.pids_max.is_some() || handlers.pids_max.is_some();
        let want_mem = worker.memory_max.is_some() || handlers.memory_max.is_some();
        if mounts.is_empty() {
            return Err(SandboxError::Cgroup(
                "no cgroup hierarchy is mounted (neither cgroup2 nor v1 pids/memory)".into(),
            ));
        }
        for m in &mounts {
            let Some(current) = current_dir(m, &rel) else {
                warnings.push(format!(
                    "cgroup hierarchy at {} does not show our current group; not used",
                    m.mount_point.display()
                ));
                continue;
            };
            let base = current.join(name);
            let v1_controllers = (!m.v2).then(|| m.controllers.clone());
            // Controllers to enable in v2: the wanted ones no v1 hierarchy provides.
            let mut v2_enabled: Vec<&str> = Vec::new();
            if m.v2 {
                let mut wanted = Vec::new();
                if want_pids && !v1_has("pids") {
                    wanted.push("pids");
                }
                if want_mem && !v1_has("memory") {
                    wanted.push("memory");
                }
                v2_enabled = enable_v2_controllers(&current, &wanted, &mut warnings);
            }
            cg.make_dir(&base)?;
            if m.v2 && !v2_enabled.is_empty() {
                let body: Vec<String> = v2_enabled.iter().map(|c| format!("+{c}")).collect();
                write_file(
                    &base.join("cgroup.subtree_control"),
                    &body.join(" "),
                    "enabling controllers in",
                )?;
            }
            let h = Hier {
                v1_controllers,
                mount: m.mount_point.clone(),
                current,
                base,
            };
            cg.make_dir(&h.worker())?;
            cg.make_dir(&h.handlers())?;
            for (dir, lim) in [(h.worker(), worker), (h.handlers(), handlers)] {
                apply_limits(&h, &dir, lim, &v2_enabled)?;
            }
            // Handlers join every hierarchy but a v1 memory-only one when they have no memory
            // limit: moving a task between v1 memory groups can stall for milliseconds (charge
            // migration), which would land on every sync's latency, for no limit at all.
            let memory_only = h
                .v1_controllers
                .as_ref()
                .is_some_and(|c| c.iter().all(|x| x == "memory"));
            if !(memory_only && handlers.memory_max.is_none()) {
                let procs = h.handlers().join("cgroup.procs");
                let c = CString::new(procs.as_os_str().as_bytes()).map_err(|_| {
                    SandboxError::Cgroup(format!("path with NUL byte: {}", procs.display()))
                })?;
                cg.handlers_procs.push(c);
            }
            cg.hiers.push(h);
        }
        if cg.hiers.is_empty() {
            return Err(SandboxError::Cgroup(
                "no usable cgroup hierarchy: our current group is not visible in any mount".into(),
            ));
        }
        for (wanted, c) in [(want_pids, "pids"), (want_mem, "memory")] {
            let have = cg.hiers.iter().any(|h| match &h.v1_controllers {
                Some(v) => v.iter().any(|x| x == c),
                None => h.base.join(format!("worker/{c}.max")).exists(),
            });
            if wanted && !have {
                warnings.push(format!(
                    "no {c} limit is applied: no cgroup hierarchy provides the {c} controller to us"
                ));
            }
        }
        Ok((cg, warnings))
    }

    /// mkdir, recording it for removal; a stale empty group of the same name (from a crashed
    /// run) is replaced, one in use is an error.
    fn make_dir(&mut self, dir: &Path) -> Result<()> {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Only a group nobody uses is replaced: look at every level before removing
                // anything, so a live daemon with the same name keeps its (empty) handlers.
                let in_use = ["handlers", "worker", ""]
                    .iter()
                    .map(|sub| read_pids(&dir.join(sub).join("cgroup.procs")).len())
                    .sum::<usize>();
                let busy = || {
                    SandboxError::Cgroup(format!(
                        "{} already exists and is in use: is another clsync with the same \
                         cgroup name running?",
                        dir.display()
                    ))
                };
                if in_use != 0 {
                    return Err(busy());
                }
                for sub in ["handlers", "worker"] {
                    let _ = std::fs::remove_dir(dir.join(sub));
                }
                std::fs::remove_dir(dir).map_err(|e| {
                    SandboxError::Cgroup(format!(
                        "{} already exists (stale from an earlier run?) and cannot be removed: \
                         {}",
                        dir.display(),
                        io_errno(&e)
                    ))
                })?;
                std::fs::create_dir(dir)
                    .map_err(|e| SandboxError::path("creating cgroup", dir, &e))?;
            }
            Err(e) => return Err(SandboxError::path("creating cgroup", dir, &e)),
        }
        self.created.push(dir.to_path_buf());
        Ok(())
    }

    /// Move process `pid` (the worker) into `<name>/worker` in every hierarchy.
    pub fn add_worker(&self, pid: u32) -> Result<()> {
        for h in &self.hiers {
            write_file(
                &h.worker().join("cgroup.procs"),
                &pid.to_string(),
                "moving the worker into",
            )?;
        }
        Ok(())
    }

    /// Move the calling process into `<name>/handlers` in every hierarchy. Made for a freshly
    /// forked child before exec: only open/write/close on paths prepared at creation, no
    /// allocation (except to describe an error).
    pub fn enter_handlers_self(&self) -> Result<()> {
        for p in &self.handlers_procs {
            // SAFETY: `p` is a valid NUL-terminated path.
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(SandboxError::last_os(|| {
                    format!("opening {}", p.to_string_lossy())
                }));
            }
            // "0" means the writing process itself, in v1 and v2.
            // SAFETY: writing one byte from a static buffer to the descriptor opened above.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            let errno = Errno::last();
            // SAFETY: closing the descriptor opened above.
            unsafe { libc::close(fd) };
            if n != 1 {
                return Err(SandboxError::sys(
                    format!("joining the handlers cgroup via {}", p.to_string_lossy()),
                    errno,
                ));
            }
        }
        Ok(())
    }

    /// Hand the created groups to `uid:gid` (the helper's privileged ids), so a non-root helper
    /// can move handlers in, kill them and remove the leaf groups.
    pub fn chown(&self, uid: u32, gid: u32) -> Result<()> {
        for h in &self.hiers {
            for dir in [h.base.clone(), h.worker(), h.handlers()] {
                let mut files = vec![dir.clone(), dir.join("cgroup.procs")];
                if h.is_v2() && dir.join("cgroup.kill").exists() {
                    files.push(dir.join("cgroup.kill"));
                }
                for f in files {
                    std::os::unix::fs::chown(&f, Some(uid), Some(gid))
                        .map_err(|e| SandboxError::path("chown of", &f, &e))?;
                }
            }
        }
        Ok(())
    }

    /// Kill every process in `<name>/handlers`: `cgroup.kill` where a cgroup2 hierarchy has it,
    /// and SIGKILL to every pid listed in `cgroup.procs` of every hierarchy, repeated until all
    /// are empty (bounded at about one second). Reaping stays with the caller (the parent).
    pub fn kill_all_handlers(&self) -> Result<()> {
        for h in self.hiers.iter().filter(|h| h.is_v2()) {
            let k = h.handlers().join("cgroup.kill");
            if k.exists() {
                write_file(&k, "1", "writing")?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let mut left = Vec::new();
            for h in &self.hiers {
                left.extend(read_pids(&h.handlers().join("cgroup.procs")));
            }
            left.sort_unstable();
            left.dedup();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Cgroup(format!(
                    "handlers still running 1 s after SIGKILL (pids {left:?}); a process in \
                     uninterruptible sleep (D state, e.g. a hung network filesystem) cannot \
                     die until its I/O ends"
                )));
            }
            for pid in left {
                match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => return Err(SandboxError::sys(format!("kill({pid}, SIGKILL)"), e)),
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Remove `handlers`, `worker` and `<name>` in every hierarchy. Every directory is tried
    /// even if one fails; a group that still holds processes is reported, not forced.
    pub fn remove(mut self) -> Result<()> {
        self.armed = false;
        let failures = self.remove_all();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::Cgroup(format!(
                "cannot remove {} (kill the processes in it first, e.g. with kill_all_handlers)",
                failures.join(", ")
            )))
        }
    }

    fn remove_all(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        while let Some(dir) = self.created.pop() {
            if let Err(e) = rmdir_retry(&dir) {
                let n = read_pids(&dir.join("cgroup.procs")).len();
                failures.push(format!(
                    "{}: {} ({n} processes in it)",
                    dir.display(),
                    io_errno(&e)
                ));
            }
        }
        failures
    }

    /// Makes the groups reachable whatever happens to the mount table or the root afterwards
    /// (--chroot, --pivot-root, --mountpoints): opens every hierarchy's mount point (O_PATH) and
    /// rewrites every path to go through `/proc/self/fd/N`. The descriptors are close-on-exec;
    /// a process that keeps using the groups must keep [`DaemonCgroups::fds`] open (same numbers
    /// after fork) and have a procfs on /proc.
    pub fn anchor(&mut self) -> Result<()> {
        use nix::fcntl::{open, OFlag};
        use std::os::fd::AsRawFd;
        let mut rewritten: Vec<(PathBuf, PathBuf)> = Vec::new();
        for h in &mut self.hiers {
            let fd = open(
                &h.mount,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| SandboxError::sys(format!("opening {}", h.mount.display()), e))?;
            let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            let re = |p: &Path| match p.strip_prefix(&h.mount) {
                Ok(rel) => via.join(rel),
                Err(_) => p.to_path_buf(),
            };
            h.current = re(&h.current);
            h.base = re(&h.base);
            rewritten.push((h.mount.clone(), via.clone()));
            h.mount = via;
            self.anchors.push(fd);
        }
        // Longest mount point first: a v2 mount below a v1 one must not match the v1 prefix.
        rewritten.sort_by_key(|(m, _)| std::cmp::Reverse(m.as_os_str().len()));
        for c in &mut self.created {
            if let Some((m, via)) = rewritten.iter().find(|(m, _)| c.starts_with(m)) {
                let rel = c.strip_prefix(m).unwrap_or(Path::new("")).to_path_buf();
                *c = via.join(rel);
            }
        }
        for p in &mut self.handlers_procs {
            let old = PathBuf::from(std::ffi::OsStr::from_bytes(p.as_bytes()));
            if let Some((m, via)) = rewritten.iter().find(|(m, _)| old.starts_with(m)) {
                let new = via.join(old.strip_prefix(m).unwrap_or(Path::new("")));
                *p = CString::new(new.as_os_str().as_bytes()).map_err(|_| {
                    SandboxError::Cgroup(format!("path with NUL byte: {}", new.display()))
                })?;
            }
        }
        Ok(())
    }

    /// The descriptors [`DaemonCgroups::anchor`] opened (empty if it was not called).
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.anchors.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Keep the groups when this copy is dropped (the other process after fork owns them).
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// `<current>/<name>` in every hierarchy used.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.hiers.iter().map(|h| h.base.clone()).collect()
    }

    /// The worker group's directory in every hierarchy.
    pub fn worker_paths(&self) -> Vec<PathBuf> {
        self.hiers.iter().map(Hier::worker).collect()
    }

    /// The handlers group's directory in every hierarchy.
    pub fn handlers_paths(&self) -> Vec<PathBuf> {
        self.hiers.iter().map(Hier::handlers).collect()
    }

    /// The current groups the daemon's groups were created under.
    pub fn parent_paths(&self) -> Vec<PathBuf> {
        self.hiers.iter().map(|h| h.current.clone()).collect()
    }
}

impl Drop for DaemonCgroups {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.remove_all();
        }
    }
}

/// Enable `wanted` v2 controllers for the children of `current`. Returns those that are now
/// enabled (so `<name>` can pass them on); explains the others in `warnings`.
fn enable_v2_controllers<'a>(
    current: &Path,
    wanted: &[&'a str],
    warnings: &mut Vec<String>,
) -> Vec<&'a str> {
    if wanted.is_empty() {
        return Vec::new();
    }
    let available = std::fs::read_to_string(current.join("cgroup.controllers")).unwrap_or_default();
    let enabled =
        std::fs::read_to_string(current.join("cgroup.subtree_control")).unwrap_or_default();
    let mut ok = Vec::new();
    for c in wanted {
        if !available.split_whitespace().any(|x| x == *c) {
            warnings.push(format!(
                "cgroup v2: the {c} controller is not available in {} (cgroup.controllers); \
                 worker and handlers get no {c} limit. Ask the administrator to delegate it \
                 (systemd: Delegate=yes in the unit).",
                current.display()
            ));
            continue;
        }
        if enabled.split_whitespace().any(|x| x == *c) {
            ok.push(*c);
            continue;
        }
        match std::fs::write(current.join("cgroup.subtree_control"), format!("+{c}")) {
            Ok(()) => ok.push(*c),
            Err(e) => {
                let errno = io_errno(&e);
                let why = if errno == Errno::EBUSY {
                    "EBUSY: the current group holds processes, and cgroup v2 allows controllers \
                     below a group only when it has none"
                        .to_string()
                } else {
                    errno.to_string()
                };
                warnings.push(format!(
                    "cgroup v2: cannot enable the {c} controller in {}/cgroup.subtree_control \
                     ({why}); the worker and handlers groups are created without {c} limits. \
                     To get them, start clsync in a cgroup of its own: systemd Delegate=yes \
                     with DelegateSubgroup= (or a leaf group the service moves into), or run \
                     it from an otherwise empty group.",
                    current.display()
                ));
            }
        }
    }
    ok
}

fn apply_limits(h: &Hier, dir: &Path, lim: Limits, v2_enabled: &[&str]) -> Result<()> {
    match &h.v1_controllers {
        Some(ctrls) => {
            if let (Some(n), true) = (lim.pids_max, ctrls.iter().any(|c| c == "pids")) {
                write_file(&dir.join("pids.max"), &n.to_string(), "setting")?;
            }
            if let (Some(n), true) = (lim.memory_max, ctrls.iter().any(|c| c == "memory")) {
                write_file(
                    &dir.join("memory.limit_in_bytes"),
                    &n.to_string(),
                    "setting",
                )?;
            }
        }
        None => {
            if let (Some(n), true) = (lim.pids_max, v2_enabled.contains(&"pids")) {
                write_file(&dir.join("pids.max"), &n.to_string(), "setting")?;
            }
            if let (Some(n), true) = (lim.memory_max, v2_enabled.contains(&"memory")) {
                write_file(&dir.join("memory.max"), &n.to_string(), "setting")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::testutil::*;
    use nix::sys::wait::waitpid;
    use nix::unistd::{fork, ForkResult};
    use std::os::fd::{AsRawFd, OwnedFd};

    fn unique(tag: &str) -> String {
        format!("clsync-test-{tag}-{}", std::process::id())
    }

    /// Fork a child that runs `setup` (syscalls only), reports its result byte on a pipe and
    /// then waits to be killed. Returns the pid once the child reported.
    fn parked_child(setup: impl FnOnce() -> bool) -> (Pid, u8) {
        let (rd, wr): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // SAFETY: the child only makes syscalls and never returns (pause until killed, _exit).
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let b: u8 = if setup() { b'1' } else { b'0' };
                child_write(wr.as_raw_fd(), &[b]);
                loop {
                    // SAFETY: waiting for a signal; the test kills us.
                    unsafe { libc::pause() };
                }
            }
            ForkResult::Parent { child } => {
                drop(wr);
                let mut b = [0u8; 1];
                let n = nix::unistd::read(&rd, &mut b).unwrap();
                assert_eq!(n, 1);
                (child, b[0])
            }
        }
    }

    fn cgroup_of(pid: Pid) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap()
    }

    #[test]
    fn name_must_be_one_component() {
        for bad in ["", ".", "..", "a/b", "x\ny"] {
            assert!(DaemonCgroups::create(bad, Limits::default(), Limits::default()).is_err());
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\"), "/end\\");
    }

    #[test]
    fn create_limit_join_kill_remove() {
        let name = unique("full");
        let worker = Limits {
            pids_max: Some(64),
            memory_max: Some(256 << 20),
        };
        let handlers = Limits {
            pids_max: Some(128),
            memory_max: Some(512 << 20),
        };
        let (cg, warnings) = DaemonCgroups::create(&name, worker, handlers).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        // Created below our *current* memory group, not at the hierarchy root.
        let rel = cgroups_rs::cgroup::get_cgroups_relative_paths().unwrap();
        let mem_cur = rel.get("memory").cloned().unwrap_or_default();
        let mem_base = PathBuf::from("/sys/fs/cgroup/memory")
            .join(mem_cur.trim_start_matches('/'))
            .join(&name);
        assert!(
            cg.paths().contains(&mem_base),
            "{:?} not in {:?}",
            mem_base,
            cg.paths()
        );
        assert_eq!(
            std::fs::read_to_string(mem_base.join("worker/memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            (256u64 << 20).to_string()
        );
        let pids_base = PathBuf::from("/sys/fs/cgroup/pids").join(&name);
        assert_eq!(
            std::fs::read_to_string(pids_base.join("handlers/pids.max"))
                .unwrap()
                .trim(),
            "128"
        );
        assert_eq!(
            std::fs::read_to_string(pids_base.join("worker/pids.max"))
                .unwrap()
                .trim(),
            "64"
        );

        // A worker moved in by pid, a handler that joins itself after fork.
        let (w, _) = parked_child(|| true);
        cg.add_worker(w.as_raw() as u32).unwrap();
        let (h, ok) = parked_child(|| cg.enter_handlers_self().is_ok());
        assert_eq!(ok, b'1');
        let wc = cgroup_of(w);
        let hc = cgroup_of(h);
        assert!(
            wc.contains(&format!(
                "memory:{}/{name}/worker",
                mem_cur.trim_end_matches('/')
            )),
            "{wc}"
        );
        assert!(wc.contains(&format!("pids:/{name}/worker")), "{wc}");
        assert!(hc.contains(&format!("pids:/{name}/handlers")), "{hc}");
        assert!(hc.contains(&format!("{name}/handlers")), "{hc}");

        // Kill the handlers. Not yet reaped (zombies leave cgroup.procs), as in the
        // single-threaded helper, which reaps later in its event loop.
        cg.kill_all_handlers().unwrap();
        let st = waitpid(h, None).unwrap();
        assert_eq!(signaled(&st), Some(Signal::SIGKILL));
        kill(w, Signal::SIGKILL).unwrap();
        waitpid(w, None).unwrap();

        let paths = cg.paths();
        cg.remove().unwrap();
        for p in paths {
            assert!(!p.exists(), "{} left behind", p.display());
        }
    }

    #[test]
    fn remove_refuses_a_group_in_use_and_drop_cleans_up() {
        let name = unique("busy");
        let (cg, _) = DaemonCgroups::create(&name, Limits::default(), Limits::default()).unwrap();
        let paths = cg.paths();
        let (w, _) = parked_child(|| true);
        cg.add_worker(w.as_raw() as u32).unwrap();
        let err = cg.remove().unwrap_err().to_string();
        assert!(err.contains("EBUSY"), "{err}");
        assert!(err.contains("worker"), "{err}");
        kill(w, Signal::SIGKILL).unwrap();
        waitpid(w, None).unwrap();
        // Clean up what remove() could not.
        for p in &paths {
            for sub in ["handlers", "worker", ""] {
                let d = p.join(sub);
                let _ = rmdir_retry(&d);
            }
        }
        for p in &paths {
            assert!(!p.exists());
        }
        // Dropping an armed handle removes the groups.
        let name = unique("drop");
        let (cg, _) = DaemonCgroups::create(&name, Limits::default(), Limits::default()).unwrap();
        let paths = cg.paths();
        drop(cg);
        for p in &paths {
            assert!(!p.exists(), "{} left behind", p.display());
        }
    }

    #[test]
    fn stale_group_is_replaced_but_a_live_one_is_not() {
        let name = unique("stale");
        let (mut first, _) =
            DaemonCgroups::create(&name, Limits::default(), Limits::default()).unwrap();
        // As if the daemon had crashed: the (empty) groups stay behind.
        first.disarm();
        drop(first);
        let (second, _) =
            DaemonCgroups::create(&name, Limits::default(), Limits::default()).unwrap();
        let (w, _) = parked_child(|| true);
        second.add_worker(w.as_raw() as u32).unwrap();
        let err = DaemonCgroups::create(&name, Limits::default(), Limits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("in use"), "{err}");
        // The live daemon's groups are untouched.
        for p in second.handlers_paths() {
            assert!(p.exists(), "{} was removed", p.display());
        }
        kill(w, Signal::SIGKILL).unwrap();
        waitpid(w, None).unwrap();
        second.remove().unwrap();
    }

    #[test]
    fn pids_limit_stops_a_fork_bomb() {
        let name = unique("bomb");
        let lim = Limits {
            pids_max: Some(4),
            memory_max: None,
        };
        let (cg, _) = DaemonCgroups::create(&name, Limits::default(), lim).unwrap();
        let out = in_child(|fd| {
            if cg.enter_handlers_self().is_err() {
                return 2;
            }
            let mut kids = [0i32; 16];
            let mut n = 0usize;
            let mut eagain = false;
            for slot in kids.iter_mut() {
                // SAFETY: fork in a single-threaded child; the grandchild only pauses/_exits.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: wait to be killed, then leave without running any Rust code.
                    unsafe {
                        libc::pause();
                        libc::_exit(0)
                    }
                }
                if pid < 0 {
                    eagain = Errno::last() == Errno::EAGAIN;
                    break;
                }
                *slot = pid;
                n += 1;
            }
            for &k in &kids[..n] {
                // SAFETY: killing and reaping our own children.
                unsafe {
                    libc::kill(k, libc::SIGKILL);
                    libc::waitpid(k, std::ptr::null_mut(), 0);
                }
            }
            child_write(fd, &[n as u8]);
            if eagain {
                0
            } else {
                3
            }
        });
        assert_eq!(exited(&out.status), Some(0), "{:?}", out.status);
        assert_eq!(
            out.output,
            vec![3u8],
            "the child itself counts: 3 forks fit under pids.max=4"
        );
        cg.remove().unwrap();
    }

    #[test]
    fn chown_hands_groups_to_the_helper() {
        use std::os::unix::fs::MetadataExt;
        let name = unique("chown");
        let (cg, _) = DaemonCgroups::create(&name, Limits::default(), Limits::default()).unwrap();
        cg.chown(64700, 64701).unwrap();
        for d in cg.handlers_paths().iter().chain(cg.worker_paths().iter()) {
            for f in [d.clone(), d.join("cgroup.procs")] {
                let md = std::fs::metadata(&f).unwrap();
                assert_eq!((md.uid(), md.gid()), (64700, 64701), "{}", f.display());
            }
        }
        cg.remove().unwrap();
    }
}
