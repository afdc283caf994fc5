#![no_main]
// See offsitedb::fuzzing::catalog.
use offsitedb_fuzz as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| offsitedb::fuzzing::catalog(data));
