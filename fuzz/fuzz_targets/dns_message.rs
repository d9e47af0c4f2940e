#![no_main]
//! See `zring::fuzzing::dns_message` for what it checks; `fuzz/corpus/dns_message/` holds its seeds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| zring::fuzzing::dns_message(data));
