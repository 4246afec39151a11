//! The worker's view of the watched tree: inotify event decoding and the watch tree.
pub mod inotify;
pub mod tree;
