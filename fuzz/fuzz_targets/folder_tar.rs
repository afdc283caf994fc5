#![no_main]
// See offsitedb::fuzzing::folder_tar.
use offsitedb_fuzz as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| offsitedb::fuzzing::folder_tar(data));
