//! Arbitrary bytes as one read(2) from the inotify fd: decoding never panics, names stay inside
//! the buffer (never longer than it, never with a NUL), and an independent decoder agrees.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clsync_rs_fuzz::props::check_inotify(data);
});
