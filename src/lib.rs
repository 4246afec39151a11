//! clsync-rs: a hardened, privilege-separated, clsync-compatible live file-sync daemon.
//!
//! Layout (see SECURITY.md for the process model):
//! - [`privsep::protocol`]: the wire between worker and helper, the only place it is defined;
//! - [`privsep::helper`]: the privileged side, a small request/reply state machine;
//! - [`sandbox`]: the syscall layer that confines both processes;
//! - [`monitor`], [`rules`], [`queue`], [`handler`]: the worker's event pipeline.

pub mod sandbox;
pub mod rules;
pub mod handler;
