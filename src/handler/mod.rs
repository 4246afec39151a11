//! Sync-handler modes and list files.
#![forbid(unsafe_code)]

pub mod fixer;
pub mod rsynclist;
pub mod shelllist;
pub mod signature;
pub mod template;
