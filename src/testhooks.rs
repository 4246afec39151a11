//! Test builds only (cargo feature `test-hooks`, never in a release build): switches for the
//! integration tests that prove each sandbox layer by itself.
//!
//! Read from the environment by root before the worker confines itself:
//! - `CLSYNC_TEST_DISABLE=layer[,layer…]` skips single layers of the worker's sandbox: `netns`,
//!   `cgroup`, `caps`, `identity`, `nnp`, `landlock`, `seccomp`;
//! - `CLSYNC_TEST_WORKER_SYSCALL=socket|execve|ptrace|inotify_add_watch|mprotect_exec` attempts a
//!   forbidden syscall once the daemon is ready (`mprotect_exec`: an anonymous page made
//!   executable);
//! - `CLSYNC_TEST_WORKER_ACTION=read:PATH|forkbomb` does something a tenant who took over the
//!   worker would try, and logs the outcome as `test action …: allowed …` or `… denied …`;
//! - `CLSYNC_TEST_FORGE=KIND` sends a forged request to the helper (see `privsep::forge`).
#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;

use crate::privsep::client::Client;
#[cfg(feature = "test-hooks")]
use crate::sandbox::Layer;
use crate::sandbox::WorkerLayers;

/// Layers a test may switch off.
pub const LAYERS: [&str; 7] = [
    "netns", "cgroup", "caps", "identity", "nnp", "landlock", "seccomp",
];

#[derive(Default, Debug)]
pub struct TestHooks {
    /// Layers `CLSYNC_TEST_DISABLE` switches off (test builds only).
    #[cfg(feature = "test-hooks")]
    disabled: Vec<String>,
    syscall: Option<String>,
    action: Option<String>,
    forge: Option<String>,
    /// fds a forged request sends that the sandboxed worker could not open itself (a regular
    /// file, a pipe), prepared by root before the sandbox.
    prepared: Vec<OwnedFd>,
}

impl TestHooks {
    #[cfg(feature = "test-hooks")]
    pub fn from_env() -> TestHooks {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let disabled: Vec<String> = var("CLSYNC_TEST_DISABLE")
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        for d in &disabled {
            if !LAYERS.contains(&d.as_str()) {
                crate::error!("test hook: unknown layer {d:?} in CLSYNC_TEST_DISABLE");
            }
        }
        let forge = var("CLSYNC_TEST_FORGE");
        let mut prepared = Vec::new();
        match forge.as_deref() {
            Some("exec-regular-file") => {
                if let Ok(f) = std::fs::File::open("/etc/hostname") {
                    prepared.extend([OwnedFd::from(f.try_clone().expect("dup")), OwnedFd::from(f)]);
                }
            }
            Some("exec-pipe") => {
                if let Ok((r, w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
                    prepared.extend([r, w]);
                }
            }
            _ => {}
        }
        TestHooks {
            disabled,
            syscall: var("CLSYNC_TEST_WORKER_SYSCALL"),
            action: var("CLSYNC_TEST_WORKER_ACTION"),
            forge,
            prepared,
        }
    }

    /// fds the worker must keep through its fd clean-up.
    pub fn keep_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.prepared.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// `CLSYNC_TEST_FORGE=version`: a handshake with the wrong version instead of ours.
    pub fn before_handshake(&mut self, client: &Client) {
        let _ = client;
        #[cfg(feature = "test-hooks")]
        if self.forge.as_deref() == Some("version") {
            self.forge = None;
            crate::privsep::forge::send("version", client.channel(), &[]);
        }
    }

    /// Release builds: no hooks at all.
    #[cfg(not(feature = "test-hooks"))]
    pub fn from_env() -> TestHooks {
        TestHooks::default()
    }

    /// Switches off the layers `CLSYNC_TEST_DISABLE` names in the set decided at start (nothing,
    /// outside test builds). `caps` is both the bounding set and the other capability sets.
    pub fn switch_off(&self, layers: &mut WorkerLayers) {
        let _ = &layers;
        #[cfg(feature = "test-hooks")]
        for d in &self.disabled {
            let which: &[Layer] = match d.as_str() {
                "netns" => &[Layer::Netns],
                "cgroup" => &[Layer::Cgroup],
                "caps" => &[Layer::Bounding, Layer::CapSets],
                "identity" => &[Layer::Identity],
                "nnp" => &[Layer::Nnp],
                "landlock" => &[Layer::Landlock],
                "seccomp" => &[Layer::Seccomp],
                _ => &[],
            };
            if !which.is_empty() {
                crate::warning!("test hook: sandbox layer {d} is OFF");
            }
            for l in which {
                layers.switch_off(*l);
            }
        }
    }

    /// Runs the requested attack once the daemon is ready.
    pub fn after_ready(&mut self, client: &mut Client, inotify: &OwnedFd) {
        let _ = &client;
        if let Some(a) = self.action.take() {
            act(&a);
        }
        if let Some(sc) = self.syscall.take() {
            crate::sys::test_attempt_syscall(&sc, inotify);
        }
        #[cfg(feature = "test-hooks")]
        if let Some(f) = self.forge.take() {
            if f == "watch-through-symlink" {
                // Not a refusal: the helper answers with an errno (tenants can cause this at
                // will) and never follows the link.
                let r = walk_once(client, b"lnk/inner");
                crate::warning!("test hook: forged watch through a symlink: {r:?}");
            } else if let Some(n) = f.strip_prefix("walk-race:") {
                // The test swaps `flip` between a directory and a symlink meanwhile.
                // At least `n` rounds, and on until both outcomes were seen 300 times (the
                // swapper starts when the test sees `ready`), at most 100 × `n`.
                let rounds: usize = n.parse().unwrap_or(0);
                let (mut wd, mut failed, mut entries) = (0, 0, Vec::<String>::new());
                for round in 0..rounds * 100 {
                    if round >= rounds && wd >= 300 && failed >= 300 {
                        break;
                    }
                    match walk_once(client, b"flip") {
                        Ok(chunks) => {
                            for c in chunks {
                                match c.watch {
                                    Some(crate::privsep::protocol::WatchResult::Wd(_)) => wd += 1,
                                    _ => failed += 1,
                                }
                                for e in c.entries {
                                    let name = String::from_utf8_lossy(&e.name).into_owned();
                                    if !entries.contains(&name) {
                                        entries.push(name);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            crate::warning!("test hook: walk race: {e}");
                            break;
                        }
                    }
                }
                crate::warning!(
                    "test hook: walk race done: watched={wd} failed={failed} entries={entries:?}"
                );
            } else {
                crate::privsep::forge::send(&f, client.channel(), &self.prepared);
            }
        }
        let _ = self.forge.take();
    }
}

/// One Walk of `dir` (watch and list), as the worker's walk stage would send it.
#[cfg(feature = "test-hooks")]
fn walk_once(
    client: &mut Client,
    dir: &[u8],
) -> Result<Vec<crate::privsep::protocol::Chunk>, crate::privsep::client::ClientError> {
    client.walk_send(
        vec![crate::privsep::protocol::RelPath(dir.to_vec())],
        true,
        true,
        false,
    )?;
    let mut chunks = Vec::new();
    client.walk_recv(|_, c| chunks.push(c))?;
    Ok(chunks)
}

fn act(action: &str) {
    if let Some(path) = action.strip_prefix("read:") {
        match std::fs::read(path) {
            Ok(b) => crate::warning!("test action read {path}: allowed ({} bytes)", b.len()),
            Err(e) => crate::warning!("test action read {path}: denied ({e})"),
        }
    } else if action == "forkbomb" {
        let (n, err) = crate::sys::test_fork_bomb(64);
        crate::warning!("test action forkbomb: {n} forks allowed, then {err}");
    } else {
        crate::error!("test hook: unknown action {action:?}");
    }
}
