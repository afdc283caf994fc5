#![no_main]
// See offsitedb::fuzzing::base_tar.
use offsitedb_fuzz as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| offsitedb::fuzzing::base_tar(data));
