//! `offsitedb wal-show`: the WAL archive by timeline: segment ranges, switch points, gaps. (Being built: issue 16.)
