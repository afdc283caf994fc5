//! One conformance suite, run against every storage driver (local folder, SeaweedFS over S3):
//! the contract the rest of OffsiteDB relies on.

use std::io::{Read, Write};
use std::time::Duration;

use offsitedb::ErrorKind;
use offsitedb::storage::local::LocalStore;
use offsitedb::storage::s3::{S3Options, S3Store};
use offsitedb::storage::{Location, ReadStore, WriteStore};

use crate::common::{SECRET_KEY, SeaweedFs, credentials};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn read_all(store: &dyn WriteStore, key: &str) -> Vec<u8> {
    let mut v = Vec::new();
    store.get(key).unwrap().read_to_end(&mut v).unwrap();
    v
}

fn keys(store: &dyn WriteStore, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// The contract. `big` must span several parts for drivers that use them.
fn conformance(store: &dyn WriteStore, big: usize) {
    // Empty store.
    assert!(keys(store, "").is_empty());
    assert_eq!(
        store.get("missing").err().unwrap().kind(),
        ErrorKind::NotFound
    );
    assert!(store.head("missing").unwrap().is_none());

    // Small objects, nested keys, listing by prefix, sorted.
    store.put("b/2", b"two").unwrap();
    store.put("a/1", b"one").unwrap();
    store.put("a/sub/3", b"").unwrap();
    store.put("ab", b"x").unwrap();
    store.put("a/with space+plus=eq", b"odd").unwrap();
    assert_eq!(
        keys(store, ""),
        ["a/1", "a/sub/3", "a/with space+plus=eq", "ab", "b/2"]
    );
    assert_eq!(
        keys(store, "a/"),
        ["a/1", "a/sub/3", "a/with space+plus=eq"]
    );
    assert_eq!(
        keys(store, "a"),
        ["a/1", "a/sub/3", "a/with space+plus=eq", "ab"]
    );
    assert_eq!(read_all(store, "a/1"), b"one");
    assert_eq!(read_all(store, "a/sub/3"), b"");
    assert_eq!(read_all(store, "a/with space+plus=eq"), b"odd");
    assert_eq!(store.head("b/2").unwrap().unwrap().size, 3);
    let sizes: Vec<u64> = store.list("b/").unwrap().iter().map(|o| o.size).collect();
    assert_eq!(sizes, [3]);

    // A put replaces (only repository-level code decides never to overwrite).
    store.put("b/2", b"deux").unwrap();
    assert_eq!(read_all(store, "b/2"), b"deux");

    // Create-if-absent: the second writer loses and the first one's bytes stay.
    assert!(store.put_new("once/marker", b"first").unwrap());
    assert!(!store.put_new("once/marker", b"second").unwrap());
    assert_eq!(read_all(store, "once/marker"), b"first");
    store.delete("once/marker").unwrap();

    // Streaming upload, written in odd pieces; invisible until finished.
    let data = pattern(big, 7);
    let mut up = store.upload("big/object", Some(big as u64)).unwrap();
    for piece in data.chunks(777_777) {
        up.write_all(piece).unwrap();
    }
    assert!(
        store.head("big/object").unwrap().is_none(),
        "visible before finish"
    );
    assert_eq!(up.finish().unwrap(), big as u64);
    assert_eq!(read_all(store, "big/object"), data);
    assert_eq!(store.head("big/object").unwrap().unwrap().size, big as u64);

    // A small streaming upload (single request).
    let mut up = store.upload("small/object", None).unwrap();
    up.write_all(b"tiny").unwrap();
    assert_eq!(up.finish().unwrap(), 4);
    assert_eq!(read_all(store, "small/object"), b"tiny");

    // Abort and drop leave nothing: no object, no leftover upload.
    let mut up = store.upload("aborted/object", None).unwrap();
    up.write_all(&data).unwrap();
    up.abort().unwrap();
    let mut up = store.upload("dropped/object", None).unwrap();
    up.write_all(&data).unwrap();
    drop(up);
    for k in ["aborted/object", "dropped/object"] {
        assert!(store.head(k).unwrap().is_none(), "{k} visible");
    }
    assert!(
        store.incomplete_uploads("").unwrap().is_empty(),
        "leftover uploads"
    );

    // Delete is idempotent.
    store.delete("a/1").unwrap();
    store.delete("a/1").unwrap();
    assert!(store.head("a/1").unwrap().is_none());
    assert_eq!(keys(store, "a/"), ["a/sub/3", "a/with space+plus=eq"]);

    // Keys we never write are refused.
    for bad in ["", "/abs", "a/../b", "a//b"] {
        assert!(store.put(bad, b"x").is_err(), "{bad:?} accepted");
    }
}

#[test]
fn local_folder_driver() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("repo"));
    conformance(&store, 3 << 20);
    // Nothing but the objects themselves is left in the folder.
    let mut found = Vec::new();
    for e in walk(&dir.path().join("repo")) {
        found.push(e);
    }
    assert!(found.iter().all(|p| !p.contains(".partial-")), "{found:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[test]
fn s3_driver_on_seaweedfs() {
    let weed = SeaweedFs::start();
    let opts = S3Options {
        part_size: Some(5 << 20),
        concurrency: 2,
        ..Default::default()
    };
    let store = weed.store_with("conformance", opts, SECRET_KEY);
    // 12 MiB in 5 MiB parts: two full parts and a short last one.
    conformance(&store, 12 << 20);
    // The prefix confines the store: a store on another prefix sees none of it.
    assert!(weed.store("elsewhere").list("").unwrap().is_empty());
    assert!(!weed.store("").list("conformance/").unwrap().is_empty());
}

#[test]
fn s3_errors_are_classified() {
    let weed = SeaweedFs::start();
    let Location::S3(loc) = Location::parse(&weed.repo_url("x"), None).unwrap() else {
        unreachable!()
    };
    let mut opts = S3Options::default();
    opts.retry.base_delay = Duration::from_millis(10);

    // Wrong secret: a storage error, not retried, naming the cause.
    let bad = weed.store_with("x", opts.clone(), "wrong-secret");
    let t = std::time::Instant::now();
    let e = bad.list("").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Storage);
    assert!(!e.is_transient());
    assert!(e.message().contains("rejected the credentials"), "{e:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "auth errors must not be retried"
    );

    // Missing bucket.
    let mut nob = loc.clone();
    nob.bucket = "no-such-bucket-here".into();
    let e = S3Store::with_options(nob, credentials(SECRET_KEY), opts.clone())
        .unwrap()
        .list("")
        .unwrap_err();
    assert!(e.message().contains("does not exist"), "{e:?}");

    // Nothing listening: transient, retried, then a clear message.
    let mut down = loc;
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    down.host = format!("127.0.0.1:{free}");
    let e = S3Store::with_options(down, credentials(SECRET_KEY), opts)
        .unwrap()
        .list("")
        .unwrap_err();
    assert!(e.is_transient());
    assert!(
        e.message().contains("cannot reach the storage service"),
        "{e:?}"
    );
}

/// Through a proxy that injects faults: transient failures (503, a reset in the middle of a part,
/// a cut download) are retried and the bytes come out identical; an authentication failure is
/// one request, never retried; and no request carries the optional checksum headers that B2, R2
/// and older MinIO reject.
#[test]
fn s3_retries_transient_failures_and_only_those() {
    use crate::proxy::{Fault, Proxy};
    let weed = SeaweedFs::start();
    let proxy = Proxy::start(weed.port);
    let url = format!(
        "s3://{}/faults?endpoint={}&region=us-east-1",
        crate::common::BUCKET,
        proxy.endpoint()
    );
    let Location::S3(loc) = Location::parse(&url, None).unwrap() else {
        unreachable!()
    };
    let mut opts = S3Options {
        part_size: Some(5 << 20),
        concurrency: 2,
        ..Default::default()
    };
    opts.retry.base_delay = Duration::from_millis(50);
    let store = S3Store::with_options(loc.clone(), credentials(SECRET_KEY), opts.clone()).unwrap();

    // A 17 MiB upload in 4 parts; part 2 is refused once, part 3 cut off once.
    proxy.inject("PUT", "partNumber=2&", Fault::ServiceUnavailable, 1);
    proxy.inject("PUT", "partNumber=3&", Fault::Reset, 1);
    let data = pattern(17 << 20, 3);
    let mut up = store.upload("big", None).unwrap();
    up.write_all(&data).unwrap();
    assert_eq!(up.finish().unwrap(), data.len() as u64);
    let parts = |n: u32| {
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "PUT" && s.target.contains(&format!("partNumber={n}&")))
            .count()
    };
    assert_eq!(
        (parts(1), parts(2), parts(3), parts(4)),
        (1, 2, 2, 1),
        "each failed part is sent again, alone"
    );

    // A download cut after 3 MiB resumes where it stopped.
    proxy.inject("GET", "/big", Fault::CutResponseAfter(3 << 20), 1);
    assert_eq!(read_all(&store, "big"), data);
    let ranged: Vec<String> = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET")
        .flat_map(|s| {
            s.headers
                .iter()
                .filter(|(k, _)| k == "range")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(ranged.len(), 1, "{ranged:?}");
    assert!(
        ranged[0].starts_with("bytes=") && ranged[0] != "bytes=0-",
        "{ranged:?}"
    );

    // A service that keeps failing: every attempt, then a transient error.
    let before = proxy.seen().len();
    proxy.inject("GET", "list-type", Fault::ServiceUnavailable, 100);
    let e = store.list("").unwrap_err();
    assert!(
        e.is_transient() && e.message().contains("SlowDown"),
        "{e:?}"
    );
    assert_eq!(proxy.seen().len() - before, opts.retry.attempts as usize);

    // Wrong credentials: exactly one request.
    let bad = S3Store::with_options(loc, credentials("wrong-secret"), opts).unwrap();
    let before = proxy.seen().len();
    let e = bad.head("big").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Storage, "{e:?}");
    assert_eq!(
        proxy.seen().len() - before,
        1,
        "an auth failure was retried"
    );

    for s in proxy.seen() {
        for (k, v) in &s.headers {
            assert!(
                !k.starts_with("x-amz-checksum")
                    && !k.starts_with("x-amz-sdk-checksum")
                    && k != "x-amz-trailer",
                "optional checksum header {k} on {} {}",
                s.method,
                s.target
            );
            assert!(
                !(k == "content-encoding" && v.contains("aws-chunked")),
                "aws-chunked body on {}",
                s.target
            );
        }
    }
}

/// One signed request straight to SeaweedFS (for what OffsiteDB itself never sends: creating a
/// bucket, a wrong checksum). Returns the status and the body.
fn raw_s3(
    port: u16,
    method: &str,
    path: &str,
    query: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use offsitedb::storage::s3::sigv4;
    let host = format!("127.0.0.1:{port}");
    let hash = sigv4::sha256_hex(body);
    let date = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut headers: Vec<(&str, &str)> = vec![
        ("host", &host),
        ("x-amz-content-sha256", &hash),
        ("x-amz-date", &date),
    ];
    headers.extend_from_slice(extra);
    let auth = sigv4::Signer {
        access_key_id: crate::common::ACCESS_KEY,
        secret_access_key: SECRET_KEY,
        region: "us-east-1",
    }
    .authorization(method, path, query, &headers, &hash, &date);
    let url = if query.is_empty() {
        format!("http://{host}{path}")
    } else {
        format!("http://{host}{path}?{query}")
    };
    let mut b = ureq::http::Request::builder().method(method).uri(&url);
    for (k, v) in &headers {
        b = b.header(*k, *v);
    }
    let req = b.header("authorization", auth).body(body.to_vec()).unwrap();
    let agent = ureq::config::Config::builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut resp = agent.run(req).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// A bucket with Object Lock, created as a person would (OffsiteDB never creates buckets).
fn object_lock_bucket(weed: &SeaweedFs, name: &str) {
    let (status, body) = raw_s3(
        weed.port,
        "PUT",
        &format!("/{name}"),
        "",
        &[("x-amz-bucket-object-lock-enabled", "true")],
        b"",
    );
    assert_eq!(status, 200, "{body}");
}

fn proxied_store(proxy: &crate::proxy::Proxy, bucket: &str, prefix: &str) -> S3Store {
    let url = format!(
        "s3://{bucket}/{prefix}?endpoint={}&region=us-east-1",
        proxy.endpoint()
    );
    let Location::S3(loc) = Location::parse(&url, None).unwrap() else {
        unreachable!()
    };
    let mut opts = S3Options {
        part_size: Some(5 << 20),
        concurrency: 2,
        ..Default::default()
    };
    opts.retry.base_delay = Duration::from_millis(20);
    S3Store::with_options(loc, credentials(SECRET_KEY), opts).unwrap()
}

/// S3 refuses uploads into an Object Lock bucket without Content-MD5 (or an x-amz checksum):
/// every PUT, part or whole, carries it, and SeaweedFS checks it (a wrong one is refused), so
/// the uploads' success proves the digests right. A backup through the CLI does the same.
#[test]
fn s3_uploads_carry_content_md5_into_an_object_lock_bucket() {
    use crate::proxy::Proxy;
    let weed = SeaweedFs::start();
    object_lock_bucket(&weed, "locked");
    let proxy = Proxy::start(weed.port);
    let store = proxied_store(&proxy, "locked", "lib");
    assert!(store.object_lock().unwrap().unwrap().enabled);

    // The server checks the header: a wrong digest is refused.
    let (status, body) = raw_s3(
        weed.port,
        "PUT",
        "/locked/wrong-md5",
        "",
        &[("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")],
        b"hello",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("BadDigest"), "{body}");

    store.put("small", b"one").unwrap();
    assert!(store.put_new("marker", b"two").unwrap());
    let data = pattern(12 << 20, 5);
    let mut up = store.upload("big", Some(data.len() as u64)).unwrap();
    up.write_all(&data).unwrap();
    assert_eq!(up.finish().unwrap(), data.len() as u64);
    assert_eq!(read_all(&store, "big"), data);

    // A folder backup through the CLI into the same bucket, a multipart data object included.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("files");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("random.bin"), pattern(11 << 20, 9)).unwrap();
    std::fs::write(src.join("note.txt"), "hello\n").unwrap();
    crate::common::keygen(dir.path(), "master.key");
    std::fs::write(
        dir.path().join("offsitedb.toml"),
        format!(
            "[repository]\nurl = \"s3://locked/cli?endpoint={}&region=us-east-1\"\nkey_file = \"master.key\"\n\n\
             [[source]]\nname = \"files\"\nkind = \"directory\"\npath = \"files\"\ncompression = \"zstd\"\n",
            proxy.endpoint()
        ),
    )
    .unwrap();
    let cli = crate::common::Cli::new().s3().cwd(dir.path());
    cli.ok(&["backup", "--name", "files"]);

    let puts: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT" && s.target.starts_with("/locked/"))
        .collect();
    let parts = puts
        .iter()
        .filter(|s| s.target.contains("partNumber="))
        .count();
    assert!(parts >= 4, "{parts} part uploads");
    assert!(
        puts.iter()
            .any(|s| s.target.starts_with("/locked/cli/") && s.target.contains("partNumber=")),
        "the CLI backup used no multipart upload"
    );
    for s in &puts {
        assert!(
            s.headers
                .iter()
                .any(|(k, v)| k == "content-md5" && v.len() == 24),
            "no Content-MD5 on PUT {}",
            s.target
        );
    }
}

/// A conditional PUT whose reply is lost after the server created the object: the retry gets
/// 412, finds its own bytes there and reports success. Another writer's object stays a
/// conflict, whether the 412 comes at once or after a retry.
#[test]
fn s3_put_new_recognises_its_own_object_after_a_lost_reply() {
    use crate::proxy::{Fault, Proxy};
    let weed = SeaweedFs::start();
    let proxy = Proxy::start(weed.port);
    let store = proxied_store(&proxy, crate::common::BUCKET, "lost");
    let puts = |needle: &str| {
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "PUT" && s.target.ends_with(needle))
            .count()
    };

    proxy.inject("PUT", "/lost/ours", Fault::DropResponse, 1);
    assert!(store.put_new("ours", b"first bytes").unwrap());
    assert_eq!(puts("/lost/ours"), 2, "the lost reply was not retried");
    assert_eq!(read_all(&store, "ours"), b"first bytes");

    // Someone else's object, different bytes: refused at once, and after a retry too.
    assert!(!store.put_new("ours", b"other bytes").unwrap());
    proxy.inject("PUT", "/lost/ours", Fault::Reset, 1);
    assert!(!store.put_new("ours", b"other bytes").unwrap());
    // The same bytes on a first try are another writer's object as well.
    assert!(!store.put_new("ours", b"first bytes").unwrap());
    assert_eq!(read_all(&store, "ours"), b"first bytes");
}

/// A store that repeats a continuation token would keep a listing going forever: the listing
/// stops with an error instead (the page cap is tested as a pure function in the library).
#[test]
fn s3_listing_stops_on_a_repeated_continuation_token() {
    use crate::proxy::{Fault, Proxy};
    let weed = SeaweedFs::start();
    let proxy = Proxy::start(weed.port);
    let store = proxied_store(&proxy, crate::common::BUCKET, "paged");
    for k in ["a", "b", "c"] {
        store.put(k, b"x").unwrap();
    }
    // Every page says "more, from paged/a": the same token again and again.
    proxy.inject("GET", "list-type=2", Fault::TruncatedListing("paged/a"), 50);
    let e = store.list("").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Storage, "{e:?}");
    assert!(
        e.message().contains("repeated a continuation token") && e.message().contains("page 2"),
        "{e:?}"
    );
    let listings = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.target.contains("list-type=2"))
        .count();
    assert_eq!(listings, 2);
}
