//! Decoding of the raw inotify byte stream (`struct inotify_event` records), without unsafe and
//! without trusting the lengths it carries: a record that does not fit ends the batch.
#![forbid(unsafe_code)]

/// One decoded event; `name` is empty for events on the watched directory itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent<'a> {
    pub wd: i32,
    pub mask: u32,
    pub cookie: u32,
    pub name: &'a [u8],
}

impl RawEvent<'_> {
    pub fn is_dir(&self) -> bool {
        self.mask & libc::IN_ISDIR != 0
    }
    pub fn has(&self, bits: u32) -> bool {
        self.mask & bits != 0
    }
}

const HEADER: usize = 16; // wd: i32, mask: u32, cookie: u32, len: u32

/// Iterates over the events in `buf` (the bytes one read(2) returned).
pub fn events(buf: &[u8]) -> impl Iterator<Item = RawEvent<'_>> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let hdr = buf.get(off..off.checked_add(HEADER)?)?;
        let word = |i: usize| [hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]];
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let cookie = u32::from_ne_bytes(word(8));
        let len = u32::from_ne_bytes(word(12)) as usize;
        let start = off + HEADER;
        let raw = buf.get(start..start.checked_add(len)?)?;
        off = start + len;
        // The name is NUL-padded to an alignment boundary.
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Some(RawEvent {
            wd,
            mask,
            cookie,
            name: &raw[..end],
        })
    })
}

/// Appends `ev` as the kernel lays it out: a 16-byte header, then the name NUL-padded to a
/// multiple of 16 (no name: no bytes), plus `extra` more NULs (a length field may promise more
/// padding than that). The inverse of [`events`], for tests, benchmarks and fuzz seeds.
pub fn encode(ev: &RawEvent<'_>, extra: usize, out: &mut Vec<u8>) {
    let padded = if ev.name.is_empty() {
        extra
    } else {
        (ev.name.len() + 1).div_ceil(16) * 16 + extra
    };
    out.extend_from_slice(&ev.wd.to_ne_bytes());
    out.extend_from_slice(&ev.mask.to_ne_bytes());
    out.extend_from_slice(&ev.cookie.to_ne_bytes());
    out.extend_from_slice(&(padded as u32).to_ne_bytes());
    out.extend_from_slice(ev.name);
    out.resize(out.len() + padded - ev.name.len(), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_batch_with_padding_and_hostile_names() {
        let evs = [
            RawEvent {
                wd: 1,
                mask: libc::IN_CREATE,
                cookie: 0,
                name: b"a",
            },
            RawEvent {
                wd: 2,
                mask: libc::IN_MOVED_FROM | libc::IN_ISDIR,
                cookie: 9,
                name: b"-rf\nx y*",
            },
            RawEvent {
                wd: -1,
                mask: libc::IN_Q_OVERFLOW,
                cookie: 0,
                name: b"",
            },
            RawEvent {
                wd: 3,
                mask: libc::IN_MODIFY,
                cookie: 0,
                name: "ünï".as_bytes(),
            },
        ];
        let mut buf = Vec::new();
        for e in &evs {
            encode(e, 0, &mut buf);
        }
        let got: Vec<_> = events(&buf).collect();
        assert_eq!(got, evs);
    }

    #[test]
    fn truncated_records_end_the_batch_without_panic() {
        let mut buf = Vec::new();
        encode(
            &RawEvent {
                wd: 1,
                mask: 2,
                cookie: 0,
                name: b"abcdef",
            },
            0,
            &mut buf,
        );
        for cut in 0..buf.len() {
            assert_eq!(events(&buf[..cut]).count(), 0, "cut {cut}");
        }
        let mut lying = buf.clone();
        lying[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(events(&lying).count(), 0);
    }
}
