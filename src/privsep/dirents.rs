//! Parsing the records getdents64(2) writes ([`crate::sys::getdents64`]): bounds-checked, so a
//! record the kernel never writes (short, overlong, no NUL) is an error, not a wrong read.
#![forbid(unsafe_code)]

use crate::privsep::protocol::Kind;

/// `struct linux_dirent64`: d_ino (8), d_off (8), d_reclen (2), d_type (1), then the name.
const NAME_AT: usize = 19;

/// One directory entry: its name (without the NUL) and its type, `None` where the file system
/// does not report types (DT_UNKNOWN: the caller lstats).
#[derive(Debug, PartialEq, Eq)]
pub struct Dirent<'a> {
    pub name: &'a [u8],
    pub kind: Option<Kind>,
}

/// The records in `buf` (the bytes one getdents64 call returned), `.` and `..` included.
pub fn parse(buf: &[u8]) -> impl Iterator<Item = Result<Dirent<'_>, &'static str>> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off >= buf.len() {
            return None;
        }
        let rec = match record(&buf[off..]) {
            Ok((d, len)) => {
                off += len;
                Ok(d)
            }
            Err(e) => {
                off = buf.len();
                Err(e)
            }
        };
        Some(rec)
    })
}

fn record(b: &[u8]) -> Result<(Dirent<'_>, usize), &'static str> {
    let head = b.get(..NAME_AT).ok_or("short dirent record")?;
    let len = usize::from(u16::from_ne_bytes([head[16], head[17]]));
    let body = b
        .get(NAME_AT..len)
        .ok_or("dirent record length out of bounds")?;
    let nul = body
        .iter()
        .position(|&c| c == 0)
        .ok_or("dirent name without NUL")?;
    let kind = match head[18] {
        libc::DT_UNKNOWN => None,
        libc::DT_DIR => Some(Kind::Dir),
        libc::DT_REG => Some(Kind::File),
        libc::DT_LNK => Some(Kind::Symlink),
        _ => Some(Kind::Other),
    };
    Ok((
        Dirent {
            name: &body[..nul],
            kind,
        },
        len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::fd::AsFd;

    #[test]
    fn a_real_directory_reads_like_read_dir() {
        let dir = std::env::temp_dir().join(format!("clsync-dirents-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let mut want = BTreeMap::new();
        for i in 0..600 {
            // long names, so the listing takes several calls with a small buffer
            let name = format!("{i:04}-{}-\n%-x", "n".repeat(40));
            std::fs::write(dir.join(&name), b"").unwrap();
            want.insert(name.into_bytes(), Some(Kind::File));
        }
        std::fs::create_dir(dir.join("sub")).unwrap();
        want.insert(b"sub".to_vec(), Some(Kind::Dir));
        std::os::unix::fs::symlink("/etc", dir.join("-lnk")).unwrap();
        want.insert(b"-lnk".to_vec(), Some(Kind::Symlink));
        let f = std::fs::File::open(&dir).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = BTreeMap::new();
        let mut calls = 0;
        loop {
            let n = crate::sys::getdents64(f.as_fd(), &mut buf).unwrap();
            if n == 0 {
                break;
            }
            calls += 1;
            for d in parse(&buf[..n]) {
                let d = d.unwrap();
                if d.name != b"." && d.name != b".." {
                    got.insert(d.name.to_vec(), d.kind);
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            calls > 1,
            "one call read it all: the test needs a smaller buffer"
        );
        assert_eq!(got, want);
    }

    fn rec(reclen: u16, typ: u8, name: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 16];
        v.extend_from_slice(&reclen.to_ne_bytes());
        v.push(typ);
        v.extend_from_slice(name);
        v
    }

    #[test]
    fn malformed_records_are_errors_and_end_the_parse() {
        let ok = rec(24, libc::DT_DIR, b"abcd\0");
        assert_eq!(
            parse(&ok).collect::<Vec<_>>(),
            vec![Ok(Dirent {
                name: b"abcd",
                kind: Some(Kind::Dir)
            })]
        );
        let cases: [(&str, Vec<u8>); 4] = [
            ("short", ok[..10].to_vec()),
            ("length beyond the buffer", rec(200, libc::DT_REG, b"x\0")),
            ("length inside the header", rec(3, libc::DT_REG, b"x\0")),
            ("no NUL", rec(21, libc::DT_REG, b"xy")),
        ];
        for (what, bytes) in cases {
            let mut both = ok.clone();
            both.extend_from_slice(&bytes);
            both.extend_from_slice(&ok);
            let got: Vec<_> = parse(&both).collect();
            assert_eq!(got.len(), 2, "{what}: {got:?}");
            assert!(got[0].is_ok() && got[1].is_err(), "{what}: {got:?}");
        }
    }
}
