#![no_main]
// See offsitedb::fuzzing::config.
use offsitedb_fuzz as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| offsitedb::fuzzing::config(data));
