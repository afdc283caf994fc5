//! `offsitedb wal-verify`: the WAL archive is complete (integrity) and its timelines consistent. (Being built: issue 16.)
