//! The list format of the shell mode (and of list files in the direct and simple modes):
//! one line `sync <label> <mask> <path>` per path, relative to the watch root (the root is the
//! empty path, so its line ends in a space, as in clsync).
//!
//! A path containing a newline or a carriage return cannot be written as one line: clsync 0.4.5
//! drops it (a lost change). Such a path is written C-escaped instead — `\n`, `\r` and `\\` —
//! and only such a path, so every other line is byte for byte clsync's and no name can add a line.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::io::{self, Write};

/// `path`, escaped when it holds a line break.
pub fn line_path(path: &[u8]) -> Cow<'_, [u8]> {
    if !path.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Cow::Borrowed(path);
    }
    let mut v = Vec::with_capacity(path.len() + 8);
    for &b in path {
        match b {
            b'\n' => v.extend_from_slice(b"\\n"),
            b'\r' => v.extend_from_slice(b"\\r"),
            b'\\' => v.extend_from_slice(b"\\\\"),
            b => v.push(b),
        }
    }
    Cow::Owned(v)
}

/// Writes one `sync <label> <mask> <path>` line per entry.
pub fn write_sync_lines<'a>(
    out: &mut impl Write,
    label: &str,
    entries: impl IntoIterator<Item = (&'a [u8], u32)>,
) -> io::Result<()> {
    for (path, mask) in entries {
        write!(out, "sync {label} {mask} ")?;
        out.write_all(&line_path(path))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes one path per line (exclude lists of the non-rsync modes).
pub fn write_paths<'a>(
    out: &mut impl Write,
    paths: impl IntoIterator<Item = &'a [u8]>,
) -> io::Result<()> {
    for p in paths {
        out.write_all(&line_path(p))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_clsync_and_names_cannot_add_lines() {
        let mut out = Vec::new();
        let entries: Vec<(&[u8], u32)> = vec![
            (b"nd/f", 256),
            (b"b.txt", 10),
            (b"", 1073742080),
            (b"evil\nsync nolabel 512 /etc/passwd", 256),
            (b"back\\slash", 2),
        ];
        write_sync_lines(&mut out, "nolabel", entries).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "sync nolabel 256 nd/f\n\
             sync nolabel 10 b.txt\n\
             sync nolabel 1073742080 \n\
             sync nolabel 256 evil\\nsync nolabel 512 /etc/passwd\n\
             sync nolabel 2 back\\slash\n"
        );
        assert_eq!(text.lines().count(), 5);
    }
}
