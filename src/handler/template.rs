//! Handler argument templates, clsync-style: the administrator's argv with `%macro%` slots.
//!
//! * Lowercase macros (`%label%`, `%watch-dir%`, `%destination-dir%`, `%sync-handler%`, …) are
//!   expanded once at start from the configuration ([`Template::parse`]).
//! * Uppercase macros stay as slots filled per call by the helper ([`Template::render`]):
//!   `%INCLUDE-LIST-PATH%` and `%EXCLUDE-LIST-PATH%` (paths of the list files the helper wrote),
//!   `%TYPE%`, `%EVENT-MASK%`; an argument that is exactly `%INCLUDE-LIST%` becomes one argument
//!   per path; an argument that is exactly `%RSYNC-ARGS%` becomes clsync's rsync options.
//! * An unknown uppercase macro stays literal when it is the whole argument and vanishes inside
//!   one (clsync 0.4.5 does the same); an unknown lowercase one expands to nothing.
//! * Paths are never macro-expanded (clsync 0.4.5 expands `%TYPE%` inside file names), and a
//!   path that begins with `-` is passed as `./-name`, so no file name can be read as an option.
#![forbid(unsafe_code)]

use crate::privsep::protocol::{ListKind, SyncType};

/// One piece of an argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Lit(Vec<u8>),
    List(ListKind),
    Type,
    EventMask,
}

/// One template argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TArg {
    /// Concatenated parts (one argv element).
    Parts(Vec<Part>),
    /// `%INCLUDE-LIST%`: one argv element per path.
    Paths,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Template {
    pub args: Vec<TArg>,
}

/// clsync's `%RSYNC-ARGS%`.
pub fn rsync_args(prefer_include: bool) -> Vec<&'static str> {
    if prefer_include {
        vec![
            "-aH",
            "--delete",
            "--include-from",
            "%INCLUDE-LIST-PATH%",
            "--exclude=*",
        ]
    } else {
        vec![
            "-aH",
            "--delete",
            "--exclude-from",
            "%EXCLUDE-LIST-PATH%",
            "--include-from",
            "%INCLUDE-LIST-PATH%",
            "--exclude=*",
        ]
    }
}

fn upper_macro(name: &[u8]) -> Option<Part> {
    Some(match name {
        b"INCLUDE-LIST-PATH" => Part::List(ListKind::Include),
        b"EXCLUDE-LIST-PATH" => Part::List(ListKind::Exclude),
        b"TYPE" => Part::Type,
        b"EVENT-MASK" => Part::EventMask,
        _ => return None,
    })
}

fn push_lit(parts: &mut Vec<Part>, b: &[u8]) {
    if b.is_empty() {
        return;
    }
    if let Some(Part::Lit(l)) = parts.last_mut() {
        l.extend_from_slice(b);
    } else {
        parts.push(Part::Lit(b.to_vec()));
    }
}

impl Template {
    /// Parses `args`; `lower(name)` gives the value of a lowercase macro (None: unknown/unset).
    pub fn parse(
        args: &[Vec<u8>],
        prefer_include: bool,
        lower: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Template {
        let mut out = Vec::new();
        for a in args {
            match a.as_slice() {
                b"%INCLUDE-LIST%" => out.push(TArg::Paths),
                b"%RSYNC-ARGS%" => {
                    for r in rsync_args(prefer_include) {
                        out.push(Self::parse_one(r.as_bytes(), lower));
                    }
                }
                _ => out.push(Self::parse_one(a, lower)),
            }
        }
        Template { args: out }
    }

    fn parse_one(a: &[u8], lower: &dyn Fn(&str) -> Option<Vec<u8>>) -> TArg {
        // A whole-argument unknown uppercase macro stays literal.
        if a.len() > 2 && a[0] == b'%' && a[a.len() - 1] == b'%' {
            let name = &a[1..a.len() - 1];
            if !name.contains(&b'%')
                && name.first().is_some_and(|c| c.is_ascii_uppercase())
                && upper_macro(name).is_none()
            {
                return TArg::Parts(vec![Part::Lit(a.to_vec())]);
            }
        }
        let mut parts = Vec::new();
        let mut i = 0;
        while i < a.len() {
            if a[i] != b'%' {
                let j = a[i..]
                    .iter()
                    .position(|&c| c == b'%')
                    .map_or(a.len(), |p| i + p);
                push_lit(&mut parts, &a[i..j]);
                i = j;
                continue;
            }
            match a[i + 1..].iter().position(|&c| c == b'%') {
                None => break, // unterminated: the rest is dropped, as in clsync
                Some(0) => {
                    push_lit(&mut parts, b"%");
                    i += 2;
                }
                Some(len) => {
                    let name = &a[i + 1..i + 1 + len];
                    if let Some(p) = upper_macro(name) {
                        parts.push(p);
                    } else if name.first().is_some_and(|c| c.is_ascii_lowercase()) {
                        if let Some(v) = lower(&String::from_utf8_lossy(name)) {
                            push_lit(&mut parts, &v);
                        }
                    }
                    i += len + 2;
                }
            }
        }
        TArg::Parts(parts)
    }

    /// The list files this template refers to, in order of first use.
    pub fn lists(&self) -> Vec<ListKind> {
        let mut v = Vec::new();
        for a in &self.args {
            if let TArg::Parts(ps) = a {
                for p in ps {
                    if let Part::List(k) = p {
                        if !v.contains(k) {
                            v.push(*k);
                        }
                    }
                }
            }
        }
        v
    }

    /// Whether `%INCLUDE-LIST%` appears (paths go into argv).
    pub fn takes_paths(&self) -> bool {
        self.args.contains(&TArg::Paths)
    }

    /// Number of argv elements apart from the paths.
    pub fn fixed_len(&self) -> usize {
        self.args.iter().filter(|a| **a != TArg::Paths).count()
    }

    /// Builds argv (without argv[0]). `list_path(kind)` is the file the helper wrote; `paths`
    /// are already in their final form (see [`path_arg`]).
    pub fn render(
        &self,
        list_path: &dyn Fn(ListKind) -> Vec<u8>,
        sync_type: SyncType,
        event_mask: Option<u32>,
        paths: &[Vec<u8>],
    ) -> Vec<Vec<u8>> {
        let mut argv = Vec::new();
        for a in &self.args {
            match a {
                TArg::Paths => argv.extend(paths.iter().cloned()),
                TArg::Parts(ps) => {
                    let mut s = Vec::new();
                    for p in ps {
                        match p {
                            Part::Lit(l) => s.extend_from_slice(l),
                            Part::List(k) => s.extend_from_slice(&list_path(*k)),
                            Part::Type => s.extend_from_slice(sync_type.word().as_bytes()),
                            Part::EventMask => {
                                if let Some(m) = event_mask {
                                    s.extend_from_slice(m.to_string().as_bytes());
                                }
                            }
                        }
                    }
                    argv.push(s);
                }
            }
        }
        argv
    }
}

/// A path as a handler argument: relative paths as they are (the root is `.`), absolute ones
/// prefixed with the watch dir; a relative path beginning with `-` becomes `./-…`.
pub fn path_arg(rel: &[u8], absolute_under: Option<&[u8]>) -> Vec<u8> {
    match absolute_under {
        Some(root) => {
            let mut v = root.to_vec();
            if !rel.is_empty() {
                v.push(b'/');
                v.extend_from_slice(rel);
            }
            v
        }
        None if rel.is_empty() => b".".to_vec(),
        None if rel[0] == b'-' => {
            let mut v = b"./".to_vec();
            v.extend_from_slice(rel);
            v
        }
        None => rel.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(n: &str) -> Option<Vec<u8>> {
        match n {
            "label" => Some(b"nolabel".to_vec()),
            "watch-dir" => Some(b"/srv/src".to_vec()),
            "destination-dir" => Some(b"/srv/dst".to_vec()),
            _ => None,
        }
    }

    fn t(args: &[&str]) -> Template {
        let a: Vec<Vec<u8>> = args.iter().map(|s| s.as_bytes().to_vec()).collect();
        Template::parse(&a, false, &lower)
    }

    fn render(tp: &Template, ty: SyncType, mask: Option<u32>, paths: &[&str]) -> Vec<String> {
        let lp = |k: ListKind| {
            if k == ListKind::Include {
                b"/L/list".to_vec()
            } else {
                b"/L/exclist".to_vec()
            }
        };
        let p: Vec<Vec<u8>> = paths.iter().map(|s| s.as_bytes().to_vec()).collect();
        tp.render(&lp, ty, mask, &p)
            .into_iter()
            .map(|v| String::from_utf8(v).unwrap())
            .collect()
    }

    #[test]
    fn shell_default_and_lists() {
        let tp = t(&["synclist", "%label%", "%INCLUDE-LIST-PATH%"]);
        assert_eq!(tp.lists(), vec![ListKind::Include]);
        assert_eq!(
            render(&tp, SyncType::Synclist, None, &[]),
            ["synclist", "nolabel", "/L/list"]
        );
    }

    #[test]
    fn rsync_args_expand_in_place() {
        let tp = t(&["%RSYNC-ARGS%", "%watch-dir%/", "%destination-dir%/"]);
        assert_eq!(tp.lists(), vec![ListKind::Exclude, ListKind::Include]);
        assert_eq!(
            render(&tp, SyncType::Rsynclist, None, &[]),
            [
                "-aH",
                "--delete",
                "--exclude-from",
                "/L/exclist",
                "--include-from",
                "/L/list",
                "--exclude=*",
                "/srv/src/",
                "/srv/dst/"
            ]
        );
    }

    #[test]
    fn include_list_becomes_one_argument_per_path_never_expanded() {
        let tp = t(&["sync", "%label%", "%EVENT-MASK%", "%INCLUDE-LIST%"]);
        assert!(tp.takes_paths());
        assert_eq!(
            render(
                &tp,
                SyncType::Sync,
                Some(256),
                &["a", "pct%TYPE%x", "./-rf"]
            ),
            ["sync", "nolabel", "256", "a", "pct%TYPE%x", "./-rf"]
        );
    }

    #[test]
    fn macro_corner_cases_follow_clsync() {
        // Unknown uppercase: literal as a whole argument, vanishes inside one.
        assert_eq!(render(&t(&["%FOO%"]), SyncType::Sync, None, &[]), ["%FOO%"]);
        assert_eq!(render(&t(&["a%FOO%b"]), SyncType::Sync, None, &[]), ["ab"]);
        // Unknown lowercase vanishes; %% is a percent sign; an unterminated % truncates.
        assert_eq!(
            render(&t(&["x%nonexistent%y"]), SyncType::Sync, None, &[]),
            ["xy"]
        );
        assert_eq!(render(&t(&["100%%"]), SyncType::Sync, None, &[]), ["100%"]);
        assert_eq!(render(&t(&["100%"]), SyncType::Sync, None, &[]), ["100"]);
        assert_eq!(render(&t(&["%%x"]), SyncType::Sync, None, &[]), ["%x"]);
        assert_eq!(
            render(
                &t(&["t=%TYPE%", "%EVENT-MASK%"]),
                SyncType::Initialsync,
                None,
                &[]
            ),
            ["t=initialsync", ""]
        );
    }

    #[test]
    fn path_arguments_cannot_be_options() {
        assert_eq!(path_arg(b"", None), b".");
        assert_eq!(path_arg(b"-rf", None), b"./-rf");
        assert_eq!(
            path_arg(b"--reference=/etc/shadow", None),
            b"./--reference=/etc/shadow"
        );
        assert_eq!(path_arg(b"a/-b", None), b"a/-b");
        assert_eq!(path_arg(b"x", Some(b"/srv")), b"/srv/x");
        assert_eq!(path_arg(b"", Some(b"/srv")), b"/srv");
    }
}
