//! Shared-object sync handlers (modes so and rsyncso): the loading checks and the C calls.
//!
//! The object is loaded only in a child of the helper that has already become the handler (its
//! uid, gid, groups and capabilities, process group, death signal, fds and environment: see
//! `helper::enter_handler`), never in the worker or the helper, and that child exits when the
//! call returns. Each call is one child: load, `clsyncapi_init` if present, the call, then in
//! mode so `clsyncapi_deinit` if present (clsync never calls it in rsyncso), exit with the
//! return value. See man/clsync.1 (MODES) for what differs from clsync 0.4.5, which loads the
//! object once into its own process.
//!
//! The checks of clsync 0.4.5 ([`check`]) run at start-up (as root, before the daemon splits,
//! so a bad object stops the start) and again in the child on the very file it loads: the child
//! opens the path (following symlinks, as clsync's `stat` does), checks that fd, and `dlopen`s
//! `/proc/self/fd/N`, so what was checked is what is loaded.
//!
//! This module and [`crate::sys`]/[`crate::sandbox`] are the only places with `unsafe`; here it is
//! `dlopen`/`dlsym`/`dlerror`/`dlclose` and the calls into the administrator's functions.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Which entry point the object must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoMode {
    /// `int clsyncapi_sync(int n, api_eventinfo_t *ei)`.
    Sync,
    /// `int clsyncapi_rsync(const char *inclist, const char *exclist)`.
    Rsync,
}

/// The configured shared object, frozen at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedObject {
    /// Absolute path (symlinks resolved at start).
    pub path: PathBuf,
    pub mode: SoMode,
    /// Who may own it: root, the real uid that started the daemon, and the owner of the
    /// daemon's own binary (`/proc/self/exe`), as in clsync.
    pub owners: Vec<u32>,
}

impl SharedObject {
    /// `path` with the owners clsync allows, computed now (call at start-up, before any uid
    /// change).
    pub fn new(path: PathBuf, mode: SoMode) -> SharedObject {
        let mut owners = vec![0, nix::unistd::getuid().as_raw()];
        if let Ok(md) = std::fs::metadata("/proc/self/exe") {
            owners.push(md.uid());
        }
        owners.sort_unstable();
        owners.dedup();
        SharedObject { path, mode, owners }
    }
}

/// clsync's loading checks on the object's metadata (after following symlinks): a regular
/// file; owned by one of `owners`; no setuid, setgid or sticky bit; not group- or
/// world-writable. The error names the file and what is wrong.
pub fn check_metadata(path: &Path, md: &std::fs::Metadata, owners: &[u32]) -> Result<(), String> {
    let p = path.display();
    if !md.file_type().is_file() {
        return Err(format!(
            "shared object \"{p}\" must be a regular file (or a symlink to one)"
        ));
    }
    if !owners.contains(&md.uid()) {
        return Err(format!(
            "shared object \"{p}\" is owned by uid {}: only root, the user who started the daemon \
             and the owner of the clsync binary are allowed",
            md.uid()
        ));
    }
    let bad = md.mode() & (libc::S_ISUID | libc::S_ISGID | libc::S_ISVTX | 0o020 | 0o002);
    if bad != 0 {
        return Err(format!(
            "shared object \"{p}\" has mode {:04o}: setuid, setgid, sticky, group- and \
             world-writable are not allowed",
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Checks `path` (following symlinks, [`check_metadata`]), opens it and checks the open file
/// again, which must be the same one: the open file is what a child loads. Nothing but a regular
/// file is ever opened (a FIFO or a device could block or act on open).
pub fn open_checked(path: &Path, owners: &[u32]) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = path.display();
    let before =
        std::fs::metadata(path).map_err(|e| format!("cannot stat shared object \"{p}\": {e}"))?;
    check_metadata(path, &before, owners)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open shared object \"{p}\": {e}"))?;
    let md = f
        .metadata()
        .map_err(|e| format!("cannot stat shared object \"{p}\": {e}"))?;
    if (md.dev(), md.ino()) != (before.dev(), before.ino()) {
        return Err(format!(
            "shared object \"{p}\" was replaced while it was being checked"
        ));
    }
    check_metadata(path, &md, owners)?;
    Ok(f)
}

/// One event of a mode-so call, ready for C (the path already in its final form).
#[derive(Clone, Debug)]
pub struct CEvent {
    pub path: CString,
    pub evmask: u32,
    pub flags: u32,
    pub objtype_old: i32,
    pub objtype_new: i32,
}

/// clsync's `EVIF_RECURSIVELY`.
pub const EVIF_RECURSIVELY: u32 = 1;

/// What one child calls.
#[derive(Clone, Debug)]
pub enum SoCall {
    Sync(Vec<CEvent>),
    Rsync {
        inclist: CString,
        /// None with --rsync-prefer-include (the function gets NULL).
        exclist: Option<CString>,
    },
}

/// Exit status of the child when the object fails the checks (clsync's EPERM).
pub const EXIT_CHECK: i32 = 1;
/// Exit status when the object cannot be loaded or lacks its entry point.
pub const EXIT_LOAD: i32 = 127;

/// clsync's `api_eventinfo_t` (clsync.h, API version 2).
#[repr(C)]
struct ApiEventInfo {
    evmask: u32,
    flags: u32,
    path_len: libc::size_t,
    path: *const c_char,
    objtype_old: c_int,
    objtype_new: c_int,
}

type InitFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
type SyncFn = unsafe extern "C" fn(c_int, *mut ApiEventInfo) -> c_int;
type RsyncFn = unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
type DeinitFn = unsafe extern "C" fn() -> c_int;

/// What `clsyncapi_init` gets for clsync's `struct ctx *` and `struct indexes *`: a zeroed,
/// writable buffer each, far larger than clsync 0.4.5's structs, so a handler that keeps the
/// pointers or reads a field sees zeros (NULL strings, flags 0) instead of faulting. Handlers that
/// need clsync's real configuration from them are not supported.
const CTX_BYTES: usize = 1 << 20;

/// The last `dlerror()` text, or a fallback.
fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by the loader, valid until
    // the next dl* call in this (single-threaded) process; it is copied at once.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "no error description".to_string()
    } else {
        // SAFETY: non-NULL and NUL-terminated (see above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Looks up `name`; None when the object does not define it.
fn symbol(handle: *mut c_void, name: &CStr) -> Option<*mut c_void> {
    // SAFETY: clears any stale error so a NULL from dlsym below can be told apart.
    unsafe { libc::dlerror() };
    // SAFETY: `handle` is a live handle from dlopen and `name` a NUL-terminated string.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// Maps a C return value onto an exit status: 0..=255 as they are; anything else (which an exit
/// status would truncate, 256 to success) becomes 255, a failure.
fn exit_status(what: &str, rc: c_int) -> i32 {
    if (0..=255).contains(&rc) {
        rc
    } else {
        crate::error!("{what} returned {rc}, which is not an exit status: counted as 255");
        255
    }
}

/// In the handler child: checks the object again, loads it and makes `call`. Returns the exit
/// status for the child (the function's return value, or [`EXIT_CHECK`]/[`EXIT_LOAD`]).
pub fn run(so: &SharedObject, call: &SoCall) -> i32 {
    let file = match open_checked(&so.path, &so.owners) {
        Ok(f) => f,
        Err(e) => {
            crate::error!("{e}");
            return EXIT_CHECK;
        }
    };
    let Ok(via) = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
        return EXIT_LOAD;
    };
    // SAFETY: a NUL-terminated path; RTLD_NOW resolves every symbol now (a missing one is an
    // error here rather than a crash later), RTLD_LOCAL keeps them out of the global scope. The
    // object's constructors run: it is the administrator's code, run as the handler.
    let handle = unsafe { libc::dlopen(via.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    drop(file);
    if handle.is_null() {
        crate::error!(
            "cannot load shared object \"{}\": {}",
            so.path.display(),
            dl_error()
        );
        return EXIT_LOAD;
    }
    let entry = match so.mode {
        SoMode::Sync => c"clsyncapi_sync",
        SoMode::Rsync => c"clsyncapi_rsync",
    };
    let Some(main) = symbol(handle, entry) else {
        crate::error!(
            "shared object \"{}\" has no {}: {}",
            so.path.display(),
            entry.to_string_lossy(),
            dl_error()
        );
        return EXIT_LOAD;
    };
    if let Some(init) = symbol(handle, c"clsyncapi_init") {
        let mut ctx = vec![0u8; CTX_BYTES];
        let mut indexes = vec![0u8; CTX_BYTES];
        // SAFETY: the object exports clsyncapi_init with clsync's signature
        // `int (struct options *, struct indexes *)`; both arguments point to writable, zeroed
        // buffers that outlive the call.
        let rc = unsafe {
            let f: InitFn = std::mem::transmute::<*mut c_void, InitFn>(init);
            f(
                ctx.as_mut_ptr().cast::<c_void>(),
                indexes.as_mut_ptr().cast::<c_void>(),
            )
        };
        if rc != 0 {
            crate::error!(
                "clsyncapi_init of \"{}\" failed with {rc}",
                so.path.display()
            );
            return exit_status("clsyncapi_init", rc);
        }
    }
    let rc = match call {
        SoCall::Sync(events) => {
            let mut c: Vec<ApiEventInfo> = events
                .iter()
                .map(|e| ApiEventInfo {
                    evmask: e.evmask,
                    flags: e.flags,
                    path_len: e.path.as_bytes().len(),
                    path: e.path.as_ptr(),
                    objtype_old: e.objtype_old,
                    objtype_new: e.objtype_new,
                })
                .collect();
            let n = c_int::try_from(c.len()).unwrap_or(c_int::MAX);
            // SAFETY: the object exports clsyncapi_sync with clsync's signature
            // `int (int n, api_eventinfo_t *ei)`; `c` holds `n` entries laid out as
            // api_eventinfo_t whose paths are NUL-terminated strings in `events`, all alive
            // until the call returns.
            let rc = unsafe {
                let f: SyncFn = std::mem::transmute::<*mut c_void, SyncFn>(main);
                f(n, c.as_mut_ptr())
            };
            let rc = exit_status("clsyncapi_sync", rc);
            if let Some(deinit) = symbol(handle, c"clsyncapi_deinit") {
                // SAFETY: the object exports clsyncapi_deinit as `int (void)`.
                let d = unsafe { std::mem::transmute::<*mut c_void, DeinitFn>(deinit)() };
                if d != 0 {
                    crate::error!(
                        "clsyncapi_deinit of \"{}\" failed with {d}",
                        so.path.display()
                    );
                }
            }
            rc
        }
        SoCall::Rsync { inclist, exclist } => {
            let exc = exclist.as_ref().map_or(std::ptr::null(), |e| e.as_ptr());
            // SAFETY: the object exports clsyncapi_rsync with clsync's signature
            // `int (const char *inclist, const char *exclist)`; both are NUL-terminated paths
            // (or NULL for the exclude list) alive until the call returns.
            let rc = unsafe {
                let f: RsyncFn = std::mem::transmute::<*mut c_void, RsyncFn>(main);
                f(inclist.as_ptr(), exc)
            };
            exit_status("clsyncapi_rsync", rc)
        }
    };
    // Like clsync's exit: the object's destructors run and C stdio buffers reach their files
    // (the child leaves with _exit, which would drop them).
    // SAFETY: `handle` came from dlopen and nothing of the object is used after this.
    unsafe { libc::dlclose(handle) };
    // SAFETY: fflush(NULL) flushes every C stdio stream of this process.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    rc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn checks_follow_clsync() {
        let dir = std::env::temp_dir().join(format!("soload-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("h.so");
        std::fs::write(&f, b"not really").unwrap();
        let me = std::fs::metadata(&f).unwrap().uid();
        let set = |m: u32| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m));
        set(0o644).unwrap();
        assert!(open_checked(&f, &[me]).is_ok());
        let e = open_checked(&f, &[me + 1]).unwrap_err();
        assert!(e.contains("owned by uid") && e.contains("h.so"), "{e}");
        for bad in [0o664, 0o646, 0o4644, 0o2644, 0o1644] {
            set(bad).unwrap();
            let e = open_checked(&f, &[me]).unwrap_err();
            assert!(e.contains(&format!("{bad:04o}")), "{bad:o}: {e}");
        }
        set(0o644).unwrap();
        let link = dir.join("link.so");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(open_checked(&link, &[me]).is_ok(), "a symlink is followed");
        let e = open_checked(&dir, &[me]).unwrap_err();
        assert!(e.contains("regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn return_values_map_onto_exit_statuses() {
        assert_eq!(exit_status("x", 0), 0);
        assert_eq!(exit_status("x", 5), 5);
        assert_eq!(exit_status("x", 255), 255);
        assert_eq!(exit_status("x", 256), 255, "256 must not become success");
        assert_eq!(exit_status("x", -1), 255);
    }

    #[test]
    fn api_eventinfo_has_clsyncs_layout() {
        assert_eq!(std::mem::size_of::<ApiEventInfo>(), 32);
        assert_eq!(std::mem::offset_of!(ApiEventInfo, path_len), 8);
        assert_eq!(std::mem::offset_of!(ApiEventInfo, path), 16);
        assert_eq!(std::mem::offset_of!(ApiEventInfo, objtype_old), 24);
    }
}
