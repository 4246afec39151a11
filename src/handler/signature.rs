//! `--modification-signature`: a digest of selected lstat fields per path, so an event that
//! changed none of them (clsync's example: a `touch` when only uid,gid are watched) is skipped.
//!
//! Fields: dev, ino, mode, nlink, uid, gid, rdev, size, blksize, blocks, atime, mtime, ctime;
//! `*` is all of them except nlink (as in clsync 0.4.5). The helper computes the digest from its
//! fstat (the worker cannot stat); only the 64-bit digest crosses the wire.
#![forbid(unsafe_code)]

pub const FIELDS: [&str; 13] = [
    "dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blksize", "blocks", "atime",
    "mtime", "ctime",
];

/// Parses `uid,gid` or `*` into a field mask (bit i = FIELDS[i]); "" is 0 (off).
pub fn parse(s: &str) -> Result<u16, String> {
    let mut mask = 0u16;
    for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if w == "*" {
            mask |= 0x1fff & !(1 << 3);
            continue;
        }
        let i = FIELDS
            .iter()
            .position(|f| *f == w)
            .ok_or_else(|| format!("unknown field {w:?} (fields: {}, or *)", FIELDS.join(", ")))?;
        mask |= 1 << i;
    }
    Ok(mask)
}

/// The digest of the selected fields of `st` (FNV-1a over their bytes); 0 when `mask` is 0.
pub fn digest(mask: u16, st: &libc::stat) -> u64 {
    if mask == 0 {
        return 0;
    }
    let vals: [u64; 13] = [
        st.st_dev,
        st.st_ino,
        st.st_mode as u64,
        st.st_nlink,
        st.st_uid as u64,
        st.st_gid as u64,
        st.st_rdev,
        st.st_size as u64,
        st.st_blksize as u64,
        st.st_blocks as u64,
        (st.st_atime as u64) ^ ((st.st_atime_nsec as u64) << 32),
        (st.st_mtime as u64) ^ ((st.st_mtime_nsec as u64) << 32),
        (st.st_ctime as u64) ^ ((st.st_ctime_nsec as u64) << 32),
    ];
    let mut h: u64 = 0xcbf29ce484222325;
    for (i, v) in vals.iter().enumerate() {
        if mask & (1 << i) != 0 {
            for b in v.to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
        }
    }
    h | 1 // never 0, so 0 can mean "no signature"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_star() {
        assert_eq!(parse("uid,gid").unwrap(), (1 << 4) | (1 << 5));
        assert_eq!(parse("*").unwrap(), 0x1ff7);
        assert_eq!(parse("").unwrap(), 0);
        assert!(parse("uid,colour").unwrap_err().contains("colour"));
    }

    #[test]
    fn digest_sees_only_selected_fields() {
        let mut a = blank_stat();
        a.st_uid = 1000;
        let mut b = a;
        b.st_mtime = 12345;
        let m = parse("uid,gid").unwrap();
        assert_eq!(digest(m, &a), digest(m, &b), "mtime is not selected");
        b.st_uid = 33;
        assert_ne!(digest(m, &a), digest(m, &b));
        assert_eq!(digest(0, &a), 0);
    }

    /// A stat with every field the digest reads set to 0 (built safely from a real stat).
    fn blank_stat() -> libc::stat {
        let mut st = nix::sys::stat::stat("/dev/null").unwrap();
        st.st_dev = 0;
        st.st_ino = 0;
        st.st_mode = 0;
        st.st_nlink = 0;
        st.st_uid = 0;
        st.st_gid = 0;
        st.st_rdev = 0;
        st.st_size = 0;
        st.st_blksize = 0;
        st.st_blocks = 0;
        st.st_atime = 0;
        st.st_atime_nsec = 0;
        st.st_mtime = 0;
        st.st_mtime_nsec = 0;
        st.st_ctime = 0;
        st.st_ctime_nsec = 0;
        st
    }
}
