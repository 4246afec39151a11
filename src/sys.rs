//! The few raw syscalls the daemon needs that have no safe wrapper, each `unsafe` block with its
//! `// SAFETY:` argument. Everything policy-related lives elsewhere and is `forbid(unsafe_code)`.
//! (The confinement syscalls — capabilities, seccomp, landlock, cgroups — live in `sandbox`.)

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};

/// Takes ownership of an fd the kernel just installed for us (SCM_RIGHTS, accept4).
pub fn adopt_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was returned a moment ago by recvmsg's SCM_RIGHTS control message or by
    // accept4: it is open, belongs to this process, and nothing else owns it yet.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Borrows one of the standard fds (0, 1, 2), which live for the whole process.
pub fn std_fd(fd: RawFd) -> BorrowedFd<'static> {
    debug_assert!((0..=2).contains(&fd));
    // SAFETY: fds 0-2 are never closed by this program; at worst the borrow refers to a closed
    // slot and the syscall made with it fails with EBADF.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// fork(2). Callers guarantee the process is single-threaded (the daemon never starts threads).
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the daemon is single-threaded at every fork (no thread is ever spawned), so the
    // child cannot inherit a lock held by another thread; the child only does syscalls and
    // simple allocations before exec or exit.
    unsafe { nix::unistd::fork() }
}

/// Ends the process at once without running destructors or flushing anything (child paths).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// getdents64(2): fills `buf` with `linux_dirent64` records (parsed by
/// [`crate::privsep::dirents`]); `Ok(0)` at the end of the directory. Used instead of
/// readdir(3) because fdopendir costs an fstat, two fcntls and an lseek per directory.
pub fn getdents64(dir: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<usize> {
    loop {
        // SAFETY: `buf` is a writable region of `buf.len()` bytes that outlives the call, and
        // the kernel writes at most that many bytes into it; `dir` is an open fd (borrowed).
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Gives the allocator's free memory back to the kernel (glibc keeps freed heap pages, and after
/// large frees it raises its mmap threshold, so a storm's memory would otherwise stay resident).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only releases free heap pages (brk, madvise).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// inotify_init1(IN_CLOEXEC | IN_NONBLOCK).
pub fn inotify_init() -> nix::Result<OwnedFd> {
    // SAFETY: plain syscall with constant flags.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: inotify_init1 returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// inotify_add_watch(2). The path is `/proc/self/fd/N` of a directory the helper resolved.
pub fn inotify_add_watch(ifd: &OwnedFd, path: &CStr, mask: u32) -> nix::Result<i32> {
    // SAFETY: `path` is a valid NUL-terminated string, `ifd` an open inotify fd.
    let wd = unsafe { libc::inotify_add_watch(ifd.as_raw_fd(), path.as_ptr(), mask) };
    if wd < 0 {
        Err(Errno::last())
    } else {
        Ok(wd)
    }
}

pub fn inotify_rm_watch(ifd: &OwnedFd, wd: i32) -> nix::Result<()> {
    // SAFETY: plain syscall on an open inotify fd; a stale wd gives EINVAL.
    let r = unsafe { libc::inotify_rm_watch(ifd.as_raw_fd(), wd) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Closes every fd >= `from` (close_range(2)): what a child keeps before exec is 0-2 only.
pub fn close_from(from: u32) -> nix::Result<()> {
    // SAFETY: close_range only closes descriptors; the caller (a child about to exec) uses none
    // of the fds >= `from` afterwards.
    let r = unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Closes every open fd not in `keep` (and above 2), by listing /proc/self/fd. Used once in each
/// process right after the fork, so neither side holds what it does not need.
pub fn close_all_except(keep: &[RawFd]) -> std::io::Result<()> {
    let mut victims = Vec::new();
    for ent in std::fs::read_dir("/proc/self/fd")? {
        let ent = ent?;
        if let Some(fd) = ent
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        {
            if fd > 2 && !keep.contains(&fd) {
                victims.push(fd);
            }
        }
    }
    for fd in victims {
        // SAFETY: these fds are not owned by any live Rust object the caller will use again: the
        // caller lists every fd it still owns in `keep`. (The read_dir fd is already closed here;
        // closing it twice would only give EBADF, which is ignored.)
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// Current process id (cached nowhere: cheap syscall).
pub fn getpid() -> Pid {
    nix::unistd::getpid()
}

/// The signals an administrator sends to clsync (HUP, INT, QUIT, TERM, ALRM, USR1, USR2, 16,
/// 29). Every process of the daemon (worker, helper, janitor) blocks them, so none can end one
/// by its default action (`pkill -29 clsync` reaches all three); the worker reads them from its
/// signalfd and gives them clsync's meanings, the helper only acts on its own SIGTERM.
pub const ADMIN_SIGNALS: [nix::sys::signal::Signal; 9] = {
    use nix::sys::signal::Signal::*;
    [
        SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGALRM, SIGUSR1, SIGUSR2, SIGSTKFLT, SIGIO,
    ]
};

/// `set` with the signal numbers `extra` added, realtime ones included (nix's `Signal` has only
/// the classic ones); a number the C library refuses (0, 32, 33, above SIGRTMAX) is left out.
pub fn sigset_with(set: nix::sys::signal::SigSet, extra: &[i32]) -> nix::sys::signal::SigSet {
    let mut raw: libc::sigset_t = *set.as_ref();
    for &sig in extra {
        // SAFETY: sigaddset only writes into our local sigset_t; a bad number is EINVAL.
        unsafe {
            libc::sigaddset(&mut raw, sig);
        }
    }
    // SAFETY: `raw` came from a valid SigSet and was changed only by sigaddset.
    unsafe { nix::sys::signal::SigSet::from_sigset_t_unchecked(raw) }
}

/// Blocks the signal numbers `sigs` in the calling thread (before the fork, so that the helper
/// inherits them blocked and a --custom-signals signal sent to the process group ends neither
/// process; the worker reads them from its signalfd).
pub fn block_signals(sigs: &[i32]) -> nix::Result<()> {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    let set = sigset_with(SigSet::empty(), sigs);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
}

/// Resets every signal disposition and the signal mask to the defaults a freshly exec'd program
/// expects (the Rust runtime ignores SIGPIPE; the event loops block signals for signalfd).
pub fn reset_signals_for_exec() {
    use nix::sys::signal::{sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code; this runs in a single-threaded
        // child right before execve.
        let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Test builds only (cargo feature `test-hooks`): makes the sandboxed worker attempt a syscall
/// its seccomp policy forbids, so the integration tests can show the filter traps it.
#[cfg(feature = "test-hooks")]
pub fn test_attempt_syscall(which: &str, inotify: &OwnedFd) {
    crate::warning!("test hook: attempting forbidden syscall {which}");
    // SAFETY: each call passes valid constant arguments (or a valid NUL-terminated string); the
    // expected outcome is SIGSYS from the seccomp filter, which ends the process.
    unsafe {
        match which {
            "socket" => {
                libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            }
            "execve" => {
                let prog = c"/bin/true".as_ptr();
                let argv = [prog, std::ptr::null()];
                let envp = [std::ptr::null()];
                libc::execve(prog, argv.as_ptr(), envp.as_ptr());
            }
            "ptrace" => {
                libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            }
            "inotify_add_watch" => {
                libc::inotify_add_watch(inotify.as_raw_fd(), c"/".as_ptr(), libc::IN_ALL_EVENTS);
            }
            "mprotect_exec" => {
                // A writable anonymous page (allowed) turned executable (never allowed).
                let page = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if page != libc::MAP_FAILED {
                    libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC);
                }
            }
            other => crate::error!("test hook: unknown syscall {other}"),
        }
    }
    crate::error!("test hook: forbidden syscall {which} was NOT trapped");
}

#[cfg(not(feature = "test-hooks"))]
pub fn test_attempt_syscall(_which: &str, _inotify: &OwnedFd) {}

/// Test builds only: forks up to `max` children that sleep a second and exit; returns how many
/// forks succeeded and the error that stopped it ("cap reached" when none did). Reaps them all.
#[cfg(feature = "test-hooks")]
pub fn test_fork_bomb(max: usize) -> (usize, String) {
    let mut kids = Vec::new();
    let mut why = "cap reached".to_string();
    for _ in 0..max {
        match fork() {
            Ok(ForkResult::Child) => {
                std::thread::sleep(std::time::Duration::from_secs(1));
                exit_now(0)
            }
            Ok(ForkResult::Parent { child }) => kids.push(child),
            Err(e) => {
                why = format!("fork failed: {e}");
                break;
            }
        }
    }
    for k in &kids {
        let _ = nix::sys::wait::waitpid(*k, None);
    }
    (kids.len(), why)
}

#[cfg(not(feature = "test-hooks"))]
pub fn test_fork_bomb(_max: usize) -> (usize, String) {
    (0, String::new())
}
