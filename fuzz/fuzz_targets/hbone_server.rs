#![no_main]
//! See `zring::fuzzing::hbone_server` for what it checks; `fuzz/corpus/hbone_server/` holds its seeds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| zring::fuzzing::hbone_server(data));
