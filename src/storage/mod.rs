/*!
One streaming object-store interface, split into read and write capabilities (as rustic_core and
pgBackRest do): listing, showing and restoring take a [`ReadStore`] and cannot delete anything.

Keys are relative to the repository root (bucket + prefix, or a folder) and always use `/`.
Drivers: [`local::LocalStore`] (a folder) and [`s3::S3Store`] (any S3-compatible service).
Both pass the same conformance suite (tests/it/storage.rs).

The repository is untrusted, and that includes the sizes of its objects: small objects (the
repository file, manifests, drill records) are read whole, so [`ReadStore::get_small`] refuses one
over the caller's limit from the size the store reports, before reading a byte, and reads through
`Read::take(limit + 1)` so that a store that under-reports (or a folder whose object is a link to
`/dev/zero`) still ends at the limit.
*/

use std::io::{Read, Write};

use crate::error::{Error, Result};

pub mod local;
pub mod location;
pub mod lock;
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

/// An object opened for reading.
pub struct Object {
    pub reader: Box<dyn Read + Send>,
    /// The size the store reports (file metadata, `Content-Length`), before any byte is read;
    /// `None` when it does not say. Untrusted: readers of small objects bound what they read.
    pub size: Option<u64>,
}

/// The largest object [`ReadStore::get_bytes`] reads: the largest limit of any kind of small
/// object (manifests, see `catalog::repo`).
pub const MAX_SMALL_OBJECT: u64 = 256 << 20;

/// The read half of a store.
pub trait ReadStore: Send + Sync {
    /// A redacted description of where the store is, for messages (never holds secrets).
    fn location(&self) -> String;

    /// Opens an object for streaming, with its reported size. A missing object is an error of
    /// kind `NotFound`; something that is not a stored object (a folder's symlink or device) is
    /// refused.
    fn open(&self, key: &str) -> Result<Object>;

    /// Streams an object (of any size).
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        Ok(self.open(key)?.reader)
    }

    /// Streams an object of at most `limit` bytes: one the store reports as larger is refused
    /// before reading, and the reader fails as soon as more than `limit` bytes arrive. Either
    /// way the error is of kind `Integrity` and names the key, the size and the limit.
    fn get_limited(&self, key: &str, limit: u64) -> Result<Box<dyn Read + Send>> {
        let obj = self.open(key)?;
        if let Some(size) = obj.size.filter(|&s| s > limit) {
            return Err(too_large(key, &self.location(), Some(size), limit));
        }
        Ok(Box::new(Limited {
            inner: obj.reader.take(limit.saturating_add(1)),
            key: key.to_string(),
            location: self.location(),
            limit,
            read: 0,
        }))
    }

    /// Reads a small object whole, refusing one over `limit` bytes (see `get_limited`).
    fn get_small(&self, key: &str, limit: u64) -> Result<Vec<u8>> {
        let mut r = self.get_limited(key, limit)?;
        let mut v = Vec::new();
        r.read_to_end(&mut v)
            .map_err(|e| Error::from_io(e, &format!("cannot read {key}")))?;
        Ok(v)
    }

    /// Reads an object whole, up to [`MAX_SMALL_OBJECT`] bytes (for tools and tests; OffsiteDB's
    /// own reads name the limit of their kind of object with `get_small`).
    fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        self.get_small(key, MAX_SMALL_OBJECT)
    }

    /// Size of an object, or `None` when it does not exist.
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// The object's Object Lock retention, when it has one: what the store says, or an estimate
    /// from its upload time and the configured lock (see [`lock::Retention`]). `None` for stores
    /// without a lock configured (a folder), and for a missing object.
    fn retention(&self, _key: &str) -> Result<Option<lock::Retention>> {
        Ok(None)
    }

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

/// The error for an object over its kind's limit.
fn too_large(key: &str, location: &str, size: Option<u64>, limit: u64) -> Error {
    let limit = crate::units::bytes(limit);
    let what = match size {
        Some(s) => format!(
            "is {}, over the {limit} limit for this kind of object; it was not read",
            crate::units::bytes(s)
        ),
        None => format!("holds more than the {limit} limit for this kind of object"),
    };
    Error::integrity(format!("object {key} in {location} {what}")).with_hint(
        "OffsiteDB never writes such an object: it was replaced or damaged in the store; \
         remove it, or put back a good copy",
    )
}

/// A reader over at most `limit + 1` bytes of an object that fails once more than `limit` came.
struct Limited {
    inner: std::io::Take<Box<dyn Read + Send>>,
    key: String,
    location: String,
    limit: u64,
    read: u64,
}

impl Read for Limited {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(too_large(&self.key, &self.location, None, self.limit).into_io());
        }
        Ok(n)
    }
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
