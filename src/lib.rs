//! clsync-rs: a hardened, privilege-separated, clsync-compatible live file-sync daemon.
//!
//! Where things are (SECURITY.md has the process model):
//! - [`privsep::protocol`]: the wire between worker and helper, the only place it is defined;
//! - [`privsep::helper`]: the privileged side, a small request/reply state machine, and
//!   [`privsep::policy`], the frozen exec policy it enforces;
//! - [`sandbox`] and [`sys`]: the syscall layer, and [`privsep::soload`], the `dlopen` of a
//!   shared-object handler (the only modules with `unsafe`);
//! - the worker's event pipeline: [`monitor`] → [`rules`] → [`queue`] → [`handler`], driven by
//!   [`worker`].

#[macro_use]
pub mod log;
pub mod cli;
pub mod config;
pub mod confile;
pub mod control;
pub mod handler;
pub mod monitor;
pub mod notify;
pub mod privsep;
pub mod queue;
pub mod rules;
pub mod sandbox;
pub mod sys;
pub mod testhooks;
pub mod worker;
