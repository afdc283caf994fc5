//! `offsitedb wal-push`: archive one WAL file, and the `.ready` ones after it. (Being built: issue 16.)
