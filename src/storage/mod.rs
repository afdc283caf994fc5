/*!
One streaming object-store interface, split into read and write capabilities (as rustic_core and
pgBackRest do): listing, showing and restoring take a [`ReadStore`] and cannot delete anything.

Keys are relative to the repository root (bucket + prefix, or a folder) and always use `/`.
Drivers: [`local::LocalStore`] (a folder) and [`s3::S3Store`] (any S3-compatible service).
Both pass the same conformance suite (tests/it/storage.rs).
*/

use std::io::{Read, Write};

use crate::error::{Error, Result};

pub mod local;
pub mod location;
pub mod retry;
pub mod s3;

pub use location::{Location, S3Location};

/// What a listing knows about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the store root.
    pub key: String,
    pub size: u64,
}

/// The read half of a store.
pub trait ReadStore: Send + Sync {
    /// A redacted description of where the store is, for messages (never holds secrets).
    fn location(&self) -> String;

    /// Streams an object. A missing object is an error of kind `NotFound`.
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>>;

    /// Reads a small object completely.
    fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let mut r = self.get(key)?;
        let mut v = Vec::new();
        r.read_to_end(&mut v)
            .map_err(|e| Error::from_io(e, &format!("cannot read {key}")))?;
        Ok(v)
    }

    /// Size of an object, or `None` when it does not exist.
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Some object whose key starts with `prefix`, if there is one (cheaper than a listing).
    fn any(&self, prefix: &str) -> Result<Option<ObjectInfo>> {
        Ok(self.list(prefix)?.into_iter().next())
    }
}

/// The write half of a store. Objects are written whole: a reader sees either nothing or the
/// complete object, never a prefix of it.
pub trait WriteStore: ReadStore {
    /// Writes a small object in one request.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;

    /// Writes a small object only if none exists under `key`; `Ok(false)` when one does. Two
    /// writers racing for the same key: exactly one creates it.
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool>;

    /// Starts a streaming upload. `size_hint` (an upper estimate of the final size, if known)
    /// lets drivers size multipart parts.
    fn upload(&self, key: &str, size_hint: Option<u64>) -> Result<Box<dyn Upload>>;

    fn delete(&self, key: &str) -> Result<()>;

    /// Uploads that were started and never completed or aborted (crashed writers), whose key
    /// starts with `prefix`. Empty for stores where such leftovers are invisible.
    fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<IncompleteUpload>>;

    /// Removes one leftover returned by [`WriteStore::incomplete_uploads`].
    fn abort_incomplete(&self, upload: &IncompleteUpload) -> Result<()>;

    /// The bucket's Object Lock setting; `None` where the store has no such thing (a folder).
    fn object_lock(&self) -> Result<Option<ObjectLock>> {
        Ok(None)
    }

    /// Aborts uploads that an earlier process failed to abort (the store was unreachable then).
    /// Returns how many it cleaned.
    fn clean_abandoned(&self) -> Result<usize> {
        Ok(0)
    }
}

/// A leftover of an interrupted upload.
#[derive(Clone, Debug)]
pub struct IncompleteUpload {
    pub key: String,
    pub id: String,
    /// RFC 3339, when the store reports it.
    pub started: Option<String>,
}

/// A bucket's Object Lock configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    pub enabled: bool,
    /// GOVERNANCE or COMPLIANCE, for the default retention.
    pub mode: Option<String>,
    /// The default retention, e.g. "30 days".
    pub retention: Option<String>,
}

/// An object being written. Nothing is visible under its key until `finish` succeeds.
/// Dropping it without `finish` aborts it (best effort); call `abort` to learn whether that worked.
pub trait Upload: Write + Send {
    /// Completes the object; returns the number of bytes stored.
    fn finish(self: Box<Self>) -> Result<u64>;
    /// Discards everything written so far.
    fn abort(self: Box<Self>) -> Result<()>;
}

/// Checks that a key is one we would write: relative, `/`-separated, no empty or dot segments.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !key.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(Error::internal(format!("invalid object key {key:?}")))
    }
}

/// Opens the store a location names.
pub fn open(loc: &Location, creds: &s3::Credentials) -> Result<Box<dyn WriteStore>> {
    Ok(match loc {
        Location::Local(path) => Box::new(local::LocalStore::new(path.clone())),
        Location::S3(s) => Box::new(s3::S3Store::new(s.clone(), creds.clone())?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in ["a", "a/b", "snapshots/db/20261121T000000Z-abcdef/data"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a//b", "a/../b", "./a", "a/"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
