#![no_main]
// See offsitedb::fuzzing::wal_object.
use offsitedb_fuzz as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| offsitedb::fuzzing::wal_object(data));
