//! The built-in ownership and mode fixer for the web-root recipe (`-Mdirect -Schown …`).
//!
//! clsync's manual fixes ownership of uploaded files with
//! `-Mdirect -Schown … -- --from=root www-data:www-data %INCLUDE-LIST%`; run as root, `chown`
//! follows a tenant's symlink `evil -> /etc/shadow` and a file named `--reference=…` is read as
//! an option. Here such a handler is recognised at start and performed natively by a child of
//! the helper on fds from `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`:
//! symlinks are never followed (a symlink's own owner may be changed, as `chown -h` does),
//! nothing outside the tree is reached, a file with more than one hard link is never changed,
//! and `--from` is checked on the open file right before the change.
//!
//! This module parses the recipe (pure; the syscalls live in `privsep::fixer`). Arguments it
//! does not understand make the start fail, so the daemon never silently does less (or more)
//! than the administrator wrote; `--unsafe-external-handler` runs the program itself instead.
#![forbid(unsafe_code)]

use std::fmt;

/// An owner or group condition/target, resolved to numbers at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// One clause of a symbolic mode: who, operator, bits (`X` kept apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clause {
    pub who: u32,
    pub op: u8,
    pub bits: u32,
    pub cond_x: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModeSpec {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

impl ModeSpec {
    /// The new permission bits of an object with `old` mode bits (`is_dir` for `X`).
    pub fn apply(&self, old: u32, is_dir: bool) -> u32 {
        match self {
            ModeSpec::Octal(m) => *m,
            ModeSpec::Symbolic(clauses) => {
                let mut m = old & 0o7777;
                for c in clauses {
                    let mut bits = c.bits;
                    if c.cond_x && (is_dir || m & 0o111 != 0) {
                        bits |= 0o111;
                    }
                    let bits = bits & c.who;
                    match c.op {
                        b'+' => m |= bits,
                        b'-' => m &= !bits,
                        _ => m = (m & !c.who) | bits,
                    }
                }
                m
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fixer {
    /// chown/chgrp: set `to`, only where the current owner matches `from`.
    Own {
        to: Owner,
        from: Owner,
    },
    Mode(ModeSpec),
}

impl fmt::Display for Fixer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fixer::Own { to, from } => write!(
                f,
                "chown to {:?}:{:?} from {:?}:{:?}",
                to.uid, to.gid, from.uid, from.gid
            ),
            Fixer::Mode(m) => write!(f, "chmod {m:?}"),
        }
    }
}

/// Resolves user and group names (the sandbox's identity lookups, passed in to keep this pure).
pub struct Ids<'a> {
    pub user: &'a dyn Fn(&str) -> Result<u32, String>,
    pub group: &'a dyn Fn(&str) -> Result<u32, String>,
}

/// Which programs are recognised: by their file name.
pub fn recognised(program_name: &str) -> bool {
    matches!(program_name, "chown" | "chgrp" | "chmod")
}

/// Parses the recipe. `args` are the handler arguments; exactly one must be `%INCLUDE-LIST%`.
pub fn parse(program_name: &str, args: &[String], ids: &Ids<'_>) -> Result<Fixer, String> {
    let mut from = Owner::default();
    let mut rest: Vec<&str> = Vec::new();
    let mut paths = 0;
    let mut options_done = false;
    for a in args {
        let a = a.as_str();
        if a == "%INCLUDE-LIST%" {
            paths += 1;
            continue;
        }
        if !options_done && a.starts_with('-') && program_name != "chmod"
            || (program_name == "chmod" && a.starts_with("--"))
        {
            match a {
                "--" => options_done = true,
                "-h" | "--no-dereference" | "-f" | "--silent" | "--quiet" | "-v" | "--verbose"
                | "-c" | "--changes" => {}
                _ if a.starts_with("--from=") && program_name != "chmod" => {
                    from = owner(&a[7..], ids)?
                }
                _ => {
                    return Err(format!(
                        "{program_name}: option {a:?} is not supported by the built-in fixer"
                    ))
                }
            }
            continue;
        }
        rest.push(a);
    }
    if paths != 1 {
        return Err(format!(
            "{program_name}: the arguments must contain %INCLUDE-LIST% exactly once"
        ));
    }
    let [target] = rest.as_slice() else {
        return Err(format!(
            "{program_name}: expected one {} argument besides %INCLUDE-LIST%, got {rest:?}",
            if program_name == "chmod" {
                "MODE"
            } else {
                "OWNER"
            }
        ));
    };
    match program_name {
        "chown" => {
            let to = owner(target, ids)?;
            if to.uid.is_none() && to.gid.is_none() {
                return Err("chown: empty owner".into());
            }
            Ok(Fixer::Own { to, from })
        }
        "chgrp" => Ok(Fixer::Own {
            to: Owner {
                uid: None,
                gid: Some((ids.group)(target)?),
            },
            from,
        }),
        "chmod" => Ok(Fixer::Mode(mode(target)?)),
        other => Err(format!("{other}: not a recognised handler")),
    }
}

/// `OWNER`, `OWNER:GROUP`, `:GROUP`, `OWNER:` (the owner's login group is not supported).
fn owner(s: &str, ids: &Ids<'_>) -> Result<Owner, String> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    if g == Some("") {
        return Err(format!(
            "owner {s:?}: OWNER: (the login group) is not supported; name the group"
        ));
    }
    Ok(Owner {
        uid: if u.is_empty() {
            None
        } else {
            Some((ids.user)(u)?)
        },
        gid: g.map(|g| (ids.group)(g)).transpose()?,
    })
}

fn mode(s: &str) -> Result<ModeSpec, String> {
    if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        let m = u32::from_str_radix(s, 8).map_err(|_| format!("mode {s:?}"))?;
        if m > 0o7777 {
            return Err(format!("mode {s:?} is out of range"));
        }
        return Ok(ModeSpec::Octal(m));
    }
    let mut clauses = Vec::new();
    for part in s.split(',') {
        let opi = part
            .find(['+', '-', '='])
            .ok_or_else(|| format!("mode {s:?}: no +, - or ="))?;
        let (who_s, rest) = part.split_at(opi);
        if who_s.is_empty() {
            return Err(format!(
                "mode {s:?}: say whose bits (u, g, o or a): without it chmod applies the umask"
            ));
        }
        let mut who = 0;
        for c in who_s.chars() {
            who |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return Err(format!("mode {s:?}: unknown who {c:?}")),
            };
        }
        let op = rest.as_bytes()[0];
        let mut bits = 0;
        let mut cond_x = false;
        for c in rest[1..].chars() {
            bits |= match c {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' => {
                    cond_x = true;
                    0
                }
                's' => 0o6000,
                't' => 0o1000,
                _ => return Err(format!("mode {s:?}: unsupported permission {c:?}")),
            };
        }
        clauses.push(Clause {
            who,
            op,
            bits,
            cond_x,
        });
    }
    Ok(ModeSpec::Symbolic(clauses))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Ids<'static> {
        Ids {
            user: &|n| match n {
                "root" => Ok(0),
                "www-data" => Ok(33),
                n => n.parse().map_err(|_| format!("unknown user '{n}'")),
            },
            group: &|n| match n {
                "root" => Ok(0),
                "www-data" => Ok(33),
                n => n.parse().map_err(|_| format!("unknown group '{n}'")),
            },
        }
    }

    fn p(prog: &str, args: &[&str]) -> Result<Fixer, String> {
        parse(
            prog,
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &ids(),
        )
    }

    #[test]
    fn the_manuals_web_root_recipe() {
        let f = p(
            "chown",
            &["--from=root", "www-data:www-data", "%INCLUDE-LIST%"],
        )
        .unwrap();
        assert_eq!(
            f,
            Fixer::Own {
                to: Owner {
                    uid: Some(33),
                    gid: Some(33)
                },
                from: Owner {
                    uid: Some(0),
                    gid: None
                }
            }
        );
        assert_eq!(
            p("chown", &["-h", ":1000", "%INCLUDE-LIST%"]).unwrap(),
            Fixer::Own {
                to: Owner {
                    uid: None,
                    gid: Some(1000)
                },
                from: Owner::default()
            }
        );
        assert_eq!(
            p("chgrp", &["--from=:0", "www-data", "%INCLUDE-LIST%"]).unwrap(),
            Fixer::Own {
                to: Owner {
                    uid: None,
                    gid: Some(33)
                },
                from: Owner {
                    uid: None,
                    gid: Some(0)
                }
            }
        );
    }

    #[test]
    fn unknown_arguments_refuse_the_start() {
        assert!(p("chown", &["-R", "www-data", "%INCLUDE-LIST%"])
            .unwrap_err()
            .contains("\"-R\""));
        assert!(p("chown", &["--reference=/etc/shadow", "%INCLUDE-LIST%"]).is_err());
        assert!(p("chown", &["www-data", "%INCLUDE-LIST%", "extra"]).is_err());
        assert!(p("chown", &["www-data"])
            .unwrap_err()
            .contains("%INCLUDE-LIST%"));
        assert!(p("chown", &["nosuchuser", "%INCLUDE-LIST%"])
            .unwrap_err()
            .contains("nosuchuser"));
        assert!(p("chmod", &["+x", "%INCLUDE-LIST%"])
            .unwrap_err()
            .contains("whose bits"));
    }

    #[test]
    fn octal_and_symbolic_modes() {
        let Fixer::Mode(m) = p("chmod", &["0640", "%INCLUDE-LIST%"]).unwrap() else {
            panic!()
        };
        assert_eq!(m.apply(0o777, false), 0o640);
        let Fixer::Mode(m) = p("chmod", &["u=rwX,g+rX,o-rwx", "%INCLUDE-LIST%"]).unwrap() else {
            panic!()
        };
        assert_eq!(m.apply(0o604, false), 0o640);
        assert_eq!(m.apply(0o604, true), 0o750);
        assert_eq!(m.apply(0o705, false), 0o750);
        let Fixer::Mode(m) = p("chmod", &["g+s,a-w", "%INCLUDE-LIST%"]).unwrap() else {
            panic!()
        };
        assert_eq!(m.apply(0o775, true), 0o2555);
    }
}
