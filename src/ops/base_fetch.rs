//! `offsitedb backup-fetch`: a base backup extracted into an empty data folder. (Being built: issue 16.)
