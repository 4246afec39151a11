//! Dumps (signal 29, the control socket's `dump`): clsync's picture of the daemon's state,
//! built here and written by the helper. The worker cannot create files and never names a
//! path: it writes each file into a sealed memfd and sends them with a `Dump` request; the
//! helper checks them like list files and writes them into the --dump-dir it froze at start.
//!
//! Layout and content, as clsync 0.4.5 writes them (`sync_dump()`):
//!
//! * `instance`: `status == <state word>`, then the paths of the sync running now when there
//!   is no --threading (clsync's non-threaded in-flight table);
//! * `queue/0` … `queue/3`, clsync's queue numbers: 0 = ordinary files (`-t`), 1 = big files
//!   (`-T`), 2 = instant (the initial sync, rescans, retries; here also simple mode's events
//!   waiting for their call and the directories waiting for a --have-recursive-sync call),
//!   3 = lock-wait (--threading=safe: paths held back while a running sync has them);
//! * `threads/<iteration>-<num>-<pid>`, one per running sync with --threading: a header, then
//!   its paths. clsync's `<pthread>` (a thread id) is the handler's pid here, `num` the job.
//!
//! A path line is `+1\t<path>` (`+*` for a recursive entry: a new, moved or removed directory
//! in the rsync modes), an exclude `-1\t<path>`; paths are relative to the watch dir (the
//! watch dir itself is empty), C-escaped as in shell lists (`\n`, `\r`, `\\`) so that a
//! tenant's file name cannot add a line. Lines are sorted (clsync's are in hash order).
#![forbid(unsafe_code)]

use std::path::Path;

use super::passes::sealed_memfd;
use super::*;
use crate::control::DumpResult;
use crate::handler::shelllist::line_path;
use crate::privsep::protocol::DumpFile;

/// Paths for dump lines: (path, recursive) entries and excludes.
type Lines<'a> = (Vec<(&'a [u8], bool)>, Vec<&'a [u8]>);

/// Writes clsync's lines for `includes` and `excludes`, sorted.
fn write_entries(
    w: &mut impl Write,
    mut includes: Vec<(&[u8], bool)>,
    mut excludes: Vec<&[u8]>,
) -> std::io::Result<()> {
    includes.sort_unstable();
    excludes.sort_unstable();
    for (p, recursive) in includes {
        w.write_all(if recursive { b"+*\t" } else { b"+1\t" })?;
        w.write_all(&line_path(p))?;
        w.write_all(b"\n")?;
    }
    for p in excludes {
        w.write_all(b"-1\t")?;
        w.write_all(&line_path(p))?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// The paths a running sync has: its batch, or the directory of a --have-recursive-sync call.
fn running_entries(r: &Running) -> Lines<'_> {
    let mut inc: Vec<(&[u8], bool)> = r
        .batch
        .includes
        .iter()
        .map(|(p, it)| (p.as_slice(), it.recursive))
        .collect();
    if let Some(dir) = &r.recursive {
        inc.push((dir.as_slice(), true));
    }
    (inc, r.batch.excludes.iter().map(Vec::as_slice).collect())
}

/// Whether `asked` (the control socket's `dump <dir>`, relative to the watch dir as clsync
/// takes it) names the configured --dump-dir. A client cannot choose another directory: the
/// privileged helper writes the dump, and only ever where the administrator configured.
pub(super) fn socket_dir_allowed(
    watch_dir: &Path,
    configured: &Path,
    asked: &str,
) -> Result<(), String> {
    if crate::config::dump_dir_path(watch_dir, asked) == configured {
        Ok(())
    } else {
        Err(format!(
            "dump to {asked}: only the configured --dump-dir {} may be used",
            configured.display()
        ))
    }
}

impl Worker {
    /// The dump's files in clsync's layout, each in a sealed memfd.
    fn dump_files(&self) -> std::io::Result<Vec<(DumpFile, OwnedFd)>> {
        let threaded = self.cfg.threading != Threading::Off;
        let mut files = Vec::new();
        files.push((
            DumpFile::Instance,
            sealed_memfd("clsync-dump-instance", |w| {
                writeln!(w, "status == {}", self.status.word())?;
                if !threaded {
                    for r in &self.running {
                        let (inc, exc) = running_entries(r);
                        write_entries(w, inc, exc)?;
                    }
                }
                Ok(())
            })?,
        ));
        let queue = |id: QueueId| {
            let (inc, exc) = self.queues.contents(id);
            let inc: Vec<(&[u8], bool)> =
                inc.into_iter().map(|(p, it)| (p, it.recursive)).collect();
            (inc, exc)
        };
        let (normal, big) = (queue(QueueId::Normal), queue(QueueId::Big));
        let (mut instant_inc, instant_exc) = queue(QueueId::Instant);
        // Simple mode's events and --have-recursive-sync directories wait for no delay.
        instant_inc.extend(self.fifo.iter().map(|(p, _)| (p.as_slice(), false)));
        instant_inc.extend(self.recursive.iter().map(|d| (d.as_slice(), true)));
        let lockwait = (
            self.lockwait
                .includes
                .iter()
                .map(|(p, it)| (p.as_slice(), it.recursive))
                .collect(),
            self.lockwait.excludes.iter().map(Vec::as_slice).collect(),
        );
        for (n, (inc, exc)) in [normal, big, (instant_inc, instant_exc), lockwait]
            .into_iter()
            .enumerate()
        {
            files.push((
                DumpFile::Queue(n as u8),
                sealed_memfd("clsync-dump-queue", |w| write_entries(w, inc, exc))?,
            ));
        }
        if threaded {
            for r in &self.running {
                let expire = if self.cfg.timeout_sync > 0 {
                    r.started + self.cfg.timeout_sync
                } else {
                    0
                };
                let fd = sealed_memfd("clsync-dump-thread", |w| {
                    write!(
                        w,
                        "thread:\n\titeration == {}\n\tnum == {}\n\tstarttime == {}\n\texpiretime == {}\n\tchild_pid == {}\n\ttry_n == {}\n",
                        r.iteration, r.job, r.started, expire, r.pid, r.tries
                    )?;
                    // The worker never sees the argv: the helper builds it from the policy.
                    writeln!(
                        w,
                        "Command: built by the privileged helper, see its audit line action=exec job={}",
                        r.job
                    )?;
                    let (inc, exc) = running_entries(r);
                    write_entries(w, inc, exc)
                })?;
                files.push((
                    DumpFile::Thread {
                        iteration: r.iteration,
                        num: r.job,
                        pid: r.pid,
                    },
                    fd,
                ));
            }
        }
        Ok(files)
    }

    /// Makes a dump into the configured --dump-dir, logs how it went (`why` says who asked) and
    /// returns that for the control socket. Only the helper's end is an error: a directory
    /// that exists or cannot be made is the administrator's business, and the daemon goes on.
    pub(super) fn dump(&mut self, why: &str) -> Result<DumpResult, ClientError> {
        let Some(dir) = self.cfg.dump_dir.clone() else {
            let off = self.cfg.dump_off.clone().unwrap_or_default();
            crate::warning!("{why}: no dump: dumps are off ({off}); give --dump-dir");
            return Ok(DumpResult::Denied(format!("dumps are off: {off}")));
        };
        let shown = dir.display().to_string();
        let files = match self.dump_files() {
            Ok(f) => f,
            Err(e) => {
                crate::error!("{why}: cannot build the dump: {e}");
                return Ok(DumpResult::Failed {
                    dir: shown,
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                });
            }
        };
        let n = files.len();
        // The helper refuses (and ends the session on) a dump over its cap: not sent at all.
        let bytes: u64 = files
            .iter()
            .map(|(_, fd)| nix::sys::stat::fstat(fd).map_or(0, |st| st.st_size.max(0) as u64))
            .sum();
        if bytes > crate::privsep::helper::MAX_DUMP_BYTES {
            crate::error!(
                "{why}: the dump would be {bytes} bytes, over the limit of {}: not written",
                crate::privsep::helper::MAX_DUMP_BYTES
            );
            return Ok(DumpResult::Failed {
                dir: shown,
                errno: libc::EFBIG,
            });
        }
        match self.client.dump(files)? {
            0 => {
                crate::info!("{why}: dump written to {shown} ({n} files)");
                Ok(DumpResult::Ready)
            }
            errno => {
                crate::warning!(
                    "{why}: cannot write the dump to {shown}: {} (it must not exist); the daemon goes on",
                    Errno::from_raw(errno)
                );
                Ok(DumpResult::Failed { dir: shown, errno })
            }
        }
    }

    /// The control socket's `dump [dir]`: `dir` must be the configured --dump-dir (none: that
    /// one); anything else is refused, audited, and not attempted.
    pub(super) fn socket_dump(&mut self, asked: Option<&str>) -> Result<DumpResult, ClientError> {
        if let (Some(a), Some(configured)) = (asked, &self.cfg.dump_dir) {
            if let Err(why) = socket_dir_allowed(&self.cfg.watch_dir, configured, a) {
                crate::log::audit(
                    "dump-refused",
                    audit_fields!["dir" => a, "reason" => why.as_str()],
                );
                crate::warning!("control socket: {why}");
                return Ok(DumpResult::Denied(why));
            }
        }
        self.dump("control socket dump")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_clsyncs_sorted_and_escaped() {
        let mut out = Vec::new();
        write_entries(
            &mut out,
            vec![
                (b"dumpme".as_slice(), false),
                (b"", true),
                (b"n\nl", false),
                (b"d/e", true),
            ],
            vec![b"x.tmp".as_slice()],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+*\t\n+*\td/e\n+1\tdumpme\n+1\tn\\nl\n-1\tx.tmp\n"
        );
    }

    #[test]
    fn the_socket_may_only_name_the_configured_dump_dir() {
        let w = Path::new("/srv/www");
        let conf = Path::new("/var/tmp/clsync-dump-x");
        assert!(socket_dir_allowed(w, conf, "/var/tmp/clsync-dump-x").is_ok());
        assert!(socket_dir_allowed(w, conf, "/var/tmp//clsync-dump-x/").is_ok());
        assert!(socket_dir_allowed(w, conf, "/var/tmp/./clsync-dump-x").is_ok());
        let e = socket_dir_allowed(w, conf, "/etc/cron.d").unwrap_err();
        assert!(
            e.contains("only the configured --dump-dir /var/tmp/clsync-dump-x"),
            "{e}"
        );
        assert!(socket_dir_allowed(w, conf, "clsync-dump-x").is_err());
        assert!(socket_dir_allowed(Path::new("/var/tmp"), conf, "clsync-dump-x").is_ok());
    }
}
