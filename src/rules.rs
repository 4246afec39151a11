//! The rules file: clsync's `[+-][*fdwms]regexp` grammar and the permission lookup.
//!
//! A rules file is a list of lines, each one rule:
//!
//! ```text
//! # comment
//! +w^$                       permit walking the watch root
//! -f\.tmp$                   reject regular files ending in .tmp
//! -d^sub/deep$               reject the directory sub/deep (walk, monitor and sync)
//! +*                         permit everything else (also the default)
//! ```
//!
//! The first character is the action (`+` permit, `-` reject, `#` comment), the second the object
//! type, the rest a POSIX extended regular expression matched against the path relative to the
//! watch root, without a leading slash (the root itself is the empty string).
//!
//! | type | objects | decides |
//! |------|---------|---------|
//! | `*`  | everything (files, directories, symlinks, devices, ...) | walk, monitor, sync |
//! | `f`  | regular files only (not symlinks) | walk, monitor, sync |
//! | `d`  | directories | walk, monitor, sync |
//! | `w`  | directories | walk |
//! | `m`  | directories | monitor |
//! | `s`  | directories | sync |
//!
//! # `--auto-add-rules-w`
//!
//! With [`ParseOptions::auto_add_rules_w`], every `+` rule whose type is not `w` is followed by
//! `+w` rules for the directories above what it names, so that a walk can reach it past a later
//! `-*` (clsync 0.4.5's `parse_rules_fromfile`, compiled in only with `-DAUTORULESW`). They are
//! made from the rule's text, not from what it matches: the regex, starting with `^` (one is
//! added if missing), is cut at its last `/`, which becomes `$` unless a `$` precedes it, and
//! again, until no `/` is left, and then `^$` (the watch root) follows. So `+f^www/site/index`
//! is followed by `+w^www/site$`, `+w^www$` and `+w^$`. A pattern already added (or one a `+d`/
//! `+*` rule names itself, with a `$` appended) is not added again. `-` rules add nothing. The
//! pieces are regexes of their own: a cut inside a group or bracket (`^(a|b/c)`) gives an
//! invalid one, and the file is refused, as in clsync.
//!
//! # Deliberate differences from clsync 0.4.5
//!
//! * **Line ends.** clsync cuts the last character of every line as if it were the newline, so a
//!   final line without a newline loses a character (a final `-*` becomes `-` and is dropped with
//!   a warning) and a CRLF file keeps the `\r` in every regex. We remove one trailing `\n` and
//!   then one trailing `\r`: a missing final newline and CRLF files both work.
//! * **Short lines.** As in clsync, a line of at most one character (after removing the line end)
//!   is skipped: an empty line, a lone `+`, `-` or `#`.
//! * **Unknown type character.** clsync warns and skips the rule; we refuse the whole file (a typo
//!   must not silently widen what is synced). The type character is case-insensitive for letters
//!   as in clsync (`W` means `w`, not walk+monitor; `F` means `f`, `D` means `d`).
//! * **Errors** (unknown action, unknown type, invalid regex) name the line number and the
//!   offending line (non-printable bytes escaped); the file is rejected as a whole, so a reload
//!   never leaves a half-built rule list.
//! * **No rule count limit.** clsync stops at 256 rules. The file is the administrator's and
//!   matching is linear in the path length per rule, so we accept any number.
//! * **Regex engine.** clsync uses glibc `regcomp(REG_EXTENDED | REG_NOSUB)` in the C locale; we
//!   translate the POSIX extended syntax to the `regex` crate and match bytes, so every path —
//!   valid UTF-8 or not — is matched byte by byte exactly like clsync does (see below). The few
//!   constructs with no faithful translation are refused instead of being guessed at.
//!
//! # Regular expressions
//!
//! POSIX extended syntax, case-sensitive, byte-oriented (the C locale), and an unanchored search
//! (like `regexec`): use `^` and `$` to anchor. `.` and negated bracket expressions match any byte,
//! the newline included; `^`/`$` only match at the start/end of the whole path.
//!
//! * Supported: literals, `.`, `[...]` bracket expressions (ranges, `[:alpha:]`-style classes,
//!   `[=x=]`, `[.x.]` for a single character; a backslash inside brackets is a literal backslash,
//!   as POSIX says), `^`, `$`, `|`, `(...)`, `*`, `+`, `?`, `{n}`, `{n,}`, `{n,m}`, `{,m}`,
//!   stacked repetitions (`a**`, `a+?` means `(a+)?`), and a backslash before any
//!   non-alphanumeric character for that literal character (`\.`, `\/`, `\\`, `\{`, `\(`).
//!   An unmatched `)`, and `]`, `}` outside brackets are literal characters, as in glibc.
//! * GNU escapes: `\w`, `\W`, `\s`, `\S`, `\b`, `\B`, `\<`, `\>`, `` \` `` and `\'` (start and end
//!   of the path), all ASCII.
//! * Refused (clsync's glibc accepts them): back-references `\1`..`\9`, and a backslash before
//!   any other letter or digit (glibc silently reads `\d` as the letter `d`, which is never what a
//!   rule author meant).
//! * Errors as in glibc: a repetition with nothing to repeat (`*a`, `(*a)`, `a|+b`, `(?i)`),
//!   an unclosed `(`, `[` or `{`, a malformed interval, a reversed range, an unknown class name,
//!   a trailing backslash.
#![forbid(unsafe_code)]

use std::fmt;

use regex::bytes::{Regex, RegexBuilder};

/// Permission to descend into a directory during walks (the initial sync and new directories).
pub const WALK: u8 = 1;
/// Permission to put an inotify watch on a directory.
pub const MONITOR: u8 = 2;
/// Permission to sync the object.
pub const SYNC: u8 = 4;
/// All three permissions.
pub const ALL: u8 = WALK | MONITOR | SYNC;

/// The type of the object a path names, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Anything else: symlink, fifo, device, socket. Only `*` rules match it.
    Other,
}

/// Which objects a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TypeSel {
    Any,
    File,
    Dir,
}

impl TypeSel {
    fn matches(self, kind: ObjKind) -> bool {
        match self {
            TypeSel::Any => true,
            TypeSel::File => kind == ObjKind::File,
            TypeSel::Dir => kind == ObjKind::Dir,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    permit: bool,
    types: TypeSel,
    /// The permission bits this rule decides.
    mask: u8,
    regex: Regex,
}

/// A parsed rules file. The default (no rules) permits everything.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    /// How many of them `--auto-add-rules-w` added.
    auto_added: usize,
}

/// How [`Rules::parse_with`] reads a rules file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// clsync's `--auto-add-rules-w`: after each `+` rule of a type other than `w`, add `+w`
    /// rules for the directories above it (see the module documentation).
    pub auto_add_rules_w: bool,
}

/// The `+w` patterns `--auto-add-rules-w` adds after a `+` rule of type `kind` (lower case)
/// with the regex `re`, in order, skipping (and recording in `seen`) those already added.
/// clsync 0.4.5's algorithm on the rule's text, byte for byte.
fn auto_walk_patterns(
    kind: u8,
    re: &[u8],
    seen: &mut std::collections::HashSet<Vec<u8>>,
) -> Vec<Vec<u8>> {
    let mut expr: Vec<u8> = if re.first() == Some(&b'^') {
        re.to_vec()
    } else {
        [&b"^"[..], re].concat()
    };
    if kind == b'd' || kind == b'*' {
        // Such a rule already decides walking for what it names itself: only its parents.
        if expr.last() != Some(&b'$') {
            expr.push(b'$');
        }
        seen.insert(expr.clone());
    }
    let mut out = Vec::new();
    loop {
        let more = match expr.iter().rposition(|&b| b == b'/') {
            Some(i) => {
                // expr[0] is '^', so i >= 1.
                let dollar = expr[i - 1] == b'$';
                expr.truncate(i);
                if !dollar {
                    expr.push(b'$');
                }
                true
            }
            None => {
                expr = b"^$".to_vec();
                false
            }
        };
        if seen.insert(expr.clone()) {
            out.push(expr.clone());
        }
        if !more {
            return out;
        }
    }
}

/// Why a rules file was refused. `line` is 1-based; `text` is the line with its line end removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    /// 1-based line number.
    pub line: usize,
    /// The offending line, line end removed.
    pub text: Vec<u8>,
    /// What is wrong with it.
    pub kind: RulesErrorKind,
}

/// The kinds of [`RulesError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesErrorKind {
    /// The first character is not `+`, `-` or `#`.
    BadAction(u8),
    /// The second character is not one of `*fdwms` (either case).
    BadType(u8),
    /// The regular expression is invalid or uses an unsupported construct.
    BadRegex(String),
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rules line {}: ", self.line)?;
        match &self.kind {
            RulesErrorKind::BadAction(c) => write!(
                f,
                "unknown action '{}' (expected '+', '-' or '#')",
                c.escape_ascii()
            )?,
            RulesErrorKind::BadType(c) => write!(
                f,
                "unknown object type '{}' (expected one of '*', 'f', 'd', 'w', 'm', 's')",
                c.escape_ascii()
            )?,
            RulesErrorKind::BadRegex(msg) => write!(f, "invalid regular expression: {msg}")?,
        }
        write!(f, ": <{}>", self.text.escape_ascii())
    }
}

impl std::error::Error for RulesError {}

impl Rules {
    /// Parses a rules file (see the module documentation for the grammar).
    pub fn parse(text: &[u8]) -> Result<Rules, RulesError> {
        Self::parse_with(text, ParseOptions::default())
    }

    /// [`Rules::parse`] with options (`--auto-add-rules-w`).
    pub fn parse_with(text: &[u8], opts: ParseOptions) -> Result<Rules, RulesError> {
        let mut rules = Vec::new();
        let mut auto_added = 0;
        let mut seen = std::collections::HashSet::new();
        let mut rest = text;
        let mut lineno = 0usize;
        while !rest.is_empty() {
            lineno += 1;
            let (mut line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            rest = next;
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.len() <= 1 {
                continue;
            }
            let err = |kind| RulesError {
                line: lineno,
                text: line.to_vec(),
                kind,
            };
            let permit = match line[0] {
                b'+' => true,
                b'-' => false,
                b'#' => continue,
                c => return Err(err(RulesErrorKind::BadAction(c))),
            };
            let kind = line[1].to_ascii_lowercase();
            let (types, mask) = match kind {
                b'*' => (TypeSel::Any, ALL),
                b'f' => (TypeSel::File, ALL),
                b'd' => (TypeSel::Dir, ALL),
                b'w' => (TypeSel::Dir, WALK),
                b'm' => (TypeSel::Dir, MONITOR),
                b's' => (TypeSel::Dir, SYNC),
                _ => return Err(err(RulesErrorKind::BadType(line[1]))),
            };
            let regex = compile_ere(&line[2..]).map_err(|m| err(RulesErrorKind::BadRegex(m)))?;
            rules.push(Rule {
                permit,
                types,
                mask,
                regex,
            });
            if opts.auto_add_rules_w && permit && kind != b'w' {
                for p in auto_walk_patterns(kind, &line[2..], &mut seen) {
                    let regex = compile_ere(&p).map_err(|m| {
                        err(RulesErrorKind::BadRegex(format!(
                            "the walk rule <+w{}> --auto-add-rules-w makes from it: {m}",
                            p.escape_ascii()
                        )))
                    })?;
                    rules.push(Rule {
                        permit: true,
                        types: TypeSel::Dir,
                        mask: WALK,
                        regex,
                    });
                    auto_added += 1;
                }
            }
        }
        Ok(Rules { rules, auto_added })
    }

    /// How many rules `--auto-add-rules-w` added.
    pub fn auto_added(&self) -> usize {
        self.auto_added
    }

    /// The number of rules (comments and skipped lines not counted).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (everything is permitted).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any `w`, `m` or `s` rule is present (clsync warns about them in the rsync modes).
    pub fn has_walk_monitor_sync_rules(&self) -> bool {
        self.rules.iter().any(|r| r.mask != ALL)
    }

    /// The permissions granted to `path` (relative to the watch root, no leading slash, the root is
    /// empty) of type `kind`, among the `wanted` bits ([`WALK`], [`MONITOR`], [`SYNC`]).
    ///
    /// Rules are scanned in order; a rule is skipped if it decides none of the wanted bits that
    /// are still undecided, or does not apply to `kind`. The first matching rule decides its
    /// still-undecided bits (`+` grants, `-` denies); the scan ends once every wanted bit is
    /// decided. Bits no rule decided are granted. The result contains only wanted bits.
    pub fn perm(&self, path: &[u8], kind: ObjKind, wanted: u8) -> u8 {
        let mut undecided = wanted & ALL;
        let mut granted = 0;
        for rule in &self.rules {
            if undecided == 0 {
                break;
            }
            let bits = rule.mask & undecided;
            if bits == 0 || !rule.types.matches(kind) || !rule.regex.is_match(path) {
                continue;
            }
            if rule.permit {
                granted |= bits;
            }
            undecided &= !bits;
        }
        granted | undecided
    }
}

/// Compiles a POSIX extended regular expression (C locale, bytes) with the `regex` crate.
fn compile_ere(pattern: &[u8]) -> Result<Regex, String> {
    let translated = translate_ere(pattern)?;
    RegexBuilder::new(&translated)
        .unicode(false)
        .dot_matches_new_line(true)
        .case_insensitive(false)
        .multi_line(false)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "the expression is too big".to_string(),
            other => other.to_string(),
        })
}

/// The POSIX character class names (the C locale has exactly these).
const POSIX_CLASSES: [&[u8]; 12] = [
    b"alnum", b"alpha", b"blank", b"cntrl", b"digit", b"graph", b"lower", b"print", b"punct",
    b"space", b"upper", b"xdigit",
];

/// glibc's RE_DUP_MAX.
const DUP_MAX: u32 = 0x7fff;

/// Appends a literal byte in a form the `regex` crate reads as exactly that byte, in or outside
/// a class (with Unicode mode off, `\xHH` is a raw byte).
fn push_byte(out: &mut String, b: u8) {
    if b.is_ascii_alphanumeric() || b == b'_' || b == b'/' {
        out.push(b as char);
    } else {
        out.push_str(&format!("\\x{b:02X}"));
    }
}

/// Translates a POSIX ERE into the `regex` crate's syntax, byte for byte.
fn translate_ere(p: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(p.len() * 2);
    // Output positions of the open groups' `(?:`.
    let mut groups: Vec<usize> = Vec::new();
    // Output position where the last repeatable item starts (None: nothing to repeat).
    let mut atom: Option<usize> = None;
    let mut after_repeat = false;
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        i += 1;
        let mut repeat = false;
        match c {
            b'\\' => {
                let Some(&e) = p.get(i) else {
                    return Err("trailing backslash".into());
                };
                i += 1;
                let start = out.len();
                atom = None;
                match e {
                    b'w' | b'W' | b's' | b'S' => {
                        out.push('\\');
                        out.push(e as char);
                        atom = Some(start);
                    }
                    b'b' | b'B' => {
                        out.push('\\');
                        out.push(e as char);
                    }
                    b'<' => out.push_str(r"\b{start}"),
                    b'>' => out.push_str(r"\b{end}"),
                    b'`' => out.push_str(r"\A"),
                    b'\'' => out.push_str(r"\z"),
                    b'1'..=b'9' => return Err("back-references are not supported".into()),
                    _ if e.is_ascii_alphanumeric() => {
                        return Err(format!(
                            "unsupported escape '\\{}' (POSIX gives it no meaning)",
                            e as char
                        ))
                    }
                    _ => {
                        push_byte(&mut out, e);
                        atom = Some(start);
                    }
                }
            }
            b'[' => {
                let start = out.len();
                i = translate_bracket(p, i, &mut out)?;
                atom = Some(start);
            }
            b'(' => {
                groups.push(out.len());
                out.push_str("(?:");
                atom = None;
            }
            b')' => match groups.pop() {
                Some(start) => {
                    out.push(')');
                    atom = Some(start);
                }
                None => {
                    let start = out.len();
                    push_byte(&mut out, c);
                    atom = Some(start);
                }
            },
            b'|' | b'^' | b'$' => {
                out.push(c as char);
                atom = None;
            }
            b'.' => {
                atom = Some(out.len());
                out.push('.');
            }
            b'*' | b'+' | b'?' | b'{' => {
                let Some(start) = atom else {
                    return Err(format!(
                        "'{}' has nothing to repeat (invalid preceding regular expression)",
                        c as char
                    ));
                };
                if after_repeat {
                    // POSIX stacks repetitions: `a+?` is `(a+)?`, not a lazy `a+`.
                    out.insert_str(start, "(?:");
                    out.push(')');
                }
                if c == b'{' {
                    i = translate_interval(p, i, &mut out)?;
                } else {
                    out.push(c as char);
                }
                repeat = true;
            }
            _ => {
                atom = Some(out.len());
                push_byte(&mut out, c);
            }
        }
        after_repeat = repeat;
    }
    if !groups.is_empty() {
        return Err("unmatched '('".into());
    }
    Ok(out)
}

/// Translates `{n}`, `{n,}`, `{n,m}`, `{,m}`; `i` is just after the `{`. Returns the index after
/// the `}`.
fn translate_interval(p: &[u8], mut i: usize, out: &mut String) -> Result<usize, String> {
    let number = |i: &mut usize| -> Result<Option<u32>, String> {
        let start = *i;
        let mut n: u32 = 0;
        while let Some(d) = p.get(*i).filter(|d| d.is_ascii_digit()) {
            n = n.saturating_mul(10).saturating_add(u32::from(d - b'0'));
            *i += 1;
        }
        if *i == start {
            Ok(None)
        } else if n > DUP_MAX {
            Err(format!("repetition count above {DUP_MAX}"))
        } else {
            Ok(Some(n))
        }
    };
    let min = number(&mut i)?;
    let max = if p.get(i) == Some(&b',') {
        i += 1;
        number(&mut i)?
    } else {
        match min {
            Some(n) => Some(n),
            None => return Err("invalid interval '{...}'".into()),
        }
    };
    if p.get(i) != Some(&b'}') {
        return Err("unclosed or invalid interval '{...}'".into());
    }
    let min_n = min.unwrap_or(0);
    match max {
        Some(m) if m < min_n => return Err("interval '{n,m}' with m < n".into()),
        Some(m) if Some(m) == min => out.push_str(&format!("{{{m}}}")),
        Some(m) => out.push_str(&format!("{{{min_n},{m}}}")),
        None => out.push_str(&format!("{{{min_n},}}")),
    }
    Ok(i + 1)
}

/// One element of a bracket expression.
enum BracketItem {
    Byte(u8),
    Class(&'static [u8]),
}

/// Reads one bracket element at `i` (not the closing `]`); returns it and the index after it.
fn bracket_item(p: &[u8], i: usize) -> Result<(BracketItem, usize), String> {
    let c = p[i];
    if c == b'[' {
        if let Some(&kind @ (b':' | b'=' | b'.')) = p.get(i + 1) {
            let body_start = i + 2;
            let close = p[body_start..]
                .windows(2)
                .position(|w| w[0] == kind && w[1] == b']')
                .ok_or("unclosed '[:', '[=' or '[.' in a bracket expression")?;
            let body = &p[body_start..body_start + close];
            let next = body_start + close + 2;
            return match kind {
                b':' => POSIX_CLASSES
                    .iter()
                    .find(|&&n| n == body)
                    .map(|&n| (BracketItem::Class(n), next))
                    .ok_or_else(|| {
                        format!("unknown character class '[:{}:]'", body.escape_ascii())
                    }),
                _ => match body {
                    [b] => Ok((BracketItem::Byte(*b), next)),
                    _ => Err(format!(
                        "unsupported collating element '[{}{}{}]'",
                        kind as char,
                        body.escape_ascii(),
                        kind as char
                    )),
                },
            };
        }
    }
    Ok((BracketItem::Byte(c), i + 1))
}

/// Translates a bracket expression; `i` is just after the `[`. Returns the index after the `]`.
fn translate_bracket(p: &[u8], mut i: usize, out: &mut String) -> Result<usize, String> {
    const UNCLOSED: &str = "unmatched '['";
    out.push('[');
    if p.get(i) == Some(&b'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    loop {
        let Some(&c) = p.get(i) else {
            return Err(UNCLOSED.into());
        };
        if c == b']' && !first {
            out.push(']');
            return Ok(i + 1);
        }
        first = false;
        let (item, next) = bracket_item(p, i)?;
        i = next;
        // Whether a `-` at `i` would start a range (it is literal right before the `]`).
        let dash_range =
            |i: usize| p.get(i) == Some(&b'-') && p.get(i + 1).is_some_and(|&n| n != b']');
        match item {
            BracketItem::Class(_) if dash_range(i) => {
                return Err("a character class cannot start a range".into());
            }
            BracketItem::Class(name) => {
                out.push_str("[:");
                out.push_str(std::str::from_utf8(name).unwrap_or_default());
                out.push_str(":]");
            }
            BracketItem::Byte(lo) => {
                // A range `lo-hi`, unless the `-` is the last character before `]`.
                if dash_range(i) {
                    let (end, next) = bracket_item(p, i + 1)?;
                    let BracketItem::Byte(hi) = end else {
                        return Err("a character class cannot end a range".into());
                    };
                    if hi < lo {
                        return Err(format!(
                            "invalid range end '{}-{}'",
                            [lo].escape_ascii(),
                            [hi].escape_ascii()
                        ));
                    }
                    i = next;
                    if dash_range(i) {
                        // `[a-c-e]`: glibc refuses a range starting at a range's end.
                        return Err("invalid range end (a range cannot follow a range)".into());
                    }
                    push_byte(out, lo);
                    out.push('-');
                    push_byte(out, hi);
                } else {
                    push_byte(out, lo);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Rules {
        Rules::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn re(pattern: &str) -> Regex {
        compile_ere(pattern.as_bytes()).unwrap_or_else(|e| panic!("{pattern}: {e}"))
    }

    fn ere_err(pattern: &str) -> String {
        compile_ere(pattern.as_bytes()).expect_err(pattern)
    }

    #[test]
    fn root_walk_but_no_sync() {
        let r = rules("+w^$\n-*\n");
        assert_eq!(r.perm(b"", ObjKind::Dir, WALK | SYNC), WALK);
        assert_eq!(r.perm(b"", ObjKind::Dir, WALK), WALK);
        assert_eq!(r.perm(b"", ObjKind::Dir, SYNC), 0);
        assert_eq!(r.perm(b"sub", ObjKind::Dir, ALL), 0);
        assert_eq!(r.perm(b"file", ObjKind::File, SYNC), 0);
    }

    #[test]
    fn reference_example() {
        let r = rules("-f\\.tmp$\n-d^sub/deep$\n+*\n");
        assert_eq!(r.perm(b"a.tmp", ObjKind::File, ALL), 0);
        assert_eq!(r.perm(b"keep/k.tmp", ObjKind::File, SYNC), 0);
        assert_eq!(r.perm(b"b.txt", ObjKind::File, SYNC), SYNC);
        // `f` only matches regular files: a directory or symlink named x.tmp passes.
        assert_eq!(r.perm(b"d.tmp", ObjKind::Dir, ALL), ALL);
        assert_eq!(r.perm(b"l.tmp", ObjKind::Other, SYNC), SYNC);
        assert_eq!(r.perm(b"sub/deep", ObjKind::Dir, WALK | SYNC), 0);
        assert_eq!(r.perm(b"sub/deep", ObjKind::File, SYNC), SYNC);
        assert_eq!(r.perm(b"sub/deeper", ObjKind::Dir, ALL), ALL);
        assert_eq!(r.perm(b"sub", ObjKind::Dir, ALL), ALL);
        assert_eq!(r.perm(b"", ObjKind::Dir, ALL), ALL);
    }

    #[test]
    fn authorized_keys_example() {
        let r = rules("+w^$\n+w^[^/]+$\n+w^[^/]+/\\.ssh$\n+f^[^/]+/\\.ssh/authorized_keys$\n-*\n");
        let walk_sync = WALK | SYNC;
        assert_eq!(r.perm(b"", ObjKind::Dir, WALK), WALK);
        assert_eq!(r.perm(b"", ObjKind::Dir, walk_sync), WALK);
        assert_eq!(r.perm(b"alice", ObjKind::Dir, walk_sync), WALK);
        assert_eq!(r.perm(b"alice/.ssh", ObjKind::Dir, walk_sync), WALK);
        assert_eq!(
            r.perm(b"alice/.ssh/authorized_keys", ObjKind::File, SYNC),
            SYNC
        );
        assert_eq!(r.perm(b"alice/.ssh/id_rsa", ObjKind::File, SYNC), 0);
        assert_eq!(
            r.perm(b"alice/.ssh/authorized_keys", ObjKind::Other, SYNC),
            0
        );
        assert_eq!(r.perm(b"alice/.ssh/authorized_keys", ObjKind::Dir, ALL), 0);
        assert_eq!(r.perm(b"alice/.bashrc", ObjKind::File, SYNC), 0);
        assert_eq!(r.perm(b"alice/docs", ObjKind::Dir, walk_sync), 0);
        assert_eq!(r.perm(b"alice/x/.ssh", ObjKind::Dir, WALK), 0);
        assert_eq!(r.perm(b"top-file", ObjKind::File, SYNC), 0);
        // A home directory name that is not UTF-8 is still one path component.
        assert_eq!(r.perm(b"\xff\xfe", ObjKind::Dir, WALK), WALK);
        assert_eq!(
            r.perm(b"\xff/.ssh/authorized_keys", ObjKind::File, SYNC),
            SYNC
        );
    }

    #[test]
    fn first_matching_rule_decides_only_undecided_bits() {
        let r = rules("-s^x$\n+m^x$\n-d^x$\n");
        assert_eq!(r.perm(b"x", ObjKind::Dir, ALL), MONITOR);
        assert_eq!(r.perm(b"x", ObjKind::Dir, WALK), 0);
        assert_eq!(r.perm(b"x", ObjKind::Dir, MONITOR | SYNC), MONITOR);
        // Undecided bits are granted; only wanted bits are returned.
        let r = rules("-s^x$\n");
        assert_eq!(r.perm(b"x", ObjKind::Dir, ALL), WALK | MONITOR);
        assert_eq!(r.perm(b"x", ObjKind::Dir, SYNC), 0);
        assert_eq!(r.perm(b"x", ObjKind::File, SYNC), SYNC);
        assert_eq!(r.perm(b"y", ObjKind::Dir, 0), 0);
        assert_eq!(Rules::default().perm(b"anything", ObjKind::Other, ALL), ALL);
    }

    #[test]
    fn type_char_case_insensitive() {
        let r = rules("-W^x$\n-F^f$\n-D^d$\n-S^s$\n-M^m$\n");
        assert_eq!(r.len(), 5);
        assert!(r.has_walk_monitor_sync_rules());
        // `W` is `w` (walk only), as in clsync.
        assert_eq!(r.perm(b"x", ObjKind::Dir, ALL), MONITOR | SYNC);
        assert_eq!(r.perm(b"f", ObjKind::File, ALL), 0);
        assert_eq!(r.perm(b"d", ObjKind::Dir, ALL), 0);
        assert_eq!(r.perm(b"s", ObjKind::Dir, ALL), WALK | MONITOR);
        assert_eq!(r.perm(b"m", ObjKind::Dir, ALL), WALK | SYNC);
        assert!(!rules("-*x\n+f.\n").has_walk_monitor_sync_rules());
    }

    #[test]
    fn comments_short_lines_line_ends() {
        let r = rules("# comment\n\n+\n-\n#\n \n-f^a$\r\n\r\n-*");
        assert_eq!(r.len(), 2);
        assert_eq!(
            r.perm(b"b", ObjKind::Dir, ALL),
            0,
            "final -* without newline"
        );
        // CRLF: the `\r` is not part of the regex.
        let r = rules("-f^a$\r\n+*\r\n");
        assert_eq!(r.perm(b"a", ObjKind::File, SYNC), 0);
        assert_eq!(r.perm(b"a\r", ObjKind::File, SYNC), SYNC);
        // `+*` alone: empty regex matches everything.
        let r = rules("-*");
        assert_eq!(r.perm(b"", ObjKind::Dir, ALL), 0);
        assert!(rules("").is_empty());
        assert!(rules("\n\n").is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let e = Rules::parse(b"+*a\n\n x\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(e.kind, RulesErrorKind::BadAction(b' '));
        assert_eq!(e.text, b" x");
        assert!(e.to_string().contains("line 3"), "{e}");

        let e = Rules::parse(b"# c\r\n-x^a$\r\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.kind, RulesErrorKind::BadType(b'x'));
        assert_eq!(e.text, b"-x^a$");

        let e = Rules::parse(b"+*\n+*\n-f(a\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(matches!(e.kind, RulesErrorKind::BadRegex(_)));
        assert!(e.to_string().contains("line 3"), "{e}");

        let e = Rules::parse(b"-f\x1b[31m\xff(\n").unwrap_err();
        let shown = e.to_string();
        assert!(!shown.contains('\x1b'), "{shown}");
        assert!(shown.contains("\\x1b"), "{shown}");

        // A lone space line is too short to matter; two characters are an error.
        assert!(Rules::parse(b" \n").is_ok());
        assert!(Rules::parse(b"  \n").is_err());
        assert!(Rules::parse(b"+ x\n").is_err());
    }

    #[test]
    fn hostile_names_match_as_bytes() {
        let r = rules("-f\\.tmp$\n-f^-\n-f%\n-*^sec.ret$\n+*\n");
        assert_eq!(r.perm(b"a\n.tmp", ObjKind::File, SYNC), 0);
        assert_eq!(r.perm(b"a.tmp\n", ObjKind::File, SYNC), SYNC);
        assert_eq!(r.perm(b"-rf", ObjKind::File, SYNC), 0);
        assert_eq!(r.perm(b"dir/-rf", ObjKind::File, SYNC), SYNC);
        assert_eq!(r.perm(b"100%", ObjKind::File, SYNC), 0);
        assert_eq!(r.perm(b"%TYPE%", ObjKind::File, SYNC), 0);
        // `.` matches any byte, newline and non-UTF-8 included.
        assert_eq!(r.perm(b"sec\nret", ObjKind::Other, SYNC), 0);
        assert_eq!(r.perm(b"sec\xffret", ObjKind::Other, SYNC), 0);
        assert_eq!(r.perm(b"sec\xc3\xa9ret", ObjKind::Other, SYNC), SYNC);
    }

    #[test]
    fn ere_translation() {
        // Unanchored search.
        assert!(re("b").is_match(b"abc"));
        assert!(!re("^b").is_match(b"abc"));
        // Anchors only at the ends of the whole path.
        assert!(!re("^b$").is_match(b"a\nb"));
        assert!(re("").is_match(b""));
        // Backslash inside brackets is literal.
        let r = re(r"[\.]");
        assert!(r.is_match(b"\\") && r.is_match(b".") && !r.is_match(b"x"));
        let r = re(r"^[^\/]+$");
        assert!(r.is_match(b"abc") && !r.is_match(b"a/b") && !r.is_match(b"a\\b"));
        assert!(re(r"^[^/]+$").is_match(b"\xff\n"));
        // `[` and set-operation look-alikes are literal inside brackets.
        let r = re("^[a[b&&~-]+$");
        assert!(r.is_match(b"a[b&~-") && !r.is_match(b"c"));
        let r = re("^[]a]$");
        assert!(r.is_match(b"]") && r.is_match(b"a"));
        let r = re("^[^]a]$");
        assert!(!r.is_match(b"]") && r.is_match(b"b") && r.is_match(b"\n"));
        assert!(re("^[%--]$").is_match(b"-"));
        assert!(re("^[a-]$").is_match(b"-"));
        assert!(re("^[-a]$").is_match(b"-"));
        assert!(re("^[[.-.]a]$").is_match(b"-"));
        assert!(re("^[[.a.]-c]$").is_match(b"b"));
        assert!(re("^[[=a=]]$").is_match(b"a"));
        let r = re("^[[:alpha:][:digit:]_]+$");
        assert!(r.is_match(b"ab_9") && !r.is_match(b"a-b") && !r.is_match(b"\xc3\xa9"));
        assert!(re("^[[:upper:]]$").is_match(b"Q"));
        assert!(!re("^[[:upper:]]$").is_match(b"q"));
        // Non-ASCII bytes, in and out of brackets.
        assert!(re("^\u{e9}$").is_match("\u{e9}".as_bytes()));
        assert!(re("^[\u{e9}]+$").is_match(b"\xc3\xa9\xa9"));
        let r = compile_ere(b"^\xff[\xfe]$").unwrap();
        assert!(r.is_match(b"\xff\xfe"));
        // Escapes of punctuation are literals; `]`, `}` and an unmatched `)` are literal.
        let r = re(r"^\.\/\\\{\(\*\+\?\|\^\$\[$");
        assert!(r.is_match(b"./\\{(*+?|^$["));
        assert!(re("^a]}$").is_match(b"a]}"));
        assert!(re("^a)$").is_match(b"a)"));
        assert!(re("^(a)b)$").is_match(b"ab)"));
        // Intervals and stacked repetitions.
        assert!(re("^a{2}{3}$").is_match(b"aaaaaa"));
        assert!(!re("^a{2}{3}$").is_match(b"aaaa"));
        assert!(re("^a{,2}$").is_match(b"aa"));
        assert!(!re("^a{,2}$").is_match(b"aaa"));
        assert!(re("^a{2,}$").is_match(b"aaaa"));
        assert!(re("^a{1,3}b$").is_match(b"aaab"));
        assert!(re("^a**$").is_match(b"aaa"));
        assert!(re("^(ab|c)+?$").is_match(b"abcab"));
        assert!(re("^x(a|)$").is_match(b"x"));
        assert!(re("^()$").is_match(b""));
        // GNU escapes.
        assert!(re(r"\<a").is_match(b"b a") && !re(r"\<a").is_match(b"ba"));
        assert!(re(r"a\>").is_match(b"a b") && !re(r"a\>").is_match(b"ab"));
        assert!(re(r"\`a").is_match(b"ab") && !re(r"\`a").is_match(b"ba"));
        assert!(re(r"a\'").is_match(b"ba") && !re(r"a\'").is_match(b"ab"));
        assert!(re(r"^\w+\s\W\S$").is_match(b"a_1 -x"));
        assert!(re(r"\bx\b").is_match(b"a x b") && re(r"a\Bb").is_match(b"ab"));
    }

    #[test]
    fn ere_errors() {
        for p in [
            "*a",
            "(*a)",
            "a|+b",
            "^*a",
            "{1}a",
            "(?i)a",
            "a{",
            "a{1",
            "a{1,2",
            "a{ 1}",
            "a{1,0}",
            "a{32768}",
            "[a",
            "[[:foo:]]",
            "[z-a]",
            "[[.hyphen.]]",
            "[[:alpha:]-z]",
            "(a",
            "x\\",
            "\\1",
            "(a)\\1",
            "\\d",
            "\\n",
            "[[:alpha:]",
            "[a-c-e]",
        ] {
            let e = ere_err(p);
            assert!(!e.is_empty(), "{p}");
        }
    }

    #[test]
    fn many_rules() {
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!("-f^file{i}$\n"));
        }
        let r = rules(&text);
        assert_eq!(r.len(), 1000);
        assert_eq!(r.perm(b"file999", ObjKind::File, SYNC), 0);
        assert_eq!(r.perm(b"file1000", ObjKind::File, SYNC), SYNC);
    }

    /// The `+w` patterns clsync 0.4.5's `--auto-add-rules-w` makes, worked out by hand from its
    /// `parse_rules_fromfile` for each branch of the algorithm.
    #[test]
    fn auto_walk_patterns_follow_clsync() {
        let pats = |rules: &[(u8, &str)]| -> Vec<Vec<String>> {
            let mut seen = std::collections::HashSet::new();
            rules
                .iter()
                .map(|(k, re)| {
                    auto_walk_patterns(*k, re.as_bytes(), &mut seen)
                        .into_iter()
                        .map(|p| String::from_utf8(p).unwrap())
                        .collect()
                })
                .collect()
        };
        // Every parent level, then the root; the last `/` becomes `$`.
        assert_eq!(
            pats(&[(b'f', r"^www/site/index\.php$")]),
            [["^www/site$", "^www$", "^$"]]
        );
        // No `^`: one is put in front; no `/`: only the root.
        assert_eq!(pats(&[(b'f', r"\.php$")]), [["^$"]]);
        assert_eq!(pats(&[(b'f', "a/b")]), [["^a$", "^$"]]);
        // m and s rules count like f; the empty regex gives the root.
        assert_eq!(pats(&[(b'm', "^a/b")]), [["^a$", "^$"]]);
        assert_eq!(pats(&[(b's', "")]), [["^$"]]);
        // A `$` right before the cut is kept, not doubled.
        assert_eq!(pats(&[(b'f', "^a$/b")]), [["^a$", "^$"]]);
        // A `/` right after `^`: the root at once, and not twice.
        assert_eq!(pats(&[(b'f', "^/x")]), [vec!["^$"]]);
        // d and * rules: their own pattern (with `$`) counts as added, so only the parents.
        assert_eq!(pats(&[(b'd', "^www/site")]), [["^www$", "^$"]]);
        assert_eq!(pats(&[(b'*', "^www/site$")]), [["^www$", "^$"]]);
        // Nothing twice in one file, counting what a d rule names itself.
        assert_eq!(
            pats(&[
                (b'd', "^www/site"),
                (b'f', "^www/site/x"),
                (b'f', "^www/other/y"),
            ]),
            [vec!["^www$", "^$"], vec![], vec!["^www/other$"]]
        );
        // Cut on the text, not the regex: an escaped slash leaves an escaped `$`.
        assert_eq!(pats(&[(b'f', r"^a\/b")]), [[r"^a\$", "^$"]]);
    }

    #[test]
    fn auto_add_rules_w_lets_walks_reach_permitted_paths() {
        let text = b"+f^www/site/index\\.html$\n-*\n";
        let auto = ParseOptions {
            auto_add_rules_w: true,
        };
        let plain = Rules::parse(text).unwrap();
        let r = Rules::parse_with(text, auto).unwrap();
        assert_eq!((plain.len(), plain.auto_added()), (2, 0));
        assert_eq!((r.len(), r.auto_added()), (5, 3));
        for dir in [&b""[..], b"www", b"www/site"] {
            assert_eq!(plain.perm(dir, ObjKind::Dir, WALK), 0);
            assert_eq!(r.perm(dir, ObjKind::Dir, WALK), WALK, "{dir:?}");
            // Walk only: monitor and sync are still decided by the later `-*`.
            assert_eq!(r.perm(dir, ObjKind::Dir, MONITOR | SYNC), 0, "{dir:?}");
        }
        assert_eq!(r.perm(b"www/other", ObjKind::Dir, WALK), 0);
        assert_eq!(r.perm(b"www/site/sub", ObjKind::Dir, WALK), 0);
        assert_eq!(r.perm(b"www/site/index.html", ObjKind::File, SYNC), SYNC);
        // The added rules sit right after the rule they come from, before the later ones.
        let r = Rules::parse_with(b"+f^a/b$\n-w^a$\n", auto).unwrap();
        assert_eq!(r.perm(b"a", ObjKind::Dir, WALK), WALK);
        // `-` rules and `w` rules (either case) add nothing.
        for t in ["-f^a/b$\n", "+w^a/b$\n", "+W^a/b$\n"] {
            assert_eq!(
                Rules::parse_with(t.as_bytes(), auto).unwrap().auto_added(),
                0,
                "{t}"
            );
        }
        // A cut inside a group leaves an invalid regex: the file is refused, naming the rule.
        let e = Rules::parse_with(b"+f^(a|b/c)\n", auto).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("<+w^(a|b$>"), "{e}");
        assert!(Rules::parse(b"+f^(a|b/c)\n").is_ok());
    }
}
