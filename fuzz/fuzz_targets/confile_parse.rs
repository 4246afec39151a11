//! Arbitrary text as a configuration file (keyfile and TOML) and as a `--` value: parsing and
//! block resolution never panic or hang, and argument splitting keeps every character.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clsync_rs_fuzz::props::check_confile(&String::from_utf8_lossy(data));
});
