//! Sync-handler modes and list files.
#![forbid(unsafe_code)]

pub mod rsynclist;
