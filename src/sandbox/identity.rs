//! User and group identities: resolving `--uid`/`--gid` style specs and dropping to them.

use super::{Result, SandboxError};
use nix::unistd::{Gid, Group, Uid, User};

/// The uid/gid used when the administrator configured none: `nobody`, `nogroup`.
const FALLBACK_UNPRIVILEGED: (u32, u32) = (65534, 65534);

/// Resolve a user given as a name (passwd database) or a decimal uid.
///
/// A decimal number is taken as a uid even if no passwd entry has it, like clsync and most
/// daemons do (containers often run with ids that have no name).
pub fn resolve_uid(spec: &str) -> Result<u32> {
    if let Some(n) = parse_id(spec) {
        return Ok(n);
    }
    match User::from_name(spec) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(SandboxError::UnknownUser(spec.to_string())),
        Err(errno) => Err(SandboxError::sys(
            format!("looking up user '{spec}' (getpwnam_r)"),
            errno,
        )),
    }
}

/// Resolve a group given as a name (group database) or a decimal gid.
pub fn resolve_gid(spec: &str) -> Result<u32> {
    if let Some(n) = parse_id(spec) {
        return Ok(n);
    }
    match Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(SandboxError::UnknownGroup(spec.to_string())),
        Err(errno) => Err(SandboxError::sys(
            format!("looking up group '{spec}' (getgrnam_r)"),
            errno,
        )),
    }
}

/// A plain decimal id; `u32::MAX` is refused since it is `(uid_t)-1`, "no change" to setres*id.
fn parse_id(spec: &str) -> Option<u32> {
    if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    spec.parse::<u32>().ok().filter(|&n| n != u32::MAX)
}

/// The unprivileged identity used when none is configured: user `nobody` and group `nogroup`
/// (Debian) or `nobody` (Fedora) looked up by name, else 65534/65534.
pub fn default_unprivileged() -> (u32, u32) {
    let uid = match User::from_name("nobody") {
        Ok(Some(u)) => u.uid.as_raw(),
        _ => FALLBACK_UNPRIVILEGED.0,
    };
    let gid = ["nogroup", "nobody"]
        .iter()
        .find_map(|n| Group::from_name(n).ok().flatten())
        .map(|g| g.gid.as_raw())
        .unwrap_or(FALLBACK_UNPRIVILEGED.1);
    (uid, gid)
}

/// Become `uid`/`gid` for real, effective and saved ids, with no supplementary groups, and
/// verify the result with `getresuid`/`getresgid` and `getgroups`.
///
/// Only syscalls: safe to call in a forked child. Whether capabilities survive the uid change
/// depends on the securebits the caller set (see [`super::caps`]).
pub fn drop_to(uid: u32, gid: u32) -> Result<()> {
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::setgroups(&[]).map_err(|e| SandboxError::sys("setgroups([])", e))?;
    nix::unistd::setresgid(g, g, g)
        .map_err(|e| SandboxError::sys(format!("setresgid({gid}, {gid}, {gid})"), e))?;
    nix::unistd::setresuid(u, u, u)
        .map_err(|e| SandboxError::sys(format!("setresuid({uid}, {uid}, {uid})"), e))?;
    verify_ids(uid, gid)
}

/// Check that real, effective and saved uid and gid are exactly `uid`/`gid` and that no
/// supplementary group is left.
pub fn verify_ids(uid: u32, gid: u32) -> Result<()> {
    let r = nix::unistd::getresuid().map_err(|e| SandboxError::sys("getresuid", e))?;
    if [r.real, r.effective, r.saved] != [Uid::from_raw(uid); 3] {
        return Err(SandboxError::Verify {
            step: "setresuid",
            detail: format!(
                "uids are {}/{}/{} (real/effective/saved), expected {uid}",
                r.real, r.effective, r.saved
            ),
        });
    }
    let r = nix::unistd::getresgid().map_err(|e| SandboxError::sys("getresgid", e))?;
    if [r.real, r.effective, r.saved] != [Gid::from_raw(gid); 3] {
        return Err(SandboxError::Verify {
            step: "setresgid",
            detail: format!(
                "gids are {}/{}/{} (real/effective/saved), expected {gid}",
                r.real, r.effective, r.saved
            ),
        });
    }
    // getgroups(0, NULL) returns the count without touching memory: no allocation needed.
    // SAFETY: a zero size with a null list only queries the number of supplementary groups.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(SandboxError::last_os(|| "getgroups".into()));
    }
    if n != 0 {
        return Err(SandboxError::Verify {
            step: "setgroups([])",
            detail: format!("{n} supplementary groups are still set"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::testutil::*;

    #[test]
    fn resolve_numbers_and_names() {
        assert_eq!(resolve_uid("0").unwrap(), 0);
        assert_eq!(resolve_uid("1234").unwrap(), 1234);
        assert_eq!(resolve_uid("root").unwrap(), 0);
        assert_eq!(resolve_gid("root").unwrap(), 0);
        assert_eq!(resolve_gid("4321").unwrap(), 4321);
        assert!(
            resolve_uid("4294967295").is_err(),
            "(uid_t)-1 must be refused"
        );
        let e = resolve_uid("no-such-user-clsync").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown user 'no-such-user-clsync' (give a name from the passwd database or a decimal uid)"
        );
        assert!(e.to_string().contains("unknown user 'no-such-user-clsync'"));
        assert!(matches!(
            resolve_gid("no-such-group-clsync"),
            Err(SandboxError::UnknownGroup(_))
        ));
        assert!(resolve_uid("").is_err());
        assert!(resolve_uid("-1").is_err());
    }

    #[test]
    fn default_unprivileged_is_nobody() {
        let (u, g) = default_unprivileged();
        let expect_u = User::from_name("nobody")
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .unwrap_or(65534);
        assert_eq!(u, expect_u);
        assert_ne!(u, 0);
        assert_ne!(g, 0);
    }

    #[test]
    fn drop_to_changes_all_ids_in_child() {
        let (uid, gid) = (64123u32, 64124u32);
        let out = in_child(|fd| {
            if drop_to(uid, gid).is_err() {
                return 2;
            }
            // Going back must be impossible now.
            if nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok()
            {
                return 3;
            }
            if !child_send_status(fd) {
                return 4;
            }
            0
        });
        assert_eq!(exited(&out.status), Some(0), "{:?}", out.status);
        let s = out.text();
        assert_eq!(
            status_field(&s, "Uid"),
            Some("64123\t64123\t64123\t64123"),
            "{s}"
        );
        assert_eq!(status_field(&s, "Gid"), Some("64124\t64124\t64124\t64124"));
        assert_eq!(status_field(&s, "Groups"), Some(""));
        // Without KEEP_CAPS, leaving uid 0 clears the capability sets.
        assert_eq!(status_field(&s, "CapEff"), Some("0000000000000000"));
        assert_eq!(status_field(&s, "CapPrm"), Some("0000000000000000"));
    }
}
