//! Object Lock (`[repository] object_lock`) on a server that enforces it (SeaweedFS): every
//! uploaded object carries the retention; the server refuses a versioned delete of a locked
//! object; prune skips what is still locked, says until when, carries on with the rest, and
//! deletes it (every version: the storage is freed) once the lock ends; `check` says when the
//! bucket has no Object Lock and when the lock is shorter than what a retention keeps.
//!
//! A lock lasts at least a day; a test cannot wait that long. SeaweedFS lets a GOVERNANCE
//! retention be shortened by a request carrying `x-amz-bypass-governance-retention` (as S3
//! does, for keys allowed to bypass), so the tests end a lock that way: to a date a few seconds
//! ahead (the server refuses a date in the past), then wait for the server to report it passed.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use offsitedb::storage::s3::{S3Options, S3Store, sigv4, xml};
use offsitedb::storage::{Location, ReadStore, WriteStore};
use serde_json::Value;

use crate::common::{
    ACCESS_KEY, CheckItem, Cli, SECRET_KEY, SeaweedFs, check_item, credentials, json, keygen,
};

const LOCKED: &str = "locked";

/// One signed request, as a person (or a thief) would send it with the same keys.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn raw(
    weed: &SeaweedFs,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    extra: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    let host = format!("127.0.0.1:{}", weed.port);
    let path = sigv4::uri_encode(path, true);
    let query = sigv4::canonical_query(
        &query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
    );
    let hash = sigv4::sha256_hex(body);
    let date = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let md5 = {
        use base64::Engine;
        use md5::Digest;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
    };
    let mut headers: Vec<(&str, &str)> = vec![
        ("host", &host),
        ("x-amz-content-sha256", &hash),
        ("x-amz-date", &date),
    ];
    if method == "PUT" {
        headers.push(("content-md5", &md5));
    }
    headers.extend_from_slice(extra);
    let auth = sigv4::Signer {
        access_key_id: ACCESS_KEY,
        secret_access_key: SECRET_KEY,
        region: "us-east-1",
    }
    .authorization(method, &path, &query, &headers, &hash, &date);
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
    Raw {
        status: resp.status().as_u16(),
        headers: resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// A bucket created with Object Lock, as a person would (OffsiteDB never creates buckets).
fn lock_bucket(weed: &SeaweedFs) {
    let r = raw(
        weed,
        "PUT",
        &format!("/{LOCKED}"),
        &[],
        &[("x-amz-bucket-object-lock-enabled", "true")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A library handle on `bucket`/`prefix` (no lock: it looks, it does not upload).
fn store(weed: &SeaweedFs, bucket: &str, prefix: &str, opts: S3Options) -> S3Store {
    let url = format!(
        "s3://{bucket}/{prefix}?endpoint={}&region=us-east-1",
        weed.endpoint()
    );
    let Location::S3(loc) = Location::parse(&url, None).unwrap() else {
        unreachable!()
    };
    S3Store::with_options(loc, credentials(SECRET_KEY), opts).unwrap()
}

/// A folder source `files` (one file over a part, so the data goes up in parts) and an
/// `offsitedb.toml` naming `bucket`/`repo` with `extra` after the `[repository]` lines.
fn setup(dir: &Path, weed: &SeaweedFs, bucket: &str, extra: &str) -> Cli {
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut big = vec![0u8; 9 << 20];
    getrandom::fill(&mut big).unwrap();
    std::fs::write(files.join("random.bin"), big).unwrap();
    keygen(dir, "master.key");
    write_config(dir, weed, bucket, extra, "");
    Cli::new().s3().cwd(dir)
}

fn write_config(dir: &Path, weed: &SeaweedFs, bucket: &str, extra: &str, source: &str) {
    std::fs::write(
        dir.join("offsitedb.toml"),
        format!(
            "[repository]\nurl = \"s3://{bucket}/repo?endpoint={}&region=us-east-1\"\nkey_file = \"master.key\"\n{extra}\n\n\
             [[source]]\nname = \"files\"\nkind = \"directory\"\npath = \"files\"\n{source}\n",
            weed.endpoint()
        ),
    )
    .unwrap();
}

fn backup(cli: &Cli) -> String {
    let r = cli.ok(&["backup", "--name", "files", "--json"]);
    let v: Value = json(&r);
    v["id"].as_str().unwrap().to_string()
}

/// The keys (relative to the repository) of one snapshot.
fn objects(s: &S3Store, id: &str) -> Vec<String> {
    let keys: Vec<String> = s
        .list(&format!("snapshots/files/{id}/"))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(!keys.is_empty(), "snapshot {id} has no objects");
    keys
}

/// Every version and delete marker under `prefix` of the repository: (key, version id, marker).
fn versions(weed: &SeaweedFs, prefix: &str) -> Vec<(String, String, bool)> {
    let full = format!("repo/{prefix}");
    let r = raw(
        weed,
        "GET",
        &format!("/{LOCKED}"),
        &[("versions", ""), ("prefix", &full)],
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let root = xml::parse(r.body.as_bytes()).unwrap();
    assert_ne!(root.text_of("IsTruncated"), "true");
    let mut out = Vec::new();
    for (name, marker) in [("Version", false), ("DeleteMarker", true)] {
        for v in root.children(name) {
            out.push((
                v.text_of("Key").to_string(),
                v.text_of("VersionId").to_string(),
                marker,
            ));
        }
    }
    out
}

fn path(key: &str) -> String {
    format!("/{LOCKED}/repo/{key}")
}

/// Sets the GOVERNANCE retention of `key` (its current version) to `until`, bypassing the
/// retention it has: the way a test ends a lock early.
fn retain_until(weed: &SeaweedFs, key: &str, until: Timestamp) {
    let body = format!(
        "<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
        until.strftime("%Y-%m-%dT%H:%M:%SZ")
    );
    let r = raw(
        weed,
        "PUT",
        &path(key),
        &[("retention", "")],
        &[("x-amz-bypass-governance-retention", "true")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "shorten the lock of {key}: {}", r.body);
}

/// A lock that ends in a few seconds (the server refuses a date in the past).
fn soon() -> Timestamp {
    Timestamp::now() + Duration::from_secs(3)
}

/// Waits until the server's retention of every key has passed.
fn wait_unlocked(s: &S3Store, keys: &[String]) {
    for k in keys {
        let until = s.retention(k).unwrap().expect("a retention").until;
        while Timestamp::now() <= until {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn locking() -> S3Options {
    S3Options {
        object_lock: Some(offsitedb::storage::lock::LockSetting::parse("governance", 1).unwrap()),
        ..Default::default()
    }
}

#[test]
fn every_upload_is_locked_and_the_server_refuses_a_versioned_delete() {
    let weed = SeaweedFs::start();
    lock_bucket(&weed);
    let dir = tempfile::tempdir().unwrap();
    let cli = setup(
        dir.path(),
        &weed,
        LOCKED,
        "object_lock = { mode = \"governance\", days = 1 }",
    );
    let before = Timestamp::now();
    let id = backup(&cli);
    let after = Timestamp::now();

    // Every object of the repository (the repository file, the snapshot's data in parts, its
    // manifest) carries the lock, until a day after its upload.
    let plain = store(&weed, LOCKED, "repo", S3Options::default());
    let all = plain.list("").unwrap();
    assert!(all.len() >= 3, "{all:?}");
    assert!(
        all.iter()
            .any(|o| o.key.ends_with("/data") && o.size > 8 << 20),
        "no multipart data object: {all:?}"
    );
    let day = Duration::from_secs(86_400);
    for o in &all {
        let h = raw(&weed, "HEAD", &path(&o.key), &[], &[], b"");
        assert_eq!(h.status, 200, "{}", o.key);
        assert_eq!(
            h.header("x-amz-object-lock-mode"),
            Some("GOVERNANCE"),
            "{}",
            o.key
        );
        let until: Timestamp = h
            .header("x-amz-object-lock-retain-until-date")
            .unwrap_or_else(|| panic!("{} has no retain-until date", o.key))
            .parse()
            .unwrap();
        // The header is to the second.
        assert!(
            until >= before + day - Duration::from_secs(1) && until <= after + day,
            "{}: locked until {until}",
            o.key
        );
    }
    // WAL files and drill records go through put_new: locked too.
    let lib = store(&weed, LOCKED, "repo", locking());
    assert!(lib.put_new("wal/files/probe", b"segment").unwrap());
    let r = lib.retention("wal/files/probe").unwrap().unwrap();
    assert!(!r.estimated && r.until > Timestamp::now() + Duration::from_secs(86_000));

    // Someone holding the keys deletes the data's version: the server refuses, and the bytes
    // are still there.
    let data = format!("snapshots/files/{id}/data");
    let head = raw(&weed, "HEAD", &path(&data), &[], &[], b"");
    let version = head.header("x-amz-version-id").unwrap().to_string();
    let del = raw(
        &weed,
        "DELETE",
        &path(&data),
        &[("versionId", &version)],
        &[],
        b"",
    );
    assert_eq!(del.status, 403, "{}", del.body);
    assert!(del.body.contains("AccessDenied"), "{}", del.body);
    assert_eq!(raw(&weed, "HEAD", &path(&data), &[], &[], b"").status, 200);
    // A governance lock lets no one through without the bypass header, compliance not even
    // with it (checked on a probe object).
    let until = (Timestamp::now() + day)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let put = raw(
        &weed,
        "PUT",
        &path("compliance"),
        &[],
        &[
            ("x-amz-object-lock-mode", "COMPLIANCE"),
            ("x-amz-object-lock-retain-until-date", &until),
        ],
        b"x",
    );
    assert_eq!(put.status, 200, "{}", put.body);
    let v = put.header("x-amz-version-id").unwrap().to_string();
    let bypass = raw(
        &weed,
        "DELETE",
        &path("compliance"),
        &[("versionId", &v)],
        &[("x-amz-bypass-governance-retention", "true")],
        b"",
    );
    assert_eq!(bypass.status, 403, "{}", bypass.body);
    // The library's delete of a locked object (every version) is refused, and says why.
    let e = lib.delete(&data).unwrap_err();
    assert!(
        e.message().contains("under Object Lock until") && e.message().contains("GOVERNANCE"),
        "{e}"
    );
    assert_eq!(raw(&weed, "HEAD", &path(&data), &[], &[], b"").status, 200);
    // A plain DELETE (no version) "succeeds": a delete marker hides the object, and the locked
    // version stays, billed. Listing ignores both.
    let hidden = raw(&weed, "DELETE", &path("wal/files/probe"), &[], &[], b"");
    assert_eq!(hidden.status, 204, "{}", hidden.body);
    assert_eq!(hidden.header("x-amz-delete-marker"), Some("true"));
    let left = versions(&weed, "wal/files/probe");
    assert_eq!(left.iter().filter(|v| !v.2).count(), 1, "{left:?}");
    assert!(plain.list("wal/").unwrap().is_empty());
}

/// Ids `list --json` shows.
fn listed(cli: &Cli) -> Vec<String> {
    let v: Vec<Value> = json(&cli.ok(&["list", "--json"]));
    v.iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn prune(cli: &Cli) -> Value {
    let r = cli.run(&["prune", "--source", "files", "--keep", "last=1", "--json"]);
    assert_eq!(r.code, 0, "prune: {}", r.stderr);
    let v: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    v[0].clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn prune_skips_what_is_locked_carries_on_and_deletes_it_once_the_lock_ends() {
    let weed = SeaweedFs::start();
    lock_bucket(&weed);
    let dir = tempfile::tempdir().unwrap();
    let cli = setup(
        dir.path(),
        &weed,
        LOCKED,
        "object_lock = { mode = \"governance\", days = 1 }",
    );
    // Snapshot ids are to the second: one a second keeps them in order.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(backup(&cli));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let (refused, locked, free, newest) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let plain = store(&weed, LOCKED, "repo", S3Options::default());

    // `free`: its lock ended. `refused`: its objects' locks ended too, but its manifest has an
    // older version still locked (HEAD shows the current one only), so the server refuses the
    // delete prune tries. `locked`: as uploaded, locked for a day.
    let manifest = format!("snapshots/files/{refused}/manifest");
    let bytes = plain.get_bytes(&manifest).unwrap();
    let until = soon().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let again = raw(
        &weed,
        "PUT",
        &path(&manifest),
        &[],
        &[
            ("x-amz-object-lock-mode", "GOVERNANCE"),
            ("x-amz-object-lock-retain-until-date", &until),
        ],
        &bytes,
    );
    assert_eq!(again.status, 200, "{}", again.body);
    let mut ended = Vec::new();
    for id in [refused, free] {
        for k in objects(&plain, id) {
            if k != manifest {
                retain_until(&weed, &k, soon());
            }
            ended.push(k);
        }
    }
    let lib = store(&weed, LOCKED, "repo", locking());
    wait_unlocked(&lib, &ended);
    let locked_until = lib
        .retention(&format!("snapshots/files/{locked}/manifest"))
        .unwrap()
        .unwrap()
        .until;

    let r = prune(&cli);
    assert_eq!(strings(&r["deleted"]), vec![free.clone()], "{r:#}");
    let skipped = strings(&r["skipped"]);
    assert_eq!(skipped.len(), 2, "{skipped:#?}");
    let n = objects(&plain, locked).len();
    assert!(
        skipped.contains(&format!(
            "{locked}: kept until {} by Object Lock: {n} objects of snapshot files/{locked}; a later prune deletes them",
            locked_until.strftime("%Y-%m-%dT%H:%M:%SZ")
        )),
        "{skipped:#?}"
    );
    let why = skipped
        .iter()
        .find(|s| s.starts_with(refused.as_str()))
        .unwrap();
    assert!(
        why.contains(&format!(
            "the store refuses to delete {manifest} under Object Lock until"
        )),
        "{why}"
    );
    assert_eq!(
        listed(&cli),
        vec![refused.clone(), locked.clone(), newest.clone()]
    );
    // The deleted snapshot is gone for good: no version and no delete marker left.
    assert_eq!(versions(&weed, &format!("snapshots/files/{free}/")), vec![]);

    // The lock of `locked` ends: the next prune deletes it, every version.
    let keys = objects(&plain, locked);
    for k in &keys {
        retain_until(&weed, k, soon());
    }
    wait_unlocked(&lib, &keys);
    let r = prune(&cli);
    assert_eq!(strings(&r["deleted"]), vec![locked.clone()], "{r:#}");
    assert_eq!(
        versions(&weed, &format!("snapshots/files/{locked}/")),
        vec![]
    );
    assert_eq!(listed(&cli), vec![refused.clone(), newest.clone()]);
}

#[test]
fn check_says_when_the_bucket_cannot_lock_and_when_the_lock_is_too_short() {
    let weed = SeaweedFs::start();
    let dir = tempfile::tempdir().unwrap();
    // The fixture's bucket has no Object Lock.
    let cli = setup(
        dir.path(),
        &weed,
        crate::common::BUCKET,
        "object_lock = { mode = \"compliance\", days = 30 }",
    );
    let r = cli.run(&["check", "--json"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let items: Vec<CheckItem> = json(&r);
    let lock = check_item(&items, "repository", "lock");
    assert_eq!(lock.status, "fail", "{lock:?}");
    assert!(
        lock.detail
            .contains("object_lock is set under [repository] (compliance mode, 30 days), but the bucket has no Object Lock"),
        "{lock:?}"
    );
    let human = cli.run(&["check"]);
    assert!(
        human
            .stdout
            .contains("turn Object Lock on only when a bucket is created"),
        "{}",
        human.stdout
    );
    // A backup says the same thing's cause.
    cli.fails(&["backup", "--name", "files"], 6, "Object Lock retention");

    // A bucket with Object Lock, a lock of 30 days, a retention of a year: a warning with the
    // numbers; a lock of 1000 days for a week's retention: the other warning.
    lock_bucket(&weed);
    for (days, keep, status, needle) in [
        (
            30,
            "{ daily = 7, weekly = 4, monthly = 12 }",
            "warn",
            "source files: its retention keeps copies for about 365 days (daily 7, weekly 4, monthly 12), but they are locked for 30 days: copies older than 30 days can be deleted by anyone holding the bucket's keys",
        ),
        (
            1000,
            "{ daily = 7 }",
            "warn",
            "prune leaves each copy it drops stored (and billed) until its lock ends, up to 993 days longer",
        ),
        (
            400,
            "{ daily = 7, monthly = 12 }",
            "ok",
            "a lock of 400 days covers every copy",
        ),
    ] {
        write_config(
            dir.path(),
            &weed,
            LOCKED,
            &format!("object_lock = {{ mode = \"governance\", days = {days} }}"),
            &format!("keep = {keep}"),
        );
        let r = cli.run(&["check", "--json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let items: Vec<CheckItem> = json(&r);
        let lock = check_item(&items, "repository", "lock");
        assert_eq!(lock.status, "ok", "{lock:?}");
        assert!(
            lock.detail.contains(&format!(
                "every upload is locked for {days} days in governance mode"
            )),
            "{lock:?}"
        );
        // The probe object check writes is not locked: check deleted it.
        assert_eq!(check_item(&items, "repository", "delete").status, "ok");
        let policy = check_item(&items, "repository", "lock policy");
        assert_eq!(policy.status, status, "{policy:?}");
        assert!(policy.detail.contains(needle), "{policy:?}");
    }
}

#[test]
fn object_lock_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "master.key");
    let cli = Cli::new().cwd(dir.path());
    for (lock, needle) in [
        (
            "{ mode = \"governance\", days = 30 }",
            "object_lock is set under [repository], but the repository is a folder",
        ),
        (
            "{ mode = \"Compliance\", days = 30 }",
            "object_lock mode \"Compliance\" is not one offsitedb knows",
        ),
        (
            "{ mode = \"governance\", days = 0 }",
            "object_lock days = 0 is out of range",
        ),
    ] {
        std::fs::write(
            dir.path().join("offsitedb.toml"),
            format!(
                "[repository]\nurl = \"repo\"\nkey_file = \"master.key\"\nobject_lock = {lock}\n"
            ),
        )
        .unwrap();
        cli.fails(&["list"], 3, needle);
    }
    std::fs::write(
        dir.path().join("offsitedb.toml"),
        "[repository]\nurl = \"repo\"\nobject_lock = { mode = \"governance\", dayz = 3 }\n",
    )
    .unwrap();
    cli.fails(&["list"], 3, "dayz");
}
