/*!
One error type for the whole library: a kind (which maps to a stable exit code), a lowercase
one-line message that says what happened, and an optional hint that says what to do.

Messages never contain secrets: callers redact URLs before they build a message. The retry
wrapper reads `is_transient` so that an authentication failure is never retried.
*/

use std::fmt;
use std::io;

pub use crate::exit::ExitCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in the terms a caller (and an exit code) cares about.
/// The numbers are stable: scripts may depend on them (documented in README.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A bug or an unexpected condition.
    Internal,
    /// Bad arguments or a bad configuration file.
    Config,
    /// The master key is missing, malformed, or not the repository's key.
    Key,
    /// The database could not be reached, refused us, or does not exist.
    Source,
    /// The repository (bucket or folder) could not be reached or refused us.
    Storage,
    /// A stored object failed authentication or does not match its manifest.
    Integrity,
    /// A snapshot, repository or object that was asked for does not exist.
    NotFound,
    /// A required program (pg_dump, pg_restore, initdb) is missing or too old.
    Tool,
    /// A child process (pg_dump, pg_restore, postgres) failed.
    Process,
    /// Local file system trouble: disk full, permission denied.
    Io,
    /// A restore drill ran and the snapshot failed it (the drill record says why).
    DrillFailed,
    /// An alert channel could not be reached (`alert-test`).
    Alert,
    /// Another offsitedb run holds the source's lock, and we were told not to wait.
    Busy,
    /// The repository is older than one this machine has seen (`verify`).
    RolledBack,
    /// The operation was interrupted (signal).
    Interrupted,
}

impl ErrorKind {
    /// The process exit code for this kind (the table is in [`crate::exit`]).
    pub fn exit(self) -> ExitCode {
        match self {
            ErrorKind::Internal => ExitCode::Internal,
            ErrorKind::Config => ExitCode::Config,
            ErrorKind::Key => ExitCode::Key,
            ErrorKind::Source => ExitCode::Source,
            ErrorKind::Storage => ExitCode::Storage,
            ErrorKind::Integrity => ExitCode::Integrity,
            ErrorKind::NotFound => ExitCode::NotFound,
            ErrorKind::Tool => ExitCode::Tool,
            ErrorKind::Process => ExitCode::Process,
            ErrorKind::Io => ExitCode::Io,
            ErrorKind::DrillFailed => ExitCode::DrillFailed,
            ErrorKind::Alert => ExitCode::Alert,
            ErrorKind::Busy => ExitCode::Busy,
            ErrorKind::RolledBack => ExitCode::RolledBack,
            ErrorKind::Interrupted => ExitCode::Interrupted,
        }
    }

    pub fn exit_code(self) -> i32 {
        self.exit().code() as i32
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Internal => "internal",
            ErrorKind::Config => "config",
            ErrorKind::Key => "key",
            ErrorKind::Source => "source",
            ErrorKind::Storage => "storage",
            ErrorKind::Integrity => "integrity",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Tool => "tool",
            ErrorKind::Process => "process",
            ErrorKind::Io => "io",
            ErrorKind::DrillFailed => "drill_failed",
            ErrorKind::Alert => "alert",
            ErrorKind::Busy => "busy",
            ErrorKind::RolledBack => "rolled_back",
            ErrorKind::Interrupted => "interrupted",
        }
    }
}

#[derive(thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    transient: bool,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind.name(), self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            transient: false,
        }
    }

    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, m)
    }
    pub fn config(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, m)
    }
    pub fn key(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Key, m)
    }
    pub fn source_db(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Source, m)
    }
    pub fn storage(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Storage, m)
    }
    pub fn integrity(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn tool(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Tool, m)
    }
    pub fn process(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Process, m)
    }
    pub fn io(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, m)
    }

    /// A local I/O failure with what we were doing, e.g. `io_at("cannot write", path, e)`.
    pub fn io_at(what: &str, path: &std::path::Path, e: &io::Error) -> Self {
        let mut err = Self::io(format!("{what} {}: {}", path.display(), describe_io(e)));
        if e.raw_os_error() == Some(libc::ENOSPC) {
            err =
                err.with_hint("free some space on that file system, or point OffsiteDB elsewhere");
        }
        err
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Marks the error as worth retrying (a timeout, a reset connection, a 5xx).
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// Prefixes the message with context, keeping kind, hint and transience.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
    pub fn is_transient(&self) -> bool {
        self.transient
    }
    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }

    /// Wraps this error so it can travel through `std::io::Read`/`Write`, and be recovered
    /// unchanged by [`Error::from_io`] on the other side.
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }

    /// Recovers an [`Error`] that travelled through an `io::Error`, or describes a plain one.
    pub fn from_io(e: io::Error, what: &str) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return *e.into_inner().unwrap().downcast::<Error>().unwrap();
        }
        let mut err = Self::io(format!("{what}: {}", describe_io(&e)));
        if e.raw_os_error() == Some(libc::ENOSPC) {
            err = err.with_hint("free some space on that file system");
        }
        err
    }
}

/// `io::Error`'s Display appends "(os error 28)"; a person wants the words only.
pub fn describe_io(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s.to_lowercase(),
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::from_io(e, "i/o error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_trip_through_io_error() {
        let e = Error::integrity("chunk 3 failed authentication").with_hint("h");
        let back = Error::from_io(e.into_io(), "reading");
        assert_eq!(back.kind(), ErrorKind::Integrity);
        assert_eq!(back.message(), "chunk 3 failed authentication");
        assert_eq!(back.hint(), Some("h"));
    }

    #[test]
    fn plain_io_errors_are_described_without_os_codes() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        let back = Error::from_io(e, "cannot write x");
        assert_eq!(back.kind(), ErrorKind::Io);
        assert_eq!(back.message(), "cannot write x: no space left on device");
        assert!(back.hint().is_some());
    }

    #[test]
    fn exit_codes_are_distinct() {
        use std::collections::HashSet;
        let kinds = [
            ErrorKind::Internal,
            ErrorKind::Config,
            ErrorKind::Key,
            ErrorKind::Source,
            ErrorKind::Storage,
            ErrorKind::Integrity,
            ErrorKind::NotFound,
            ErrorKind::Tool,
            ErrorKind::Process,
            ErrorKind::Io,
            ErrorKind::DrillFailed,
            ErrorKind::Alert,
            ErrorKind::Busy,
            ErrorKind::RolledBack,
            ErrorKind::Interrupted,
        ];
        let codes: HashSet<i32> = kinds.iter().map(|k| k.exit_code()).collect();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0) && !codes.contains(&2));
    }
}
