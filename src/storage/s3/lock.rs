/*!
Object Lock on S3 ([`crate::storage::lock`] says why): the headers that lock an upload, an
object's retention as HEAD reports it, and the delete that really frees storage on a
versioned bucket (every version of the key, then its delete markers).

Only a store opened with a lock ([`super::S3Options::object_lock`]) does any of this: without
one, uploads carry no lock headers and a delete is the plain DELETE.
*/

use jiff::Timestamp;
use ureq::http;

use super::{Inner, Req, list};
use crate::error::{Error, Result};
use crate::storage::lock::{ESTIMATE_MARGIN, Retention, iso8601};

/// `check` writes a probe object and deletes it at once: it is not a backup, so not locked.
const UNLOCKED_PREFIX: &str = "probes/";

impl Inner {
    /// The lock headers for an upload to `full_key` starting now (none without a lock).
    pub(super) fn lock_headers(&self, full_key: &str) -> Vec<(&'static str, String)> {
        match &self.opts.object_lock {
            Some(lock) if !self.relative_key(full_key).starts_with(UNLOCKED_PREFIX) => {
                lock.headers(Timestamp::now()).to_vec()
            }
            _ => Vec::new(),
        }
    }

    /// What HEAD says about the lock of `full_key` (one version of it, when given). Without
    /// the lock headers (a key lacking `s3:GetObjectRetention`, or an object uploaded before
    /// the lock was set), an estimate from its upload time when a lock is configured.
    pub(super) fn retention(
        &self,
        full_key: &str,
        version: Option<&str>,
    ) -> Result<Option<Retention>> {
        let mut req = Req::new(http::Method::HEAD, Some(full_key));
        if let Some(v) = version {
            req = req.query("versionId", v);
        }
        let resp = match self.call(&req) {
            Ok(r) => r,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let legal_hold =
            header("x-amz-object-lock-legal-hold").is_some_and(|v| v.eq_ignore_ascii_case("ON"));
        let mode = header("x-amz-object-lock-mode").map(str::to_string);
        if let Some(until) = header("x-amz-object-lock-retain-until-date") {
            let until = until.parse::<Timestamp>().map_err(|e| {
                Error::storage(format!(
                    "the storage service gave {} a retain-until date OffsiteDB cannot read ({until:?}: {e})",
                    self.relative_key(full_key)
                ))
            })?;
            return Ok(Some(Retention {
                mode,
                until,
                legal_hold,
                estimated: false,
            }));
        }
        let Some(lock) = &self.opts.object_lock else {
            return Ok(legal_hold.then_some(Retention {
                mode,
                until: Timestamp::UNIX_EPOCH,
                legal_hold,
                estimated: false,
            }));
        };
        // The upload started before the store's Last-Modified (multipart: at creation), so
        // Last-Modified + days errs late; the margin covers the two clocks disagreeing.
        let uploaded = header("last-modified")
            .and_then(|v| jiff::fmt::rfc2822::parse(v).ok())
            .map(|z| z.timestamp())
            .unwrap_or_else(Timestamp::now);
        let until = lock
            .retain_until(uploaded)
            .checked_add(ESTIMATE_MARGIN)
            .unwrap_or(Timestamp::MAX);
        Ok(Some(Retention {
            mode: Some(lock.mode.as_s3().to_string()),
            until,
            legal_hold,
            estimated: true,
        }))
    }

    /// Deletes every version of `full_key`, then its delete markers: on a versioned bucket a
    /// plain DELETE only hides the object. A version the store refuses because of its lock is
    /// an error saying so (and until when); the markers then stay, since removing them would
    /// bring the locked version back into listings.
    pub(super) fn delete_versions(&self, full_key: &str) -> Result<()> {
        let (versions, markers) = self.versions(full_key)?;
        for v in &versions {
            let req = Req::new(http::Method::DELETE, Some(full_key)).query("versionId", v);
            match self.call(&req) {
                Ok(_) => {}
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(e) => return Err(self.refused(full_key, v, e)),
            }
        }
        for m in &markers {
            let req = Req::new(http::Method::DELETE, Some(full_key)).query("versionId", m);
            match self.call(&req) {
                Ok(_) => {}
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A refused version delete: when the version is locked, an error that says so (S3 says
    /// "AccessDenied", and SeaweedFS does not say why); else the store's own error.
    fn refused(&self, full_key: &str, version: &str, e: Error) -> Error {
        let now = Timestamp::now();
        match self.retention(full_key, Some(version)) {
            Ok(Some(r)) if !r.estimated && r.holds_at(now) => {
                let why = if r.legal_hold {
                    "a legal hold".to_string()
                } else {
                    format!(
                        "Object Lock until {} ({})",
                        iso8601(r.until),
                        r.mode.as_deref().unwrap_or("mode unknown")
                    )
                };
                Error::storage(format!(
                    "the store refuses to delete {} under {why}: {}",
                    self.relative_key(full_key),
                    e.message()
                ))
                .with_hint("nothing is lost: a later prune deletes it once its lock ends")
            }
            _ => e,
        }
    }

    /// The version ids of `full_key` and of its delete markers (ListObjectVersions).
    fn versions(&self, full_key: &str) -> Result<(Vec<String>, Vec<String>)> {
        let mut pages = list::Pages::new(format!(
            "versions of {} in {}",
            self.relative_key(full_key),
            self.location()
        ));
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        let mut next: Option<(String, String)> = None;
        loop {
            let mut req = Req::new(http::Method::GET, None)
                .query("versions", "")
                .query("prefix", full_key);
            if let Some((k, v)) = &next {
                req = req.query("key-marker", k).query("version-id-marker", v);
            }
            let root = self.call_xml(&req)?;
            // The prefix also matches longer keys ("data" and "data2"): only this key counts.
            for (name, out) in [("Version", &mut versions), ("DeleteMarker", &mut markers)] {
                for c in root.children(name) {
                    if c.text_of("Key") == full_key {
                        out.push(c.text_of("VersionId").to_string());
                    }
                }
            }
            let (k, v) = (
                root.text_of("NextKeyMarker"),
                root.text_of("NextVersionIdMarker"),
            );
            let token = if k.is_empty() {
                String::new()
            } else {
                format!("{k}\n{v}")
            };
            if pages
                .next(root.text_of("IsTruncated") == "true", &token)?
                .is_none()
            {
                break;
            }
            next = Some((k.to_string(), v.to_string()));
        }
        Ok((versions, markers))
    }
}
