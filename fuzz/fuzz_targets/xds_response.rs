#![no_main]
//! See `zring::fuzzing::xds_response` for what it checks; `fuzz/corpus/xds_response/` holds its seeds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| zring::fuzzing::xds_response(data));
