//! Arbitrary bytes as a worker→helper or helper→worker datagram: decoding never panics, whatever
//! decodes re-encodes canonically to the same message (and has no decodable strict prefix), and
//! every path in a decoded request agrees with the RelPath contract.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clsync_rs_fuzz::props::check_protocol(data);
});
