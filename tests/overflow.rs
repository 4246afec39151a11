//! Inotify queue overflow: with fs.inotify.max_queued_events lowered to 16, a storm of creates,
//! writes, renames and deletions in many directories overflows the daemon's queue
//! (IN_Q_OVERFLOW) many times over. The daemon must rescan and resync, never lose changes:
//! dst must end up equal to src.
//!
//! Its own test binary with a single test, because the sysctl is global: the limit is read when
//! an inotify instance is created, so it is lowered just before the daemon starts and restored
//! as soon as the daemon runs (and, through a guard, on any panic).

mod common;

use common::*;
use std::fs;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

const SYSCTL: &str = "/proc/sys/fs/inotify/max_queued_events";

/// Lowers the sysctl and restores the saved value when dropped (also while unwinding from a
/// failed assertion). Holds an exclusive lock for its lifetime, so that two copies of this test
/// running at once (other checkouts on the same machine) cannot save each other's low value and
/// leave it behind.
struct SysctlGuard {
    saved: String,
    _lock: Flock<fs::File>,
}

const LOW: &str = "16";
/// The kernel's default, used if the saved value is our own low value (a run that was killed
/// before it could restore).
const KERNEL_DEFAULT: &str = "16384";

impl SysctlGuard {
    fn set(value: &str) -> SysctlGuard {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/clsync-rs-test.max_queued_events.lock")
            .expect("open lock file");
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock");
        let mut saved = fs::read_to_string(SYSCTL)
            .expect("read max_queued_events")
            .trim()
            .to_string();
        if saved == LOW {
            eprintln!(
                "note: {SYSCTL} was {LOW} (an interrupted run?); will restore {KERNEL_DEFAULT}"
            );
            saved = KERNEL_DEFAULT.to_string();
        }
        let g = SysctlGuard { saved, _lock: lock };
        fs::write(SYSCTL, value).expect("set max_queued_events (needs root)");
        assert_eq!(fs::read_to_string(SYSCTL).unwrap().trim(), value);
        g
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        if let Err(e) = fs::write(SYSCTL, &self.saved) {
            eprintln!("CANNOT RESTORE {SYSCTL} to {}: {e}", self.saved);
        }
    }
}

#[test]
fn queue_overflow_loses_nothing() {
    let s = Scratch::new("overflow");
    let src = s.src();
    for i in 0..50 {
        create_dir(src.join(format!("d{i:02}")), Attrs::new(0o755));
        create_file(
            src.join(format!("d{i:02}/seed")),
            b"seed\n",
            Attrs::new(0o644),
        );
    }

    let mut d;
    let restored;
    {
        let low = SysctlGuard::set(LOW);
        d = Daemon::rsyncdirect(&s, 1, &[]);
        d.wait_ready();
        restored = low.saved.clone();
    } // restored here: the daemon's inotify instance keeps the limit it was created with
    assert_eq!(
        fs::read_to_string(SYSCTL).unwrap().trim(),
        restored,
        "sysctl not restored"
    );

    // The storm: far more than 16 events between two reads, in every directory, including
    // directories that are created, filled, renamed and removed while the queue is overflowing.
    for round in 0..5 {
        for i in 0..50 {
            let dir = src.join(format!("d{i:02}"));
            for j in 0..10 {
                fs::write(
                    dir.join(format!("r{round}-f{j}")),
                    format!("{round} {i} {j}\n"),
                )
                .unwrap();
            }
            fs::rename(
                dir.join(format!("r{round}-f0")),
                dir.join(format!("r{round}-renamed")),
            )
            .unwrap();
            fs::remove_file(dir.join(format!("r{round}-f1"))).unwrap();
            let sub = dir.join(format!("sub{round}"));
            fs::create_dir(&sub).unwrap();
            fs::write(sub.join("inner"), b"inner\n").unwrap();
            if round > 0 {
                // Move the previous round's subdirectory to the next directory over.
                let prev = dir.join(format!("sub{}", round - 1));
                let to = src.join(format!("d{:02}/moved-{round}-{i}", (i + 1) % 50));
                if prev.exists() {
                    fs::rename(prev, to).unwrap();
                }
            }
        }
        fs::rename(
            src.join(format!("d{:02}", round)),
            src.join(format!("renamed-d{round}")),
        )
        .unwrap();
        fs::create_dir(src.join(format!("d{:02}", round))).unwrap();
    }
    std::process::Command::new("rm")
        .arg("-rf")
        .arg(src.join("renamed-d0"))
        .status()
        .unwrap();

    wait_synced(&src, &s.dst(), Duration::from_secs(180));
    let st = d.stop();
    assert!(st.success(), "exit status {st}");
    assert_trees_equal(&src, &s.dst());
    assert!(dir_entries(&s.tmp()).is_empty(), "TMPDIR not left empty");
    assert!(daemon_cgroup_dirs(d.pid).is_empty(), "cgroups left behind");
    if !d.stderr().to_lowercase().contains("overflow") {
        eprintln!("note: the daemon's log does not mention the overflow");
    }
}
