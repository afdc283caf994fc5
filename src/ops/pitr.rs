//! `offsitedb restore --pgdata`: a data folder prepared to recover to a point in time. (Being built: issue 16.)
