#![no_main]
//! See `zring::fuzzing::local_yaml` for what it checks; `fuzz/corpus/local_yaml/` holds its seeds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| zring::fuzzing::local_yaml(data));
