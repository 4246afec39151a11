//! Arbitrary include/exclude calls (records `op len name…`, see `decode_list_ops`): building and
//! writing the lists never panics; there is one `\n`-terminated, anchored line per distinct entry
//! (ancestors included), in order, and each line matches exactly its path as rsync reads it, so a
//! name can never add a line or widen a pattern.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ops = clsync_rs_fuzz::props::decode_list_ops(data);
    clsync_rs_fuzz::props::check_lists(&ops);
});
