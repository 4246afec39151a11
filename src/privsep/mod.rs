//! Privilege separation: the wire ([`protocol`]), the privileged side ([`helper`]), the frozen
//! policy it enforces ([`policy`]), the worker's client ([`client`]) and the start-up ([`spawn`]);
//! [`soload`] loads a shared-object handler in a handler child.
pub mod client;
pub mod dirents;
pub mod fixer;
#[cfg(feature = "test-hooks")]
pub mod forge;
pub mod helper;
pub mod janitor;
pub mod policy;
pub mod protocol;
pub mod soload;
pub mod spawn;
