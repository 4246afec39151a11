//! Arbitrary strings as numeric options: `parse_num` never panics and agrees with a strtol model;
//! the capability-list parser never panics or repeats a capability.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(s) => clsync_rs_fuzz::props::check_numbers(s),
        Err(_) => clsync_rs_fuzz::props::check_numbers(&String::from_utf8_lossy(data)),
    }
});
