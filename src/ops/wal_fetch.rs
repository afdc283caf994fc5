//! `offsitedb wal-fetch`: one WAL file for `restore_command`, with the next ones fetched ahead. (Being built: issue 16.)
