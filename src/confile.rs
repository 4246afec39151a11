//! Configuration files: clsync's keyfile format, unchanged, and a native TOML form with the same
//! blocks and inheritance. Both give, for the chosen block, `(key, value)` pairs whose keys are
//! long option names; `cli::with_config` turns them into command-line arguments, so there is one
//! definition of every option and the command line always wins.
//!
//! Keyfile (GLib GKeyFile, as clsync reads it): `[block]` lines, `key = value` lines (spaces
//! around `=` ignored, the value taken raw), `#` comments. Inheritance only through an explicit
//! `config-block-inherits = NAME`. Unknown keys are ignored with a warning, as clsync ignores
//! them; a missing block configures nothing and a repeated key's last value wins, as in clsync.
//! A cycle of inheritance is an error (clsync 0.4.5 hangs).
//!
//! TOML: `[block]` tables with the same keys; values are strings, integers, booleans, or arrays
//! (joined with commas; for the `--` key, the handler arguments one per element). Unknown keys
//! are an error naming the key.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One block: its keys in file order.
pub type Block = Vec<(String, Value)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A raw value (keyfile) or a scalar (TOML).
    Text(String),
    /// A TOML array of handler arguments for the `--` key.
    Args(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfFile {
    pub path: PathBuf,
    /// TOML files reject unknown keys; keyfiles warn.
    pub strict: bool,
    pub blocks: BTreeMap<String, Block>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    pub path: PathBuf,
    pub msg: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config file {}: {}", self.path.display(), self.msg)
    }
}

impl std::error::Error for ConfError {}

fn err(path: &Path, msg: impl Into<String>) -> ConfError {
    ConfError {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Where clsync looks without `-H`; the first file that loads is used.
pub fn search_list() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".clsync.conf"));
    }
    for p in [
        "/etc/clsync/clsync.conf",
        "/etc/clsync.conf",
        "/usr/local/etc/clsync/clsync.conf",
        "/usr/local/etc/clsync.conf",
    ] {
        v.push(PathBuf::from(p));
    }
    v
}

/// Reads and parses a file (`.toml` by extension, the keyfile format otherwise).
pub fn load(path: &Path) -> Result<ConfFile, ConfError> {
    // GKeyFile reads regular files only (`-H /dev/null` fails in clsync too).
    let meta = std::fs::metadata(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(err(path, "not a regular file"));
    }
    let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| err(path, "not UTF-8"))?;
    if path.extension().is_some_and(|e| e == "toml") {
        parse_toml(path, &text)
    } else {
        parse_keyfile(path, &text)
    }
}

pub fn parse_keyfile(path: &Path, text: &str) -> Result<ConfFile, ConfError> {
    let mut blocks: BTreeMap<String, Block> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.trim_end().strip_suffix(']').ok_or_else(|| {
                err(
                    path,
                    format!("line {}: unterminated block name: {raw}", i + 1),
                )
            })?;
            // GKeyFile's group names: not empty, no brackets, no control characters.
            if name.is_empty() || name.contains(['[', ']']) || name.contains(char::is_control) {
                return Err(err(
                    path,
                    format!("line {}: invalid block name: {raw}", i + 1),
                ));
            }
            blocks.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| {
            err(
                path,
                format!("line {}: neither [block] nor key = value: {raw}", i + 1),
            )
        })?;
        let Some(block) = &current else {
            return Err(err(
                path,
                format!("line {}: key outside of any [block]", i + 1),
            ));
        };
        let key = k.trim().to_string();
        if key.is_empty() {
            return Err(err(path, format!("line {}: empty key: {raw}", i + 1)));
        }
        // As GKeyFile: blanks after `=` are dropped, trailing ones are part of the value.
        let value = Value::Text(v.trim_start().to_string());
        let entries = blocks.entry(block.clone()).or_default();
        // A repeated key (also in a repeated [block]): the last one wins, as in GKeyFile; values
        // never accumulate (lists are comma lists).
        match entries.iter_mut().find(|(e, _)| *e == key) {
            Some(e) => {
                crate::warning!(
                    "{}: line {}: key {key:?} repeated in block [{block}]: the last one is used",
                    path.display(),
                    i + 1
                );
                e.1 = value;
            }
            None => entries.push((key, value)),
        }
    }
    Ok(ConfFile {
        path: path.to_path_buf(),
        strict: false,
        blocks,
    })
}

pub fn parse_toml(path: &Path, text: &str) -> Result<ConfFile, ConfError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(path, e.to_string()))?;
    let mut blocks = BTreeMap::new();
    for (name, v) in table {
        let toml::Value::Table(t) = v else {
            return Err(err(
                path,
                format!("top-level key {name:?}: only [block] tables are allowed"),
            ));
        };
        let mut entries = Vec::new();
        for (k, v) in t {
            let value = match (&*k, v) {
                ("--" | "---", toml::Value::Array(a)) => {
                    let args = a
                        .into_iter()
                        .map(|x| {
                            scalar(&x).ok_or_else(|| {
                                err(path, format!("[{name}] {k}: arguments must be strings"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Value::Args(args)
                }
                (_, toml::Value::Array(a)) => {
                    let parts = a
                        .iter()
                        .map(|x| {
                            scalar(x).ok_or_else(|| {
                                err(path, format!("[{name}] {k}: list elements must be scalars"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Value::Text(parts.join(","))
                }
                (_, v) => Value::Text(
                    scalar(&v)
                        .ok_or_else(|| err(path, format!("[{name}] {k}: unsupported value")))?,
                ),
            };
            entries.push((k, value));
        }
        blocks.insert(name, entries);
    }
    Ok(ConfFile {
        path: path.to_path_buf(),
        strict: true,
        blocks,
    })
}

fn scalar(v: &toml::Value) -> Option<String> {
    Some(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => if *b { "1" } else { "0" }.to_string(),
        toml::Value::Float(f) => f.to_string(),
        _ => return None,
    })
}

impl ConfFile {
    /// The effective keys of `block` and its `config-block-inherits` chain: a key of a block
    /// hides the same key of its parents. `inherits` overrides the first block's parent.
    pub fn resolve(&self, block: &str, inherits: Option<&str>) -> Result<Block, ConfError> {
        let mut out: Block = Vec::new();
        let mut chain: Vec<String> = Vec::new();
        let mut name = Some(block.to_string());
        let mut first = true;
        while let Some(n) = name.take() {
            if chain.contains(&n) {
                chain.push(n);
                return Err(err(
                    &self.path,
                    format!("config-block-inherits cycle: {}", chain.join(" -> ")),
                ));
            }
            let Some(entries) = self.blocks.get(&n) else {
                // A missing block (the -K block, or a parent) configures nothing; clsync reads
                // such a file fine.
                if !(first && n == "default") {
                    crate::warning!(
                        "{}: no block [{n}]: nothing read from it",
                        self.path.display()
                    );
                }
                return Ok(out);
            };
            chain.push(n.clone());
            for (k, v) in entries {
                if k == "config-block-inherits" {
                    continue;
                }
                if !out.iter().any(|(e, _)| e == k) {
                    out.push((k.clone(), v.clone()));
                }
            }
            let parent = if first && inherits.is_some() {
                inherits.map(str::to_string)
            } else {
                entries
                    .iter()
                    .find(|(k, _)| k == "config-block-inherits")
                    .and_then(|(_, v)| match v {
                        Value::Text(t) if !t.is_empty() => Some(t.clone()),
                        _ => None,
                    })
            };
            name = parent;
            first = false;
        }
        Ok(out)
    }
}

/// Splits a keyfile `--` value into arguments like clsync: on spaces and tabs, with `"…"` and
/// `'…'` grouping (quotes may sit inside a word). Unlike clsync 0.4.5 a quoted last word is kept
/// and `\"` is an escaped quote (clsync drops the one and hangs on the other).
pub fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, ' ' | '\t') => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kf(text: &str) -> ConfFile {
        parse_keyfile(Path::new("t.conf"), text).unwrap()
    }

    #[test]
    fn keyfile_blocks_inheritance_and_first_key_wins() {
        let f = kf("# comment\n[default]\nwatch-dir = /srv/a\ndelay-sync=5\n\n[child]\nconfig-block-inherits = default\ndelay-sync = 1\nlabel=x\n");
        let r = f.resolve("child", None).unwrap();
        let keys: Vec<(&str, &Value)> = r.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(
            keys,
            vec![
                ("delay-sync", &Value::Text("1".into())),
                ("label", &Value::Text("x".into())),
                ("watch-dir", &Value::Text("/srv/a".into())),
            ]
        );
        // No implicit parent: [child] without the key sees only itself.
        let f = kf("[default]\nlabel=d\n[child]\nmode=shell\n");
        assert_eq!(f.resolve("child", None).unwrap().len(), 1);
        assert_eq!(f.resolve("child", Some("default")).unwrap().len(), 2);
    }

    #[test]
    fn cycles_are_errors_not_hangs_and_missing_blocks_configure_nothing() {
        let f = kf("[a]\nconfig-block-inherits=b\n[b]\nconfig-block-inherits=a\n");
        let e = f.resolve("a", None).unwrap_err();
        assert!(e.msg.contains("cycle: a -> b -> a"), "{e}");
        assert!(f.resolve("nope", None).unwrap().is_empty());
        let f = kf("[a]\nlabel=a\nconfig-block-inherits=gone\n");
        assert_eq!(f.resolve("a", None).unwrap().len(), 1);
        assert!(kf("").resolve("default", None).unwrap().is_empty());
    }

    #[test]
    fn keyfile_values_keep_trailing_blanks_and_names_are_checked_like_gkeyfile() {
        let f = kf("[a]\r\n  x = \t v \t\r\n");
        assert_eq!(
            f.resolve("a", None).unwrap(),
            [("x".to_string(), Value::Text("v \t".into()))]
        );
        for bad in ["[a]\n= v\n", "[]\n", "[a]b]\n", "x = 1\n[a]\n"] {
            assert!(parse_keyfile(Path::new("t"), bad).is_err(), "{bad:?}");
        }
        assert!(load(Path::new("/dev/null"))
            .unwrap_err()
            .msg
            .contains("not a regular file"));
    }

    #[test]
    fn keyfile_errors_name_the_line() {
        let e = parse_keyfile(Path::new("t"), "[a]\nnonsense\n").unwrap_err();
        assert!(e.msg.contains("line 2"), "{e}");
        // A repeated key, also across a repeated block: the last value (GKeyFile).
        let f = parse_keyfile(Path::new("t"), "[a]\nx=1\ny=0\n[b]\n[a]\nx=2\n").unwrap();
        assert_eq!(
            f.resolve("a", None).unwrap(),
            [
                ("x".to_string(), Value::Text("2".into())),
                ("y".to_string(), Value::Text("0".into()))
            ]
        );
    }

    #[test]
    fn toml_values_and_handler_arguments() {
        let f = parse_toml(
            Path::new("t.toml"),
            "[default]\nmode = \"rsyncdirect\"\ndelay-sync = 3\nexit-on-no-events = true\nignore-exitcode = [23, 24]\n\"--\" = [\"-a\", \"b c\"]\n",
        )
        .unwrap();
        let r = f.resolve("default", None).unwrap();
        let get = |k: &str| r.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone());
        assert_eq!(get("delay-sync"), Some(Value::Text("3".into())));
        assert_eq!(get("exit-on-no-events"), Some(Value::Text("1".into())));
        assert_eq!(get("ignore-exitcode"), Some(Value::Text("23,24".into())));
        assert_eq!(
            get("--"),
            Some(Value::Args(vec!["-a".into(), "b c".into()]))
        );
        assert!(parse_toml(Path::new("t.toml"), "mode = 1\n").is_err());
    }

    #[test]
    fn argument_splitting_like_clsync_without_its_bugs() {
        assert_eq!(split_args("a  b\tc"), ["a", "b", "c"]);
        assert_eq!(split_args("x\"b c\"y 'd e'"), ["xb cy", "d e"]);
        assert_eq!(
            split_args("a \"b c\""),
            ["a", "b c"],
            "a quoted last word is kept"
        );
        assert_eq!(split_args(r#"a\"b"#), ["a\"b"]);
        assert_eq!(
            split_args("%INCLUDE-LIST% %destination-dir%/"),
            ["%INCLUDE-LIST%", "%destination-dir%/"]
        );
    }
}
