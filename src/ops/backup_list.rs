//! `offsitedb backup-list`: base backups, their WAL ranges, and the WAL coverage after each. (Being built: issue 16.)
