#![no_main]
//! See `zring::fuzzing::certificate_san` for what it checks; `fuzz/corpus/certificate_san/` holds its seeds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| zring::fuzzing::certificate_san(data));
