//! Arbitrary bytes as a rules file: parsing never panics; a parsed file has exactly one rule per
//! rule line and `perm` returns only wanted bits, bit by bit consistently; an error names the
//! offending line exactly, and everything before it parses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clsync_rs_fuzz::props::check_rules(data);
});
