/*!
A small S3 client for the handful of calls a backup repository needs, written for the stores
people actually use (AWS S3, Backblaze B2, Cloudflare R2, MinIO, SeaweedFS):

- SigV4 header signing over the real payload hash; no optional checksum headers.
- Every PUT and UploadPart carries `Content-MD5`. S3 refuses an upload into a bucket with Object
  Lock unless it carries `Content-MD5` or an `x-amz-checksum-*` header; the latter are the
  optional headers that B2, R2 and older MinIO reject, and `Content-MD5` is the one every store
  accepts (and checks: a body damaged on the way is refused with `BadDigest`). It is sent
  whatever the bucket: learning the bucket's setting costs a request and a permission
  (`s3:GetBucketObjectLockConfiguration`) that keys often lack, and MD5 runs at about 600 MB/s
  on one core against the 20-30 MB/s a backup stores on this machine class (docs/BENCHMARKS.md),
  on the part-upload threads.
- Path-style or virtual-hosted addressing.
- Every request retried with backoff when the failure is transient; never on auth errors.
- Multipart uploads with equal-size parts (R2 requires it), a bounded number in flight, and
  an abort on failure (`upload.rs`); downloads that resume with a Range request (`download.rs`).
- A conditional PUT (`If-None-Match: *`) retried after a lost reply finds the object its first
  try created and gets 412: it reads the object back (bounded: it is small) and succeeds when the
  bytes are the ones it sent.
- Listings follow continuation tokens under a rule that cannot loop (`list.rs`).
*/

use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use ureq::http;

use super::retry::RetryPolicy;
use super::{
    IncompleteUpload, Object, ObjectInfo, ReadStore, S3Location, Upload, WriteStore, check_key,
};
use crate::error::{Error, Result};

mod download;
mod list;
mod lock;
pub mod sigv4;
mod upload;
pub mod xml;

pub use upload::{MAX_PARTS, MIN_PART_SIZE, choose_part_size};

/// Bodies at least this big go with `UNSIGNED-PAYLOAD` over https.
const UNSIGNED_FROM: usize = 1 << 20;

/// S3 credentials. `Debug` never shows the secret.
#[derive(Clone, Default)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, secret redacted)", self.access_key_id)
    }
}

impl Credentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, if set.
    pub fn from_env() -> Option<Self> {
        let id = std::env::var("AWS_ACCESS_KEY_ID")
            .ok()
            .filter(|v| !v.is_empty())?;
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY")
            .ok()
            .filter(|v| !v.is_empty())?;
        Some(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: std::env::var("AWS_SESSION_TOKEN")
                .ok()
                .filter(|v| !v.is_empty()),
        })
    }
}

/// Tuning for uploads; the defaults keep a backup under ~64 MiB of memory.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// Fixed part size; `None` picks one from the size hint (see [`choose_part_size`]).
    pub part_size: Option<u64>,
    /// Parts uploaded at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// A local file where uploads that could not be aborted (the service was unreachable) are
    /// remembered, so that [`WriteStore::clean_abandoned`] can abort them later.
    pub abandoned_log: Option<std::path::PathBuf>,
    /// Lock every upload (`[repository] object_lock`); deletes then remove every version of a
    /// key (see `lock.rs`).
    pub object_lock: Option<crate::storage::lock::LockSetting>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            part_size: None,
            concurrency: 3,
            retry: RetryPolicy::default(),
            abandoned_log: None,
            object_lock: None,
        }
    }
}

pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    loc: S3Location,
    creds: Credentials,
    agent: ureq::Agent,
    opts: S3Options,
}

/// One S3 request, before signing.
struct Req<'a> {
    method: http::Method,
    /// Full object key (prefix included), or `None` for a bucket-level request.
    key: Option<&'a str>,
    query: Vec<(String, String)>,
    headers: Vec<(&'static str, String)>,
    body: Option<&'a [u8]>,
}

impl<'a> Req<'a> {
    fn new(method: http::Method, key: Option<&'a str>) -> Self {
        Req {
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        }
    }
    fn query(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.to_string(), v.to_string()));
        self
    }
    /// The request's body; a PUT (object or part) also gets its `Content-MD5`, computed once
    /// for every try.
    fn body(mut self, b: &'a [u8]) -> Self {
        self.body = Some(b);
        if self.method == http::Method::PUT {
            use base64::Engine;
            use md5::Digest;
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b));
            self.headers.push(("content-md5", md5));
        }
        self
    }
    fn header(mut self, k: &'static str, v: String) -> Self {
        self.headers.push((k, v));
        self
    }
    /// The lock headers of an upload, when the store locks uploads (`lock.rs`).
    fn locked(mut self, inner: &Inner) -> Self {
        if let Some(k) = self.key {
            self.headers.extend(inner.lock_headers(k));
        }
        self
    }
    /// What the request is about, for messages.
    fn what(&self, bucket: &str) -> String {
        match self.key {
            Some(k) => format!("{} {k}", self.method),
            None => format!("{} bucket {bucket}", self.method),
        }
    }
}

impl S3Store {
    pub fn new(loc: S3Location, creds: Credentials) -> Result<Self> {
        Self::with_options(loc, creds, S3Options::default())
    }

    pub fn with_options(loc: S3Location, creds: Credentials, opts: S3Options) -> Result<Self> {
        if creds.access_key_id.is_empty() || creds.secret_access_key.is_empty() {
            return Err(
                Error::config(format!("no S3 credentials for s3://{}", loc.bucket)).with_hint(
                    "set access_key_id and secret_access_key under [repository] in offsitedb.toml, \
                 or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                ),
            );
        }
        let config = ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            .max_redirects(0)
            .user_agent(format!("offsitedb/{}", crate::VERSION))
            .max_idle_connections_per_host(opts.concurrency.max(1) + 2)
            .build();
        Ok(S3Store {
            inner: Arc::new(Inner {
                loc,
                creds,
                agent: config.new_agent(),
                opts,
            }),
        })
    }
}

impl Inner {
    fn full_key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(if self.loc.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.loc.prefix)
        })
    }

    /// A listing prefix under the repository root.
    fn full_prefix(&self, prefix: &str) -> String {
        if self.loc.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.loc.prefix)
        }
    }

    /// The key relative to the repository root, for a key from a listing.
    fn relative_key<'k>(&self, full: &'k str) -> &'k str {
        if self.loc.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.loc.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(full)
        }
    }

    fn location(&self) -> String {
        super::Location::S3(self.loc.clone()).to_string()
    }

    /// Remembers an upload we failed to abort (see `S3Options::abandoned_log`).
    fn remember_abandoned(&self, full_key: &str, upload_id: &str) {
        let Some(path) = &self.opts.abandoned_log else {
            return;
        };
        let line = serde_json::json!({
            "host": self.loc.host, "bucket": self.loc.bucket, "key": full_key, "upload_id": upload_id,
        });
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            use std::io::Write;
            lock_exclusive(&f);
            let _ = writeln!(f, "{line}");
        }
    }

    /// Sends one request once. Any HTTP status comes back as a response; only transport
    /// failures are errors here.
    fn send_once(&self, req: &Req) -> Result<http::Response<ureq::Body>> {
        let l = &self.loc;
        let (host, mut path) = if l.path_style {
            (l.host.clone(), format!("/{}", l.bucket))
        } else {
            (format!("{}.{}", l.bucket, l.host), String::new())
        };
        match req.key {
            Some(k) => {
                path.push('/');
                path.push_str(&sigv4::uri_encode(k, true));
            }
            None if path.is_empty() => path.push('/'),
            None => {}
        }
        let query = sigv4::canonical_query(&req.query);
        let body = req.body.unwrap_or(&[]);
        let payload_hash = if body.is_empty() {
            sigv4::EMPTY_SHA256.to_string()
        } else if l.scheme == "https" && body.len() >= UNSIGNED_FROM {
            // As the AWS SDKs do: over TLS, big bodies are not hashed a second time; TLS
            // protects them in transit and the sealed format's per-chunk tags end to end.
            sigv4::UNSIGNED_PAYLOAD.to_string()
        } else {
            sigv4::sha256_hex(body)
        };
        let amz_date = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string();
        let mut signed: Vec<(&str, &str)> = vec![
            ("host", &host),
            ("x-amz-content-sha256", &payload_hash),
            ("x-amz-date", &amz_date),
        ];
        if let Some(t) = &self.creds.session_token {
            signed.push(("x-amz-security-token", t));
        }
        for (k, v) in &req.headers {
            signed.push((k, v));
        }
        let auth = sigv4::Signer {
            access_key_id: &self.creds.access_key_id,
            secret_access_key: &self.creds.secret_access_key,
            region: &l.region,
        }
        .authorization(
            req.method.as_str(),
            &path,
            &query,
            &signed,
            &payload_hash,
            &amz_date,
        );
        let url = if query.is_empty() {
            format!("{}://{host}{path}", l.scheme)
        } else {
            format!("{}://{host}{path}?{query}", l.scheme)
        };
        let mut b = http::Request::builder()
            .method(req.method.clone())
            .uri(&url);
        for (k, v) in &signed {
            b = b.header(*k, *v);
        }
        b = b.header("authorization", auth);
        // POST and PUT always carry a Content-Length, even when empty: some stores and proxies
        // reject or stall on a body-less POST (CreateMultipartUpload).
        let result = match req.body {
            Some(data) => self
                .agent
                .run(b.body(data).map_err(|e| Error::internal(e.to_string()))?),
            None if matches!(req.method, http::Method::POST | http::Method::PUT) => {
                let empty: &[u8] = &[];
                self.agent
                    .run(b.body(empty).map_err(|e| Error::internal(e.to_string()))?)
            }
            None => self.agent.run(
                b.body(ureq::SendBody::none())
                    .map_err(|e| Error::internal(e.to_string()))?,
            ),
        };
        result.map_err(|e| self.transport_error(e))
    }

    /// Sends a request, retrying transient failures, and turns error statuses into errors.
    fn call(&self, req: &Req) -> Result<http::Response<ureq::Body>> {
        self.call_counting(req, &mut 0)
    }

    /// `call`, counting the tries made in `tries`.
    fn call_counting(&self, req: &Req, tries: &mut u32) -> Result<http::Response<ureq::Body>> {
        let what = req.what(&self.loc.bucket);
        self.opts.retry.run(
            || {
                *tries += 1;
                let mut resp = self.send_once(req)?;
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    return Ok(resp);
                }
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_vec()
                    .unwrap_or_default();
                Err(self.status_error(status, &body, req, &what))
            },
            |_, _| {},
        )
    }

    /// Like `call`, and reads a small response body (XML).
    fn call_xml(&self, req: &Req) -> Result<xml::Element> {
        let what = req.what(&self.loc.bucket);
        self.opts.retry.run(
            || {
                let mut resp = self.send_once(req)?;
                let status = resp.status().as_u16();
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(64 << 20)
                    .read_to_vec()
                    .map_err(|e| self.transport_error(e))?;
                if !(200..300).contains(&status) {
                    return Err(self.status_error(status, &body, req, &what));
                }
                let root = xml::parse(&body)?;
                // CompleteMultipartUpload can answer 200 and put the error in the body.
                if root.name == "Error" {
                    return Err(self.status_error(500, &body, req, &what));
                }
                Ok(root)
            },
            |_, _| {},
        )
    }

    fn transport_error(&self, e: ureq::Error) -> Error {
        let at = format!("{}://{}", self.loc.scheme, self.loc.host);
        let (msg, transient) = match &e {
            ureq::Error::Io(io) => (crate::error::describe_io(io), true),
            ureq::Error::Timeout(t) => (format!("timed out ({t})"), true),
            ureq::Error::HostNotFound => ("host not found".to_string(), true),
            ureq::Error::ConnectionFailed => ("connection failed".to_string(), true),
            ureq::Error::BodyStalled => ("the transfer stalled".to_string(), true),
            ureq::Error::Protocol(p) => (format!("protocol error: {p}"), true),
            ureq::Error::Tls(t) => (format!("tls error: {t}"), false),
            ureq::Error::Rustls(t) => (format!("tls error: {t}"), false),
            other => (other.to_string(), false),
        };
        let mut err = Error::storage(format!("cannot reach the storage service at {at}: {msg}"));
        if transient {
            err = err
                .transient()
                .with_hint("check the endpoint in the repository URL and the network; the request was retried with backoff");
        }
        err
    }

    fn status_error(&self, status: u16, body: &[u8], req: &Req, what: &str) -> Error {
        let (code, message) = error_fields(body);
        let bucket = &self.loc.bucket;
        let at = format!("{}://{}", self.loc.scheme, self.loc.host);
        let detail = if code.is_empty() {
            format!("HTTP {status}")
        } else if message.is_empty() {
            code.clone()
        } else {
            format!("{code}: {}", message.trim_end_matches('.').to_lowercase())
        };
        match (status, code.as_str()) {
            (_, "NoSuchBucket") => Error::storage(format!("bucket {bucket:?} does not exist at {at}"))
                .with_hint("create the bucket first (OffsiteDB never creates buckets), or fix the bucket name in the repository URL"),
            (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidSecurity" | "InvalidToken" | "ExpiredToken") => {
                Error::storage(format!("the storage service at {at} rejected the credentials ({code})"))
                    .with_hint("check access_key_id and secret_access_key under [repository], or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            }
            (_, "AuthorizationHeaderMalformed" | "PermanentRedirect" | "IllegalLocationConstraintException") => {
                Error::storage(format!("the storage service at {at} refused the region {:?} ({detail})", self.loc.region))
                    .with_hint("set the bucket's region in the repository URL: ?region=...")
            }
            (403, _) | (_, "AccessDenied") => Error::storage(format!("access denied by the storage service for {what} ({detail})"))
                .with_hint("the credentials need permission to read, write, list and delete objects in the bucket"),
            (_, "NoSuchUpload") => Error::storage(format!("the multipart upload for {what} no longer exists ({detail})")),
            (404, _) | (_, "NoSuchKey") if req.key.is_some() => {
                Error::not_found(format!("object {} does not exist in {}", req.key.map(|k| self.relative_key(k)).unwrap_or(""), self.location()))
            }
            (_, "NotImplemented") => Error::storage(format!("the storage service at {at} does not support {what}: {detail}")),
            (500..=599, _) | (429 | 408, _) | (_, "SlowDown" | "InternalError" | "RequestTimeout" | "ServiceUnavailable") => {
                Error::storage(format!("the storage service at {at} failed {what}: {detail}")).transient()
            }
            (400, "InvalidRequest") if req.headers.iter().any(|(k, _)| *k == "x-amz-object-lock-mode") => {
                Error::storage(format!("the storage service at {at} refused {what} with its Object Lock retention: {detail}"))
                    .with_hint("object_lock under [repository] needs a bucket created with Object Lock; `offsitedb check` says whether this one has it")
            }
            _ => Error::storage(format!("the storage service at {at} refused {what}: {detail}")),
        }
    }
}

/// The `Code` and `Message` of an error response (empty when the body is not XML).
fn error_fields(body: &[u8]) -> (String, String) {
    match xml::parse(body) {
        Ok(r) => (
            r.text_of("Code").to_string(),
            r.text_of("Message").to_string(),
        ),
        Err(_) => (String::new(), String::new()),
    }
}

/// What a GetObjectLockConfiguration response says.
fn object_lock_of(root: &xml::Element) -> crate::storage::ObjectLock {
    let rule = root.child("Rule").and_then(|r| r.child("DefaultRetention"));
    let text = |name: &str| {
        rule.map(|r| r.text_of(name).to_string())
            .filter(|t| !t.is_empty())
    };
    crate::storage::ObjectLock {
        enabled: root.text_of("ObjectLockEnabled") == "Enabled",
        mode: text("Mode"),
        retention: text("Days")
            .map(|d| format!("{d} day{}", if d == "1" { "" } else { "s" }))
            .or_else(|| {
                text("Years").map(|y| format!("{y} year{}", if y == "1" { "" } else { "s" }))
            }),
    }
}

/// The fuzz target for the XML responses (`crate::fuzzing`): a body read as each kind of
/// response the store reads, the way the store reads it.
pub(crate) fn fuzz_response(body: &[u8]) {
    let _ = error_fields(body);
    let Ok(root) = xml::parse(body) else { return };
    let _ = object_lock_of(&root);
    // A ListObjectsV2 page, then a ListMultipartUploads page, each followed as a listing.
    let mut pages = list::Pages::with_max("fuzz".into(), 3);
    for c in root.children("Contents") {
        let _ = (c.text_of("Key"), c.text_of("Size").parse::<u64>());
    }
    let _ = pages.next(
        root.text_of("IsTruncated") == "true",
        root.text_of("NextContinuationToken"),
    );
    for u in root.children("Upload") {
        let _ = (
            u.text_of("Key"),
            u.text_of("UploadId"),
            u.text_of("Initiated"),
        );
    }
    let _ = pages.next(
        root.text_of("IsTruncated") == "true",
        root.text_of("NextKeyMarker"),
    );
    // InitiateMultipartUpload and CompleteMultipartUpload.
    let _ = (root.text_of("UploadId"), root.name == "Error");
}

impl ReadStore for S3Store {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn open(&self, key: &str) -> Result<Object> {
        let full = self.inner.full_key(key)?;
        let d = download::Download::open(self.inner.clone(), full)?;
        Ok(Object {
            size: d.total(),
            reader: Box::new(d),
        })
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let full = self.inner.full_key(key)?;
        match self.inner.call(&Req::new(http::Method::HEAD, Some(&full))) {
            Ok(resp) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: content_length(&resp).unwrap_or(0),
            })),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn retention(&self, key: &str) -> Result<Option<crate::storage::lock::Retention>> {
        if self.inner.opts.object_lock.is_none() {
            return Ok(None);
        }
        self.inner.retention(&self.inner.full_key(key)?, None)
    }

    fn any(&self, prefix: &str) -> Result<Option<ObjectInfo>> {
        let req = Req::new(http::Method::GET, None)
            .query("list-type", "2")
            .query("prefix", &self.inner.full_prefix(prefix))
            .query("max-keys", "1");
        let root = self.inner.call_xml(&req)?;
        Ok(root.children("Contents").next().map(|c| ObjectInfo {
            key: self.inner.relative_key(c.text_of("Key")).to_string(),
            size: c.text_of("Size").parse().unwrap_or(0),
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full_prefix = self.inner.full_prefix(prefix);
        let mut pages = list::Pages::new(format!(
            "objects under {prefix:?} in {}",
            self.inner.location()
        ));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = Req::new(http::Method::GET, None)
                .query("list-type", "2")
                .query("prefix", &full_prefix);
            if let Some(t) = &token {
                req = req.query("continuation-token", t);
            }
            let root = self.inner.call_xml(&req)?;
            for c in root.children("Contents") {
                let key = self.inner.relative_key(c.text_of("Key")).to_string();
                out.push(ObjectInfo {
                    key,
                    size: c.text_of("Size").parse().unwrap_or(0),
                });
            }
            token = pages.next(
                root.text_of("IsTruncated") == "true",
                root.text_of("NextContinuationToken"),
            )?;
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

impl S3Store {
    /// Whether the object under `key` holds exactly `data` (its SHA-256), reading at most one
    /// byte more than `data` holds.
    fn holds(&self, key: &str, data: &[u8]) -> Result<bool> {
        use sha2::Digest;
        let mut r = match self.get_limited(key, data.len() as u64) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    crate::ErrorKind::NotFound | crate::ErrorKind::Integrity
                ) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(e) => {
                    let e = Error::from_io(e, &format!("cannot read {key}"));
                    if e.kind() == crate::ErrorKind::Integrity {
                        return Ok(false);
                    }
                    return Err(e);
                }
            }
        }
        Ok(h.finalize() == sha2::Sha256::digest(data))
    }
}

impl WriteStore for S3Store {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let full = self.inner.full_key(key)?;
        self.inner
            .call(
                &Req::new(http::Method::PUT, Some(&full))
                    .body(data)
                    .locked(&self.inner),
            )
            .map(|_| ())
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        let full = self.inner.full_key(key)?;
        let req = Req::new(http::Method::PUT, Some(&full))
            .body(data)
            .header("if-none-match", "*".into())
            .locked(&self.inner);
        let mut tries = 0;
        match self.inner.call_counting(&req, &mut tries) {
            Ok(_) => Ok(true),
            Err(e)
                if e.message().contains("PreconditionFailed")
                    || e.message().contains("ConditionalRequestConflict") =>
            {
                // After a failed try, the object may be that try's own: its reply was lost.
                // Another writer's object never has our bytes (sealed objects carry a random salt).
                if tries > 1 && self.holds(key, data)? {
                    return Ok(true);
                }
                Ok(false)
            }
            // A store without conditional writes: the best it can do is look first.
            Err(e) if e.message().contains("NotImplemented") => {
                if self.head(key)?.is_some() {
                    return Ok(false);
                }
                self.put(key, data).map(|_| true)
            }
            Err(e) => Err(e),
        }
    }

    fn upload(&self, key: &str, size_hint: Option<u64>) -> Result<Box<dyn Upload>> {
        let full = self.inner.full_key(key)?;
        Ok(Box::new(upload::S3Upload::new(
            self.inner.clone(),
            full,
            size_hint,
        )?))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let full = self.inner.full_key(key)?;
        if self.inner.opts.object_lock.is_some() {
            return self.inner.delete_versions(&full);
        }
        match self
            .inner
            .call(&Req::new(http::Method::DELETE, Some(&full)))
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn object_lock(&self) -> Result<Option<crate::storage::ObjectLock>> {
        let req = Req::new(http::Method::GET, None).query("object-lock", "");
        match self.inner.call_xml(&req) {
            Ok(root) => Ok(Some(object_lock_of(&root))),
            // No configuration: the bucket has no Object Lock.
            Err(e)
                if e.message().contains("ObjectLockConfigurationNotFound")
                    || e.kind() == crate::ErrorKind::NotFound =>
            {
                Ok(Some(crate::storage::ObjectLock {
                    enabled: false,
                    mode: None,
                    retention: None,
                }))
            }
            Err(e) => Err(e),
        }
    }

    fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<IncompleteUpload>> {
        let full_prefix = self.inner.full_prefix(prefix);
        let mut pages = list::Pages::new(format!(
            "unfinished uploads under {prefix:?} in {}",
            self.inner.location()
        ));
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut req = Req::new(http::Method::GET, None)
                .query("uploads", "")
                .query("prefix", &full_prefix);
            if let Some((k, u)) = &markers {
                req = req.query("key-marker", k).query("upload-id-marker", u);
            }
            let root = self.inner.call_xml(&req)?;
            for u in root.children("Upload") {
                out.push(IncompleteUpload {
                    key: self.inner.relative_key(u.text_of("Key")).to_string(),
                    id: u.text_of("UploadId").to_string(),
                    started: Some(u.text_of("Initiated").to_string()).filter(|s| !s.is_empty()),
                });
            }
            let (k, u) = (
                root.text_of("NextKeyMarker"),
                root.text_of("NextUploadIdMarker"),
            );
            // The key marker is the one a next page needs; the pair is what must not repeat.
            let token = if k.is_empty() {
                String::new()
            } else {
                format!("{k}\n{u}")
            };
            if pages
                .next(root.text_of("IsTruncated") == "true", &token)?
                .is_none()
            {
                break;
            }
            markers = Some((k.to_string(), u.to_string()));
        }
        Ok(out)
    }

    fn abort_incomplete(&self, upload: &IncompleteUpload) -> Result<()> {
        let full = self.inner.full_key(&upload.key)?;
        abort_multipart(&self.inner, &full, &upload.id)
    }

    fn clean_abandoned(&self) -> Result<usize> {
        let Some(path) = &self.inner.opts.abandoned_log else {
            return Ok(0);
        };
        let Ok(mut file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        else {
            return Ok(0);
        };
        // Held while we read, abort and rewrite, so a concurrent backup's line is not lost.
        lock_exclusive(&file);
        let mut text = String::new();
        use std::io::{Read, Seek, Write};
        if file.read_to_string(&mut text).is_err() {
            return Ok(0);
        }
        let mut keep = Vec::new();
        let mut cleaned = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            if field("host") != self.inner.loc.host || field("bucket") != self.inner.loc.bucket {
                keep.push(line.to_string());
                continue;
            }
            match abort_multipart(&self.inner, &field("key"), &field("upload_id")) {
                Ok(()) => cleaned += 1,
                Err(_) => keep.push(line.to_string()),
            }
        }
        let mut rest = keep.join("\n");
        if !rest.is_empty() {
            rest.push('\n');
        }
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(rest.as_bytes()))
            .map_err(|e| Error::io_at("cannot write", path, &e))?;
        Ok(cleaned)
    }
}

/// Takes an advisory exclusive lock on a file; it is released when the file is closed.
fn lock_exclusive(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we hold open.
    unsafe {
        libc::flock(f.as_raw_fd(), libc::LOCK_EX);
    }
}

fn content_length(resp: &http::Response<ureq::Body>) -> Option<u64> {
    resp.headers()
        .get("content-length")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn abort_multipart(inner: &Inner, full_key: &str, upload_id: &str) -> Result<()> {
    match inner.call(&Req::new(http::Method::DELETE, Some(full_key)).query("uploadId", upload_id)) {
        Ok(_) => Ok(()),
        // Already gone: nothing left to clean.
        Err(e)
            if e.message().contains("NoSuchUpload") || e.kind() == crate::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
