#![no_main]
//! See `zring::fuzzing::xds_protobuf` for what it checks; `fuzz/corpus/xds_protobuf/` holds its seeds.

libfuzzer_sys::fuzz_target!(|data: &[u8]| zring::fuzzing::xds_protobuf(data));
