//! Test builds only (cargo feature `test-hooks`, never in a release build): switches for the
//! integration tests that prove each sandbox layer by itself.
//!
//! Read from the environment by root before the worker confines itself:
//! - `CLSYNC_TEST_DISABLE=layer[,layer…]` skips single layers of the worker's sandbox: `netns`,
//!   `cgroup`, `caps`, `identity`, `nnp`, `landlock`, `seccomp`;
//! - `CLSYNC_TEST_WORKER_SYSCALL=socket|execve|ptrace|inotify_add_watch` attempts a forbidden
//!   syscall once the daemon is ready;
//! - `CLSYNC_TEST_WORKER_ACTION=read:PATH|forkbomb` does something a tenant who took over the
//!   worker would try, and logs the outcome as `test action …: allowed …` or `… denied …`;
//! - `CLSYNC_TEST_FORGE=KIND` sends a forged request to the helper (see `privsep::forge`).
#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;

use crate::privsep::client::Client;

/// Layers a test may switch off.
pub const LAYERS: [&str; 7] = [
    "netns", "cgroup", "caps", "identity", "nnp", "landlock", "seccomp",
];

#[derive(Default, Debug)]
pub struct TestHooks {
    disabled: Vec<String>,
    syscall: Option<String>,
    action: Option<String>,
    forge: Option<String>,
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
        TestHooks {
            disabled,
            syscall: var("CLSYNC_TEST_WORKER_SYSCALL"),
            action: var("CLSYNC_TEST_WORKER_ACTION"),
            forge: var("CLSYNC_TEST_FORGE"),
        }
    }

    /// Release builds: no hooks at all.
    #[cfg(not(feature = "test-hooks"))]
    pub fn from_env() -> TestHooks {
        TestHooks::default()
    }

    /// Whether a layer is on (always, outside test builds).
    pub fn layer_on(&self, layer: &str) -> bool {
        let off = self.disabled.iter().any(|d| d == layer);
        if off {
            crate::warning!("test hook: sandbox layer {layer} is OFF");
        }
        !off
    }

    /// Runs the requested attack once the daemon is ready.
    pub fn after_ready(&mut self, client: &Client, inotify: &OwnedFd) {
        let _ = client;
        if let Some(a) = self.action.take() {
            act(&a);
        }
        if let Some(sc) = self.syscall.take() {
            crate::sys::test_attempt_syscall(&sc, inotify);
        }
        #[cfg(feature = "test-hooks")]
        if let Some(f) = self.forge.take() {
            crate::privsep::forge::send(&f, client.channel());
        }
        let _ = self.forge.take();
    }
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
