/*!
Every exit code `offsitedb` can end with, and what it means: one table, here. The README's table,
the binary's `--help` text and the error kinds ([`crate::ErrorKind::exit`]) all come from it, and a
test checks that the README says the same as [`ExitCode::ALL`].

The numbers are stable: scripts and service managers rely on them. PostgreSQL's archiver treats an
exit above 125 from `archive_command` as fatal, so no failure of ours uses one except the two that
mirror the shell's conventions (130 for a signal, 141 for a closed pipe).
*/

/// How `offsitedb` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitCode {
    Success,
    Internal,
    Usage,
    Config,
    Key,
    Source,
    Storage,
    Integrity,
    NotFound,
    Tool,
    Process,
    Io,
    DrillFailed,
    Alert,
    Busy,
    RolledBack,
    Interrupted,
    BrokenPipe,
}

impl ExitCode {
    /// Every code, in the order the README lists them.
    pub const ALL: [ExitCode; 18] = [
        ExitCode::Success,
        ExitCode::Internal,
        ExitCode::Usage,
        ExitCode::Config,
        ExitCode::Key,
        ExitCode::Source,
        ExitCode::Storage,
        ExitCode::Integrity,
        ExitCode::NotFound,
        ExitCode::Tool,
        ExitCode::Process,
        ExitCode::Io,
        ExitCode::DrillFailed,
        ExitCode::Alert,
        ExitCode::Busy,
        ExitCode::RolledBack,
        ExitCode::Interrupted,
        ExitCode::BrokenPipe,
    ];

    pub fn code(self) -> u8 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Internal => 1,
            ExitCode::Usage => 2,
            ExitCode::Config => 3,
            ExitCode::Key => 4,
            ExitCode::Source => 5,
            ExitCode::Storage => 6,
            ExitCode::Integrity => 7,
            ExitCode::NotFound => 8,
            ExitCode::Tool => 9,
            ExitCode::Process => 10,
            ExitCode::Io => 11,
            ExitCode::DrillFailed => 12,
            ExitCode::Alert => 13,
            ExitCode::Busy => 14,
            ExitCode::RolledBack => 15,
            ExitCode::Interrupted => 130,
            ExitCode::BrokenPipe => 141,
        }
    }

    /// One line for the README's table.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::Internal => "internal error (a bug: please report it)",
            ExitCode::Usage => "bad command-line usage (the argument parser prints the usage text)",
            ExitCode::Config => "configuration: a bad file, URL, name or option",
            ExitCode::Key => "key: missing, malformed, or not this repository's key",
            ExitCode::Source => {
                "database: unreachable, refused the login, does not exist, or cannot be read"
            }
            ExitCode::Storage => {
                "storage: unreachable, refused the credentials, missing bucket, or full"
            }
            ExitCode::Integrity => "integrity: an object was modified, truncated or swapped",
            ExitCode::NotFound => "not found: no such snapshot or repository",
            ExitCode::Tool => {
                "a required program (pg_dump, pg_restore, initdb) is missing or too old, or the \
                 drill server lacks an extension the dump creates"
            }
            ExitCode::Process => "a child process (pg_dump, pg_restore) failed",
            ExitCode::Io => "local file system: no space, no permission",
            ExitCode::DrillFailed => {
                "a drill ran and the snapshot failed it (the drill record lists every problem)"
            }
            ExitCode::Alert => "`alert-test`: an alert channel could not be reached",
            ExitCode::Busy => {
                "another offsitedb run holds the source's lock and `--no-wait` was given"
            }
            ExitCode::RolledBack => {
                "`verify`: the repository is older than one this machine has seen (rolled back, \
                 or its newest objects deleted)"
            }
            ExitCode::Interrupted => {
                "interrupted (Ctrl-C, SIGTERM); nothing half-done is left visible"
            }
            ExitCode::BrokenPipe => {
                "standard output was closed before the end (for example piped into `head`)"
            }
        }
    }

    /// A short list for `--help`: "0 ok, 1 internal, ...".
    pub fn summary() -> String {
        ExitCode::ALL
            .iter()
            .map(|c| format!("{} {}", c.code(), c.short()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn short(self) -> &'static str {
        match self {
            ExitCode::Success => "ok",
            ExitCode::Internal => "internal",
            ExitCode::Usage => "usage",
            ExitCode::Config => "config",
            ExitCode::Key => "key",
            ExitCode::Source => "database",
            ExitCode::Storage => "storage",
            ExitCode::Integrity => "integrity",
            ExitCode::NotFound => "not found",
            ExitCode::Tool => "missing tool",
            ExitCode::Process => "child process failed",
            ExitCode::Io => "local i/o",
            ExitCode::DrillFailed => "drill failed",
            ExitCode::Alert => "alert channel failed",
            ExitCode::Busy => "source busy",
            ExitCode::RolledBack => "rolled back",
            ExitCode::Interrupted => "interrupted",
            ExitCode::BrokenPipe => "output pipe closed",
        }
    }

    /// The README's table, as it must read.
    pub fn markdown_table() -> String {
        let mut s = String::from("| code | meaning |\n|---:|---|\n");
        for c in ExitCode::ALL {
            s.push_str(&format!("| {} | {} |\n", c.code(), c.meaning()));
        }
        s
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_sorted() {
        let codes: Vec<u8> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        let mut sorted = codes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(codes, sorted);
        // Only the shell's own conventions go above 125 (PostgreSQL's archiver treats those as
        // fatal).
        for c in ExitCode::ALL {
            assert!(
                c.code() <= 125 || matches!(c, ExitCode::Interrupted | ExitCode::BrokenPipe),
                "{c:?}"
            );
        }
    }
}

#[cfg(test)]
mod readme {
    use super::ExitCode;

    /// The README's table is this enum, row for row (the doc people read is the code's truth).
    #[test]
    fn the_readme_lists_every_exit_code_as_the_enum_says() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&ExitCode::markdown_table()),
            "README.md's exit code table differs from src/exit.rs; it must read:\n{}",
            ExitCode::markdown_table()
        );
    }

    /// And its table of what wal-push and wal-fetch answer PostgreSQL.
    #[test]
    fn the_readme_lists_the_wal_exit_codes() {
        let readme = include_str!("../README.md");
        for row in [
            format!("| `wal-push` | {} | stored", super::wal::OK),
            format!("| `wal-push` | {} | not stored", super::wal::RETRY),
            format!("| `wal-fetch` | {} | written", super::wal::OK),
            format!(
                "| `wal-fetch` | {} | not in the archive",
                super::wal::NOT_FOUND
            ),
            format!("| `wal-fetch` | {} | anything else", super::wal::FATAL),
        ] {
            assert!(readme.contains(&row), "README.md lacks {row:?}");
        }
    }
}

/// `wal-push` and `wal-fetch` answer PostgreSQL, not a person, so they speak its language
/// (README "Point-in-time recovery", docs/PITR.md): for `archive_command`, 0 stored and 1 failed
/// (the archiver retries; an exit above 125 would make PostgreSQL restart the archiver); for
/// `restore_command`, 0 written, 1 not in the archive (recovery ends there or follows another
/// timeline, correctly), and [`WAL_FATAL`] for anything else, above 125 so that PostgreSQL
/// stops recovery instead of taking a store outage or a damaged object for the end of the WAL
/// and promoting a database that is missing data.
pub mod wal {
    /// wal-push: stored (or already stored with the same content); wal-fetch: written.
    pub const OK: u8 = 0;
    /// wal-push: not stored, the archiver will retry.
    pub const RETRY: u8 = 1;
    /// wal-fetch: the file is not in the archive.
    pub const NOT_FOUND: u8 = 1;
    /// wal-fetch: any other failure; PostgreSQL aborts recovery.
    pub const FATAL: u8 = 200;
}
pub use wal::FATAL as WAL_FATAL;

// Above 125 stops recovery; the archiver's failure must stay at or below it.
const _: () = assert!(wal::FATAL > 125 && wal::RETRY <= 125);
