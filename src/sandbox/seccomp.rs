//! Seccomp filters: the worker's allowlist and the helper's denylist.
//!
//! The policies live in `policy/worker.json` and `policy/helper.json` (seccompiler's JSON
//! format, one syscall per line, each with a comment saying why) and are embedded at build
//! time. They are compiled for the running architecture: x86_64, and aarch64 where the few
//! x86_64-only syscalls (rules whose comment says "x86_64 only") are left out, which works
//! because every rule is on its own line.
//!
//! The worker policy is a template in one place: `"@SELF_PID@"` stands for the worker's own
//! pid in the kill/tgkill conditions (signal itself only) and is filled in when compiling.
//!
//! Installing a filter also sets no_new_privs (seccompiler does it, and an unprivileged
//! process could not install a filter otherwise). For the helper this means its handler
//! children inherit no_new_privs: set-id bits and file capabilities of the programs they exec
//! are ignored; handlers get privileges only through the ambient set (see [`super::caps`]).

use super::{Result, SandboxError};
use seccompiler::{BpfProgram, TargetArch};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// The worker's allowlist (default action: trap).
pub const WORKER_POLICY: &str = include_str!("../../policy/worker.json");
/// The helper's denylist (default action: allow; listed syscalls fail with EPERM).
pub const HELPER_POLICY: &str = include_str!("../../policy/helper.json");

/// The exit status of a worker that the SIGSYS reporter ended (128 + SIGSYS).
pub const EXIT_SECCOMP_VIOLATION: i32 = 159;

/// The placeholder for the worker's pid in [`WORKER_POLICY`].
const SELF_PID: &str = "\"@SELF_PID@\"";
/// The marker of rules that exist on x86_64 only.
const X86_64_ONLY: &str = "x86_64 only";

fn target_arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        SandboxError::Seccomp(format!(
            "no seccomp policy for the {} architecture (supported: x86_64, aarch64)",
            std::env::consts::ARCH
        ))
    })
}

/// Compile `policy` (one filter named `name`) for `arch`.
fn compile(policy: &str, name: &str, arch: TargetArch) -> Result<BpfProgram> {
    let text: String = if matches!(arch, TargetArch::x86_64) {
        policy.to_string()
    } else {
        policy
            .lines()
            .filter(|l| !l.contains(X86_64_ONLY))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut map = seccompiler::compile_from_json(text.as_bytes(), arch)
        .map_err(|e| SandboxError::Seccomp(format!("compiling the {name} policy: {e}")))?;
    map.remove(name)
        .ok_or_else(|| SandboxError::Seccomp(format!("the {name} policy has no filter '{name}'")))
}

fn worker_policy_for(self_pid: i32) -> String {
    WORKER_POLICY.replace(SELF_PID, &self_pid.to_string())
}

/// The worker's filter for the running architecture, with kill/tgkill limited to `self_pid`.
/// Compiling allocates: do it before forking when the filter is for a child.
pub fn worker_filter(self_pid: i32) -> Result<BpfProgram> {
    compile(&worker_policy_for(self_pid), "worker", target_arch()?)
}

/// The helper's filter for the running architecture.
pub fn helper_filter() -> Result<BpfProgram> {
    compile(HELPER_POLICY, "helper", target_arch()?)
}

/// Install a compiled filter on the calling thread (and set no_new_privs). Syscalls only.
pub fn apply(filter: &BpfProgram) -> Result<()> {
    seccompiler::apply_filter(filter).map_err(|e| match e {
        seccompiler::Error::Prctl(io) => {
            SandboxError::sys("prctl(PR_SET_NO_NEW_PRIVS, 1)", super::io_errno(&io))
        }
        seccompiler::Error::Seccomp(io) => {
            SandboxError::sys("seccomp(SECCOMP_SET_MODE_FILTER)", super::io_errno(&io))
        }
        other => SandboxError::Seccomp(format!("installing the filter: {other}")),
    })
}

/// Compile and install the worker's allowlist; a syscall outside it raises SIGSYS (see
/// [`install_sigsys_reporter`]). Install it last: after it, the worker cannot open files,
/// create sockets, fork or exec.
pub fn install_worker() -> Result<()> {
    let filter = worker_filter(std::process::id() as i32)?;
    apply(&filter)
}

/// Compile and install the helper's denylist (inherited by every handler it forks).
pub fn install_helper() -> Result<()> {
    apply(&helper_filter()?)
}

/// The report function's type: fill the buffer from the syscall number, return the length.
/// It runs inside a signal handler: it must be async-signal-safe (no allocation, no locks).
pub type MakeReport = fn(i32, &mut [u8; 64]) -> usize;

static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
static MAKE_REPORT: AtomicUsize = AtomicUsize::new(0);

/// The SIGSYS part of `siginfo_t` (`_sifields._sigsys` in the kernel's siginfo.h): three ints,
/// then the union, which is pointer-aligned, holding `_call_addr`, `_syscall`, `_arch`.
/// On 64-bit targets `si_syscall` is at offset 24 (asserted below). libc has no accessor for
/// it on glibc targets, hence this overlay.
#[repr(C)]
struct SigsysInfo {
    si_signo: libc::c_int,
    si_errno: libc::c_int,
    si_code: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::offset_of!(SigsysInfo, syscall) == 24);
const _: () = assert!(std::mem::size_of::<SigsysInfo>() <= std::mem::size_of::<libc::siginfo_t>());

/// `si_code` of a SIGSYS raised by a seccomp filter's trap action.
const SYS_SECCOMP: libc::c_int = 1;

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let mut nr: i32 = -1;
    if !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers; SigsysInfo is a
        // prefix of its layout (size asserted above) and only plain integers are read.
        let si = unsafe { &*(info as *const SigsysInfo) };
        if si.si_code == SYS_SECCOMP {
            nr = si.syscall;
        }
    }
    let mut buf = [0u8; 64];
    let raw = MAKE_REPORT.load(Ordering::Acquire);
    let len = if raw != 0 {
        // SAFETY: MAKE_REPORT only ever holds 0 or a `MakeReport` stored by
        // `install_sigsys_reporter`, converted with `as usize`; the same type is restored.
        let f: MakeReport = unsafe { std::mem::transmute::<usize, MakeReport>(raw) };
        f(nr, &mut buf).min(buf.len())
    } else {
        0
    };
    let fd = REPORT_FD.load(Ordering::Acquire);
    if fd >= 0 && len > 0 {
        // SAFETY: `buf[..len]` is a live stack buffer; send is async-signal-safe; the flags
        // keep it from blocking or raising SIGPIPE.
        unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                len,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
    }
    // SAFETY: _exit is async-signal-safe and ends the process without running any Rust code.
    unsafe { libc::_exit(EXIT_SECCOMP_VIOLATION) }
}

/// Install a SIGSYS handler that reports a seccomp violation and ends the process: it reads
/// the syscall number from the siginfo (`si_syscall`; -1 if the SIGSYS did not come from
/// seccomp), lets `make_report` format a datagram of at most 64 bytes on the stack, sends it on
/// `report_fd` with `MSG_DONTWAIT | MSG_NOSIGNAL` and `_exit`s with [`EXIT_SECCOMP_VIOLATION`].
///
/// Call before [`install_worker`] (the handler uses only `sendto` with a NULL address and
/// `exit_group`, both allowed by the worker policy). The fd and the function are kept in
/// atomics, so calling it again replaces them.
pub fn install_sigsys_reporter(report_fd: RawFd, make_report: MakeReport) -> Result<()> {
    REPORT_FD.store(report_fd, Ordering::Release);
    MAKE_REPORT.store(make_report as usize, Ordering::Release);
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::SigAction(on_sigsys),
        nix::sys::signal::SaFlags::SA_SIGINFO,
        nix::sys::signal::SigSet::all(),
    );
    // SAFETY: the handler only makes async-signal-safe calls (atomic loads, the caller's
    // async-signal-safe report function, send, _exit) and never returns.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGSYS, &action) }
        .map_err(|e| SandboxError::sys("sigaction(SIGSYS, SA_SIGINFO)", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::testutil::*;
    use nix::errno::Errno;
    use nix::sys::signal::Signal;

    const WORKER_DENIED: [&str; 15] = [
        "socket",
        "connect",
        "execve",
        "execveat",
        "ptrace",
        "inotify_add_watch",
        "open",
        "openat",
        "openat2",
        "clone",
        "clone3",
        "fork",
        "vfork",
        "bind",
        "unshare",
    ];

    fn rule_lines(policy: &str) -> Vec<&str> {
        policy
            .lines()
            .filter(|l| l.contains("\"syscall\""))
            .collect()
    }

    fn syscall_of(line: &str) -> &str {
        let rest = line.split("\"syscall\": \"").nth(1).unwrap();
        &rest[..rest.find('"').unwrap()]
    }

    #[test]
    fn policies_are_documented_one_syscall_per_line() {
        for policy in [WORKER_POLICY, HELPER_POLICY] {
            let lines = rule_lines(policy);
            assert!(lines.len() > 30);
            for l in lines {
                assert_eq!(
                    l.matches("\"syscall\"").count(),
                    1,
                    "one syscall per line: {l}"
                );
                assert!(l.contains("\"comment\": \""), "rule without a comment: {l}");
            }
        }
        let allowed: Vec<&str> = rule_lines(WORKER_POLICY)
            .into_iter()
            .map(syscall_of)
            .collect();
        for s in WORKER_DENIED {
            assert!(
                !allowed.contains(&s),
                "{s} must not be in the worker allowlist"
            );
        }
        assert!(WORKER_POLICY.contains("\"mismatch_action\": \"trap\""));
        assert!(HELPER_POLICY.contains("\"mismatch_action\": \"allow\""));
        assert_eq!(WORKER_POLICY.matches(SELF_PID).count(), 2);
    }

    #[test]
    fn policies_compile_for_x86_64_and_aarch64() {
        for arch in [TargetArch::x86_64, TargetArch::aarch64] {
            assert!(!compile(&worker_policy_for(1234), "worker", arch)
                .unwrap()
                .is_empty());
            assert!(!compile(HELPER_POLICY, "helper", arch).unwrap().is_empty());
        }
        // The unfilled template is refused, not silently accepted.
        assert!(compile(WORKER_POLICY, "worker", TargetArch::x86_64).is_err());
        worker_filter(1).unwrap();
        helper_filter().unwrap();
    }

    /// Run `f` in a child after installing the worker filter compiled for that child's pid.
    fn under_worker_filter<F: FnOnce(RawFd) -> i32>(f: F) -> ChildOutcome {
        in_child(|fd| {
            // Compiled in the child so the kill/tgkill conditions name the child's pid
            // (allocation after fork is safe with glibc's fork-aware allocator).
            let filter = match worker_filter(std::process::id() as i32) {
                Ok(b) => b,
                Err(_) => return 90,
            };
            if apply(&filter).is_err() {
                return 91;
            }
            f(fd)
        })
    }

    #[test]
    fn worker_forbidden_syscalls_trap() {
        let cases: [(&str, libc::c_long, [libc::c_long; 3]); 9] = [
            (
                "socket(AF_INET)",
                libc::SYS_socket,
                [libc::AF_INET as _, libc::SOCK_STREAM as _, 0],
            ),
            (
                "execve",
                libc::SYS_execve,
                [c"/bin/true".as_ptr() as _, 0, 0],
            ),
            (
                "ptrace",
                libc::SYS_ptrace,
                [libc::PTRACE_TRACEME as _, 0, 0],
            ),
            (
                "inotify_add_watch",
                libc::SYS_inotify_add_watch,
                [0, c"/".as_ptr() as _, 0],
            ),
            (
                "openat",
                libc::SYS_openat,
                [libc::AT_FDCWD as _, c"/etc/passwd".as_ptr() as _, 0],
            ),
            ("clone", libc::SYS_clone, [libc::SIGCHLD as _, 0, 0]),
            ("connect", libc::SYS_connect, [0, 0, 0]),
            (
                "unshare",
                libc::SYS_unshare,
                [libc::CLONE_NEWUSER as _, 0, 0],
            ),
            (
                "prctl(PR_SET_DUMPABLE)",
                libc::SYS_prctl,
                [libc::PR_SET_DUMPABLE as _, 1, 0],
            ),
        ];
        for (name, nr, a) in cases {
            let out = under_worker_filter(|_| {
                // SAFETY: raw syscall with pointer arguments to static C strings or zero.
                unsafe { libc::syscall(nr, a[0], a[1], a[2]) };
                0
            });
            assert_eq!(
                signaled(&out.status),
                Some(Signal::SIGSYS),
                "{name}: {:?}",
                out.status
            );
        }
    }

    #[test]
    fn worker_signals_only_itself() {
        let out = under_worker_filter(|_| {
            // Signal 0 to itself: allowed.
            if nix::sys::signal::kill(nix::unistd::getpid(), None).is_err() {
                return 2;
            }
            // To the parent: trapped.
            let _ = nix::sys::signal::kill(nix::unistd::getppid(), None);
            3
        });
        assert_eq!(
            signaled(&out.status),
            Some(Signal::SIGSYS),
            "{:?}",
            out.status
        );
        // abort() goes through tgkill on itself and still ends with SIGABRT.
        let out = under_worker_filter(|_| std::process::abort());
        assert_eq!(
            signaled(&out.status),
            Some(Signal::SIGABRT),
            "{:?}",
            out.status
        );
    }

    #[test]
    fn worker_event_loop_syscalls_work() {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let out = under_worker_filter(|fd| {
            let Ok(m) = memfd_create(
                c"clsync-list",
                MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
            ) else {
                return 2;
            };
            if nix::unistd::write(&m, b"a/b\n").is_err() {
                return 3;
            }
            let seals = nix::fcntl::SealFlag::F_SEAL_WRITE
                | nix::fcntl::SealFlag::F_SEAL_GROW
                | nix::fcntl::SealFlag::F_SEAL_SHRINK
                | nix::fcntl::SealFlag::F_SEAL_SEAL;
            if nix::fcntl::fcntl(&m, nix::fcntl::FcntlArg::F_ADD_SEALS(seals)).is_err() {
                return 4;
            }
            match nix::sys::stat::fstat(&m) {
                Ok(st) if st.st_size == 4 => {}
                _ => return 5,
            }
            let Ok(ep) = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) else {
                return 6;
            };
            // SAFETY: `fd` is the pipe's write end, open for the whole closure.
            let pipe = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            if ep
                .add(pipe, EpollEvent::new(EpollFlags::EPOLLOUT, 1))
                .is_err()
            {
                return 7;
            }
            let mut evs = [EpollEvent::empty(); 4];
            match ep.wait(&mut evs, EpollTimeout::ZERO) {
                Ok(1) => {}
                _ => return 8,
            }
            let v: Vec<u8> = (0..100_000).map(|i| i as u8).collect();
            if v.len() != 100_000 {
                return 9;
            }
            // Sending through an inherited pipe works; a W|X mapping does not exist.
            if !child_write(fd, b"ok") {
                return 10;
            }
            // SAFETY: anonymous mapping request with no address hint; result checked.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return 11;
            }
            0
        });
        assert_eq!(exited(&out.status), Some(0), "{:?}", out.status);
        assert_eq!(out.text(), "ok");
        // PROT_EXEC is refused.
        let out = under_worker_filter(|_| {
            // SAFETY: anonymous mapping request; the call is expected to trap.
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            0
        });
        assert_eq!(
            signaled(&out.status),
            Some(Signal::SIGSYS),
            "{:?}",
            out.status
        );
    }

    fn report(nr: i32, buf: &mut [u8; 64]) -> usize {
        // "violation <nr>" without allocation.
        let prefix = b"violation ";
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 12];
        let mut n = i64::from(nr);
        let neg = n < 0;
        n = n.abs();
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if neg {
            i -= 1;
            digits[i] = b'-';
        }
        let d = &digits[i..];
        buf[prefix.len()..prefix.len() + d.len()].copy_from_slice(d);
        prefix.len() + d.len()
    }

    #[test]
    fn sigsys_reporter_sends_report_and_exits_159() {
        use std::os::fd::AsRawFd;
        let (a, b) = crate::privsep::protocol::socket_pair().unwrap();
        let filter = worker_filter(1).unwrap();
        let out = in_child(|_| {
            if install_sigsys_reporter(b.as_raw_fd(), report).is_err() {
                return 2;
            }
            if apply(&filter).is_err() {
                return 3;
            }
            // SAFETY: socket() with integer arguments; expected to trap.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            4
        });
        assert_eq!(
            exited(&out.status),
            Some(EXIT_SECCOMP_VIOLATION),
            "{:?}",
            out.status
        );
        drop(b);
        let mut buf = [0u8; 128];
        let n = nix::sys::socket::recv(
            a.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        )
        .unwrap();
        let expect = format!("violation {}", libc::SYS_socket);
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), expect);
    }

    #[test]
    fn helper_denylist_refuses_with_eperm_and_allows_the_rest() {
        let filter = helper_filter().unwrap();
        let out = in_child(|_| {
            if apply(&filter).is_err() {
                return 2;
            }
            // Root, yet refused by the filter.
            if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS) != Err(Errno::EPERM) {
                return 3;
            }
            if nix::mount::umount("/nonexistent-clsync") != Err(Errno::EPERM) {
                return 4;
            }
            // SAFETY: ptrace(PTRACE_TRACEME) with null arguments; expected to fail.
            if unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } != -1
                || Errno::last() != Errno::EPERM
            {
                return 5;
            }
            // SAFETY: bpf() with a null attribute; expected to fail with EPERM from the filter.
            if unsafe { libc::syscall(libc::SYS_bpf, 0, 0, 0) } != -1
                || Errno::last() != Errno::EPERM
            {
                return 6;
            }
            // Ordinary work still works: open a file, fork and reap a child.
            let f = child_open(c"/proc/self/status");
            if f < 0 {
                return 7;
            }
            // SAFETY: fork in a single-threaded child; the grandchild only _exits.
            match unsafe { libc::fork() } {
                0 => unsafe { libc::_exit(0) },
                pid if pid > 0 => {
                    let mut st = 0;
                    // SAFETY: waiting for the grandchild just forked.
                    if unsafe { libc::waitpid(pid, &mut st, 0) } != pid {
                        return 8;
                    }
                }
                _ => return 9,
            }
            0
        });
        assert_eq!(exited(&out.status), Some(0), "{:?}", out.status);
    }
}
