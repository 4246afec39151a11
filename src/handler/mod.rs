//! Sync-handler modes and list files.
#![forbid(unsafe_code)]
