#![no_main]
// See offsitedb::fuzzing::s3_xml.
use offsitedb_fuzz as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| offsitedb::fuzzing::s3_xml(data));
