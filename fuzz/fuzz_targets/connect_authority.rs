#![no_main]
//! See `zring::fuzzing::connect_authority` for what it checks; `fuzz/corpus/connect_authority/` holds its seeds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| zring::fuzzing::connect_authority(data));
