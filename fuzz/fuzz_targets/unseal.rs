#![no_main]
// See offsitedb::fuzzing::unseal.
use offsitedb_fuzz as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| offsitedb::fuzzing::unseal(data));
