//! clsync's rules grammar (filled in by the rules work).
#![forbid(unsafe_code)]
