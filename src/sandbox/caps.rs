//! Capabilities and securebits for the helper, its handler children and the worker.
//!
//! The `caps` crate names the capabilities (parsing, bit masks). The sets themselves are written
//! with one raw `capset(2)` so effective, permitted and inheritable change together and exactly
//! (setting them one by one through the crate would pass through intermediate states and loses
//! the errno), and the prctl calls are made directly for the same reason. Everything here after
//! argument preparation is syscalls only, so it is safe in a forked child.

use super::{Result, SandboxError};
pub use ::caps::Capability;
use nix::errno::Errno;
use nix::sys::signal::Signal;

/// What the helper itself needs in its effective set: read any directory to resolve and scan
/// paths (DAC_READ_SEARCH), switch handlers to their uid/gid (SETUID, SETGID), and end handlers
/// that run under another uid (KILL).
pub const HELPER_CAPS: [Capability; 4] = [
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_KILL,
];

/// What `rsync -aH` running as root needs to reproduce owners, modes and device nodes:
/// CHOWN (owners), DAC_OVERRIDE and DAC_READ_SEARCH (read/write any file), FOWNER (set modes
/// and times on files it does not own), FSETID (keep setuid/setgid bits), MKNOD (devices).
pub fn default_handler_caps() -> Vec<Capability> {
    vec![
        Capability::CAP_CHOWN,
        Capability::CAP_DAC_OVERRIDE,
        Capability::CAP_DAC_READ_SEARCH,
        Capability::CAP_FOWNER,
        Capability::CAP_FSETID,
        Capability::CAP_MKNOD,
    ]
}

/// Parse a comma separated capability list: case-insensitive, the `CAP_` prefix optional,
/// blanks around names ignored, duplicates dropped. An empty string is the empty set.
pub fn parse_cap_list(list: &str) -> Result<Vec<Capability>> {
    let mut out: Vec<Capability> = Vec::new();
    if list.trim().is_empty() {
        return Ok(out);
    }
    for raw in list.split(',') {
        let name = raw.trim();
        if name.is_empty() {
            return Err(SandboxError::UnknownCapability(raw.to_string()));
        }
        let cap: Capability = ::caps::to_canonical(name)
            .parse()
            .map_err(|_| SandboxError::UnknownCapability(name.to_string()))?;
        if !out.contains(&cap) {
            out.push(cap);
        }
    }
    Ok(out)
}

/// The kernel bit mask of a set of capabilities.
pub fn mask_of(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | c.bitmask())
}

/// The securebits the helper locks: uid 0 grants nothing by itself (NOROOT), uid changes keep
/// and never fix up capabilities (NO_SETUID_FIXUP, KEEP_CAPS), and none can be undone.
/// KEEP_CAPS is cleared by the kernel at execve, so handlers never inherit it; locking it only
/// stops the helper from turning it off.
pub const HELPER_SECUREBITS: libc::c_int = libc::SECBIT_KEEP_CAPS
    | libc::SECBIT_KEEP_CAPS_LOCKED
    | libc::SECBIT_NO_SETUID_FIXUP
    | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
    | libc::SECBIT_NOROOT
    | libc::SECBIT_NOROOT_LOCKED;

/// The privileged helper's drop, called while still full root, in this order:
/// 1. securebits [`HELPER_SECUREBITS`] (locked);
/// 2. drop from the bounding set every capability not in [`HELPER_CAPS`] ∪ `handler_caps`;
/// 3. `setgroups([])`, `setresgid`, `setresuid` to the privileged ids (0 keeps root's ids, but
///    root grants nothing beyond the sets below thanks to NOROOT);
/// 4. effective = HELPER_CAPS, permitted = HELPER_CAPS ∪ handler_caps, inheritable =
///    handler_caps, ambient cleared;
/// 5. not dumpable.
///
/// Every step is verified. PDEATHSIG is the caller's job ([`set_pdeathsig`]) since it must be
/// set after the uid change and followed by a `getppid()` check.
pub fn helper_drop(
    privileged_uid: u32,
    privileged_gid: u32,
    handler_caps: &[Capability],
) -> Result<()> {
    set_securebits(HELPER_SECUREBITS)?;
    let helper = mask_of(&HELPER_CAPS);
    let handler = mask_of(handler_caps);
    bounding_keep_only(helper | handler)?;
    super::identity::drop_to(privileged_uid, privileged_gid)?;
    set_exact(helper, helper | handler, handler)?;
    ambient_clear()?;
    verify_sets("helper capabilities", helper, helper | handler, handler, 0)?;
    set_not_dumpable()
}

/// In a forked child of the helper, after it changed uid/gid and before execve: keep exactly
/// `handler_caps` (permitted and inheritable; nothing effective until exec) and raise them as
/// ambient capabilities, every other ambient capability cleared. After execve of an ordinary
/// program, CapEff = CapPrm = CapAmb = `handler_caps` (securebits NOROOT makes uid 0 add
/// nothing; file capabilities and set-id bits are ignored because the helper's seccomp filter
/// set no_new_privs, which handlers inherit).
pub fn handler_child_caps(handler_caps: &[Capability]) -> Result<()> {
    let handler = mask_of(handler_caps);
    set_exact(0, handler, handler)?;
    ambient_clear()?;
    for cap in handler_caps {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap.index() as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            return Err(SandboxError::last_os(|| {
                format!("prctl(PR_CAP_AMBIENT_RAISE, {cap})")
            }));
        }
    }
    verify_sets("handler capabilities", 0, handler, handler, handler)
}

/// The worker, still root and before its uid change: empty the bounding set, so nothing it ever
/// executes (it executes nothing, but in case) can regain a capability.
pub fn worker_drop_bounding() -> Result<()> {
    bounding_keep_only(0)
}

/// The worker, after its uid change: clear effective, permitted, inheritable and ambient, and
/// verify that all of them and the bounding set are empty.
pub fn worker_clear_all() -> Result<()> {
    worker_clear_sets()?;
    let left = bounding_mask()?;
    if left != 0 {
        return Err(SandboxError::Verify {
            step: "bounding set drop",
            detail: format!("bounding set is still {left:#x}"),
        });
    }
    Ok(())
}

/// [`worker_clear_all`] without the bounding set (`--splitting=off` leaves it as is): clear
/// effective, permitted, inheritable and ambient, and verify that they are empty.
pub fn worker_clear_sets() -> Result<()> {
    set_exact(0, 0, 0)?;
    ambient_clear()?;
    verify_sets("worker capabilities", 0, 0, 0, 0)
}

/// `PR_SET_NO_NEW_PRIVS`: execve can never add privileges again (set-id bits, file caps).
pub fn set_no_new_privs() -> Result<()> {
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| SandboxError::sys("prctl(PR_SET_NO_NEW_PRIVS, 1)", e))?;
    match nix::sys::prctl::get_no_new_privs() {
        Ok(true) => Ok(()),
        Ok(false) => Err(SandboxError::Verify {
            step: "prctl(PR_SET_NO_NEW_PRIVS, 1)",
            detail: "no_new_privs reads back as 0".into(),
        }),
        Err(e) => Err(SandboxError::sys("prctl(PR_GET_NO_NEW_PRIVS)", e)),
    }
}

/// `PR_SET_DUMPABLE 0`: no core dumps and no ptrace attach by processes of the same uid.
pub fn set_not_dumpable() -> Result<()> {
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| SandboxError::sys("prctl(PR_SET_DUMPABLE, 0)", e))
}

/// `PR_SET_PDEATHSIG`: receive `sig` when the parent thread ends. Set it after any uid change
/// (the kernel clears it on credential changes) and then check `getppid()`, since the parent may
/// already have ended before the call.
pub fn set_pdeathsig(sig: Signal) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(sig)
        .map_err(|e| SandboxError::sys(format!("prctl(PR_SET_PDEATHSIG, {sig})"), e))
}

fn set_securebits(bits: libc::c_int) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(SandboxError::last_os(|| {
            format!("prctl(PR_SET_SECUREBITS, {bits:#x})")
        }));
    }
    // SAFETY: prctl with integer arguments only.
    let got = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    if got < 0 {
        return Err(SandboxError::last_os(|| "prctl(PR_GET_SECUREBITS)".into()));
    }
    if got & bits != bits {
        return Err(SandboxError::Verify {
            step: "prctl(PR_SET_SECUREBITS)",
            detail: format!("securebits read back as {got:#x}, expected {bits:#x}"),
        });
    }
    Ok(())
}

/// Is capability number `i` in the bounding set? `None` once `i` is past the kernel's last cap.
fn bounding_has(i: u32) -> Result<Option<bool>> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_READ, i as libc::c_ulong, 0, 0, 0) };
    match rc {
        0 => Ok(Some(false)),
        1 => Ok(Some(true)),
        _ if Errno::last() == Errno::EINVAL => Ok(None),
        _ => Err(SandboxError::last_os(|| {
            format!("prctl(PR_CAPBSET_READ, {i})")
        })),
    }
}

/// Capability numbers the running kernel knows, found by probing (no /proc read, so this works
/// in a forked child and under landlock): 0..=cap_last_cap. Capped at 63 (the mask width).
fn kernel_caps() -> Result<u32> {
    let mut n = 0;
    while n < 64 && bounding_has(n)?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn bounding_mask() -> Result<u64> {
    let mut m = 0;
    for i in 0..kernel_caps()? {
        if bounding_has(i)? == Some(true) {
            m |= 1u64 << i;
        }
    }
    Ok(m)
}

/// Drop from the bounding set every capability whose bit is not in `keep`, then verify.
fn bounding_keep_only(keep: u64) -> Result<()> {
    for i in 0..kernel_caps()? {
        if keep & (1u64 << i) != 0 || bounding_has(i)? != Some(true) {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, i as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            return Err(SandboxError::last_os(|| {
                format!("prctl(PR_CAPBSET_DROP, {i}) (drop from the bounding set)")
            }));
        }
    }
    let left = bounding_mask()?;
    if left & !keep != 0 {
        return Err(SandboxError::Verify {
            step: "bounding set drop",
            detail: format!("bounding set is {left:#x}, expected a subset of {keep:#x}"),
        });
    }
    Ok(())
}

fn ambient_clear() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(SandboxError::last_os(|| {
            "prctl(PR_CAP_AMBIENT_CLEAR_ALL)".into()
        }));
    }
    Ok(())
}

fn ambient_mask() -> Result<u64> {
    let mut m = 0;
    for i in 0..kernel_caps()? {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong,
                i as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        match rc {
            0 => {}
            1 => m |= 1u64 << i,
            _ => {
                return Err(SandboxError::last_os(|| {
                    format!("prctl(PR_CAP_AMBIENT_IS_SET, {i})")
                }))
            }
        }
    }
    Ok(m)
}

/// The kernel's capability header/data structures (linux/capability.h, version 3: two 32-bit
/// words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// (effective, permitted, inheritable) of the calling thread.
fn get_sets() -> Result<(u64, u64, u64)> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array of the layout capget(2) expects for version 3.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(SandboxError::last_os(|| "capget".into()));
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

/// Set effective, permitted and inheritable of the calling thread in one capset(2).
fn set_exact(eff: u64, prm: u64, inh: u64) -> Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: eff as u32,
            permitted: prm as u32,
            inheritable: inh as u32,
        },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (prm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: header and a two-element data array of the layout capset(2) expects for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(SandboxError::last_os(|| {
            format!("capset(effective={eff:#x}, permitted={prm:#x}, inheritable={inh:#x})")
        }));
    }
    Ok(())
}

fn verify_sets(step: &'static str, eff: u64, prm: u64, inh: u64, amb: u64) -> Result<()> {
    let (e, p, i) = get_sets()?;
    let a = ambient_mask()?;
    if (e, p, i, a) != (eff, prm, inh, amb) {
        return Err(SandboxError::Verify {
            step,
            detail: format!(
                "effective/permitted/inheritable/ambient are {e:#x}/{p:#x}/{i:#x}/{a:#x}, \
                 expected {eff:#x}/{prm:#x}/{inh:#x}/{amb:#x}"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::testutil::*;
    use std::ffi::CString;

    #[test]
    fn parse_lists() {
        assert_eq!(parse_cap_list("").unwrap(), vec![]);
        assert_eq!(parse_cap_list("  ").unwrap(), vec![]);
        assert_eq!(
            parse_cap_list("CAP_CHOWN,fowner").unwrap(),
            vec![Capability::CAP_CHOWN, Capability::CAP_FOWNER]
        );
        assert_eq!(
            parse_cap_list("cap_kill, Dac_Override ,CAP_KILL").unwrap(),
            vec![Capability::CAP_KILL, Capability::CAP_DAC_OVERRIDE]
        );
        let e = parse_cap_list("chown,CAP_FLY").unwrap_err();
        assert!(matches!(&e, SandboxError::UnknownCapability(n) if n == "CAP_FLY"));
        assert!(e.to_string().contains("'CAP_FLY'"), "{e}");
        assert!(parse_cap_list("chown,,fowner").is_err());
    }

    #[test]
    fn masks() {
        assert_eq!(
            mask_of(&HELPER_CAPS),
            (1 << 2) | (1 << 5) | (1 << 6) | (1 << 7)
        );
        assert_eq!(mask_of(&default_handler_caps()), 0b1_1111 | (1 << 27));
    }

    #[test]
    fn helper_drop_gives_exactly_helper_caps() {
        let handler = vec![Capability::CAP_CHOWN, Capability::CAP_FOWNER];
        let out = in_child(|fd| {
            if let Err(e) = helper_drop(0, 0, &handler) {
                let _ = child_write(fd, e.to_string().as_bytes());
                return 2;
            }
            if !child_send_status(fd) {
                return 3;
            }
            // NOROOT is locked: clearing it must fail.
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, 0, 0, 0, 0) } == 0 {
                return 4;
            }
            // SYS_ADMIN is gone for good: unshare(CLONE_NEWNS) must fail with EPERM.
            if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS) != Err(Errno::EPERM) {
                return 5;
            }
            0
        });
        out.assert_exit(0);
        let s = out.text();
        assert_eq!(
            status_field(&s, "CapEff"),
            Some(cap_hex(&HELPER_CAPS).as_str()),
            "{s}"
        );
        let all: Vec<Capability> = HELPER_CAPS.iter().chain(&handler).copied().collect();
        assert_eq!(status_field(&s, "CapPrm"), Some(cap_hex(&all).as_str()));
        assert_eq!(status_field(&s, "CapInh"), Some(cap_hex(&handler).as_str()));
        assert_eq!(status_field(&s, "CapBnd"), Some(cap_hex(&all).as_str()));
        assert_eq!(status_field(&s, "CapAmb"), Some("0000000000000000"));
        let bnd = u64::from_str_radix(status_field(&s, "CapBnd").unwrap(), 16).unwrap();
        assert_eq!(bnd & Capability::CAP_SYS_ADMIN.bitmask(), 0);
    }

    #[test]
    fn helper_drop_keeps_caps_across_uid_change() {
        let handler = vec![Capability::CAP_CHOWN];
        let out = in_child(|fd| {
            if let Err(e) = helper_drop(64200, 64201, &handler) {
                let _ = child_write(fd, e.to_string().as_bytes());
                return 2;
            }
            if nix::sys::prctl::get_dumpable() != Ok(false) {
                return 4;
            }
            if !child_send_status(fd) {
                return 3;
            }
            0
        });
        out.assert_exit(0);
        let s = out.text();
        assert_eq!(status_field(&s, "Uid"), Some("64200\t64200\t64200\t64200"));
        assert_eq!(status_field(&s, "Gid"), Some("64201\t64201\t64201\t64201"));
        assert_eq!(
            status_field(&s, "CapEff"),
            Some(cap_hex(&HELPER_CAPS).as_str()),
            "{s}"
        );
    }

    /// The full helper -> handler path: helper drop, then a handler child that changes uid,
    /// raises the ambient set and execs `/bin/cat /proc/self/status`.
    #[test]
    fn handler_exec_gets_exactly_configured_caps() {
        let handler = vec![
            Capability::CAP_CHOWN,
            Capability::CAP_FOWNER,
            Capability::CAP_MKNOD,
        ];
        let cat = CString::new("/bin/cat").unwrap();
        let arg = CString::new("/proc/self/status").unwrap();
        let argv = [cat.as_ptr(), arg.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        let helper_bpf = crate::sandbox::seccomp::helper_filter().unwrap();
        let out = in_child(|fd| {
            if helper_drop(0, 0, &handler).is_err() {
                return 2;
            }
            if crate::sandbox::seccomp::apply(&helper_bpf).is_err() {
                return 3;
            }
            if crate::sandbox::identity::drop_to(64300, 64301).is_err() {
                return 4;
            }
            if let Err(e) = handler_child_caps(&handler) {
                let _ = child_write(fd, e.to_string().as_bytes());
                return 5;
            }
            // SAFETY: fd is the pipe's write end; argv/envp are NULL-terminated arrays of
            // C strings prepared before the fork.
            unsafe {
                if libc::dup2(fd, 1) != 1 {
                    return 6;
                }
                libc::execve(cat.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
            7
        });
        out.assert_exit(0);
        let s = out.text();
        let want = cap_hex(&handler);
        assert_eq!(
            status_field(&s, "Uid"),
            Some("64300\t64300\t64300\t64300"),
            "{s}"
        );
        assert_eq!(status_field(&s, "CapAmb"), Some(want.as_str()), "{s}");
        assert_eq!(status_field(&s, "CapEff"), Some(want.as_str()));
        assert_eq!(status_field(&s, "CapPrm"), Some(want.as_str()));
        assert_eq!(status_field(&s, "NoNewPrivs"), Some("1"));
        assert_eq!(status_field(&s, "Seccomp"), Some("2"));
    }

    /// A handler running as uid 0 gets nothing from being root (NOROOT locked).
    #[test]
    fn handler_as_root_gets_only_configured_caps() {
        let handler = vec![Capability::CAP_CHOWN];
        let cat = CString::new("/bin/cat").unwrap();
        let arg = CString::new("/proc/self/status").unwrap();
        let argv = [cat.as_ptr(), arg.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        let out = in_child(|fd| {
            if helper_drop(0, 0, &handler).is_err() || handler_child_caps(&handler).is_err() {
                return 2;
            }
            // SAFETY: as above: pipe fd, NULL-terminated argv/envp prepared before the fork.
            unsafe {
                if libc::dup2(fd, 1) != 1 {
                    return 6;
                }
                libc::execve(cat.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
            7
        });
        assert_eq!(exited(&out.status), Some(0), "{:?}", out.status);
        let s = out.text();
        assert_eq!(status_field(&s, "Uid"), Some("0\t0\t0\t0"));
        assert_eq!(
            status_field(&s, "CapEff"),
            Some(cap_hex(&handler).as_str()),
            "{s}"
        );
        assert_eq!(status_field(&s, "CapPrm"), Some(cap_hex(&handler).as_str()));
    }

    #[test]
    fn worker_drop_clears_everything() {
        let out = in_child(|fd| {
            if worker_drop_bounding().is_err() {
                return 2;
            }
            if crate::sandbox::identity::drop_to(64400, 64401).is_err() {
                return 3;
            }
            if let Err(e) = worker_clear_all() {
                let _ = child_write(fd, e.to_string().as_bytes());
                return 4;
            }
            if set_no_new_privs().is_err() || set_not_dumpable().is_err() {
                return 5;
            }
            if set_pdeathsig(Signal::SIGKILL).is_err() {
                return 6;
            }
            if !child_send_status(fd) {
                return 7;
            }
            0
        });
        out.assert_exit(0);
        let s = out.text();
        assert_eq!(status_field(&s, "Uid"), Some("64400\t64400\t64400\t64400"));
        assert_eq!(status_field(&s, "Gid"), Some("64401\t64401\t64401\t64401"));
        for f in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(status_field(&s, f), Some("0000000000000000"), "{f}: {s}");
        }
        assert_eq!(status_field(&s, "NoNewPrivs"), Some("1"));
    }

    #[test]
    fn errors_name_step_and_errno() {
        // As a non-root child, dropping bounding caps fails with EPERM.
        let msg = unprivileged_error(64500, worker_drop_bounding);
        assert!(msg.contains("PR_CAPBSET_DROP"), "{msg}");
        assert!(msg.contains("EPERM"), "{msg}");
    }
}
