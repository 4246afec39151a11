//! Run-time changes: `--custom-signals` block switches and the control socket's `set`.
//!
//! A switch only selects among the configurations frozen at start (the helper holds the same
//! list of exec policies and is told the index): it never brings in a program, an argument
//! template, a uid or a capability the administrator did not configure. It waits until no
//! handler runs (no new pass starts meanwhile), so that every call of a pass uses one policy;
//! nothing queued is dropped: what was collected before the switch is synced under the new
//! block.

use super::*;
use crate::control::{SetError, Setting};

impl Worker {
    /// A switch to block `index` is due (`why`: what asked for it, for the log line); it is
    /// made once no handler runs.
    pub(super) fn request_block(&mut self, index: usize, why: String) {
        if let Some(c) = self.blocks.get(index) {
            crate::debug!(
                1,
                "{why}: switching to config block {} once no handler runs",
                c.block
            );
            self.pending_block = Some((index, why));
        }
    }

    /// Makes the pending block switch: the helper selects the block's policy, the worker takes
    /// the block's settings and reads its rules file again through the helper (a file that
    /// cannot be read or parsed now leaves the rules read at start, with a warning).
    pub(super) fn apply_pending_block(&mut self) -> Result<(), ClientError> {
        let Some((index, why)) = self.pending_block.take() else {
            return Ok(());
        };
        let Some(cfg) = self.blocks.get(index).cloned() else {
            return Ok(());
        };
        self.client.select_policy(index as u32)?;
        self.cfg = cfg;
        self.policy = ExecPolicy::from_config(&self.cfg);
        self.keep_excludes =
            self.cfg.mode.is_rsync() || self.policy.lists().contains(&ListKind::Exclude);
        self.queues.set_delays(self.delays());
        self.rules = self.cfg.rules.clone();
        if let Some(path) = self.cfg.rules_file.clone() {
            match self.client.read_rules()? {
                Err(errno) => crate::warning!(
                    "{why}: cannot read the rules file {}: {}; using its rules read at start",
                    path.display(),
                    Errno::from_raw(errno)
                ),
                Ok(text) => match Rules::parse_with(&text, self.cfg.rules_options) {
                    Ok(r) => self.rules = r,
                    Err(e) => crate::warning!(
                        "{why}: rules file {}: {e}; using its rules read at start",
                        path.display()
                    ),
                },
            }
        }
        crate::info!("{why}: switched to config block {}", self.cfg.block);
        Ok(())
    }

    /// The tunables `set` changes, as `status` shows them.
    pub(super) fn settings(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("delay-sync", self.cfg.delay_sync),
            ("delay-collect", self.cfg.delay_collect),
            ("delay-collect-bigfile", self.cfg.delay_bigfile),
            ("threshold-bigfile", self.cfg.threshold_bigfile),
            ("timeout-sync", self.cfg.timeout_sync),
            ("retries", self.cfg.retries),
            ("max-iterations", self.cfg.max_iterations),
        ]
    }

    /// The control socket's `set`. The tunables are the worker's own (the helper's policy does
    /// not hold them); they last until the next block switch, which brings the block's values.
    pub(super) fn socket_set(&mut self, s: &Setting) -> Result<(), SetError> {
        match s {
            Setting::ConfigBlock(name) => {
                let index = self
                    .blocks
                    .iter()
                    .skip(1)
                    .position(|c| c.block == *name)
                    .map(|i| i + 1)
                    .or((self.blocks[0].block == *name).then_some(0))
                    .ok_or_else(|| {
                        let known: Vec<&str> =
                            self.blocks.iter().map(|c| c.block.as_str()).collect();
                        SetError::Invalid(format!(
                            "config-block: \"{name}\" is not a configured block ({})",
                            known.join(", ")
                        ))
                    })?;
                self.request_block(index, "control socket".into());
            }
            Setting::DelaySync(n) => self.cfg.delay_sync = *n,
            Setting::DelayCollect(n) => self.cfg.delay_collect = *n,
            Setting::DelayCollectBigfile(n) => self.cfg.delay_bigfile = *n,
            Setting::ThresholdBigfile(n) => self.cfg.threshold_bigfile = *n,
            Setting::TimeoutSync(n) => self.cfg.timeout_sync = *n,
            Setting::Retries(n) => self.cfg.retries = *n,
            Setting::MaxIterations(n) => {
                if *n > 0 && self.cfg.threading != Threading::Off {
                    return Err(SetError::Denied(
                        "max-iterations: cannot be combined with --threading".into(),
                    ));
                }
                self.cfg.max_iterations = *n;
            }
        }
        if !matches!(s, Setting::ConfigBlock(_)) {
            self.queues.set_delays(self.delays());
            crate::info!("control socket: set {s:?}");
        }
        Ok(())
    }
}
