#![no_main]
//! See `zring::fuzzing::hbone_headers` for what it checks; `fuzz/corpus/hbone_headers/` holds its seeds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| zring::fuzzing::hbone_headers(data));
