#![no_main]
//! See `zring::fuzzing::spiffe_identity` for what it checks; `fuzz/corpus/spiffe_identity/` holds its seeds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| zring::fuzzing::spiffe_identity(data));
