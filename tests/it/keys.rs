//! Keys: `key verify` proves an offline copy opens the repository, `key rotate` makes a new
//! current key while older snapshots stay readable, paper copies type back, and `key rewrap`
//! copies a repository into a new location sealed with the current key only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use offsitedb::crypto::MasterKey;
use offsitedb::storage::{ReadStore, WriteStore};

use crate::common::{Cli, Repo, Snapshot, json, keygen, sha256_hex};

const SQL: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);
                   INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;";

fn ids_of(file: &Path) -> Vec<String> {
    MasterKey::load_file(file, &mut |_| {})
        .unwrap()
        .ids()
        .iter()
        .map(|i| i.to_string())
        .collect()
}

/// The key id in the header of a stored object.
fn sealed_by(store: &dyn WriteStore, name: &str) -> String {
    let b = store.get_bytes(name).unwrap();
    assert_eq!(&b[..8], b"OSDBSEAL", "{name}");
    b[10..26].iter().map(|x| format!("{x:02x}")).collect()
}

/// A key file holding only the key lines of `from` for which `keep` says yes.
fn key_file_with(from: &Path, to: &Path, keep: impl Fn(usize) -> bool) -> PathBuf {
    let text = std::fs::read_to_string(from).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, l)| l)
        .collect();
    std::fs::write(to, format!("{}\n", lines.join("\n"))).unwrap();
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(to, private).unwrap();
    to.to_path_buf()
}

#[derive(serde::Deserialize, Debug)]
struct Verified {
    file_key_ids: Vec<String>,
    keys: Vec<VerifiedKey>,
    missing: Vec<String>,
    opens_everything: bool,
}

#[derive(serde::Deserialize, Debug)]
struct VerifiedKey {
    key_id: String,
    objects: u64,
    kinds: std::collections::BTreeMap<String, u64>,
    in_file: bool,
    opened: Option<String>,
}

impl VerifiedKey {
    fn kinds_has(&self, kind: &str) -> bool {
        self.kinds.get(kind).is_some_and(|n| *n > 0)
    }
}

/// Every object of a store with the SHA-256 of its bytes.
fn contents(store: &dyn WriteStore) -> Vec<(String, String)> {
    store
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| {
            let sha = sha256_hex(&store.get_bytes(&o.key).unwrap());
            (o.key, sha)
        })
        .collect()
}

/// A source on SeaweedFS with one snapshot sealed with the first key, then rotated: the new key
/// file `new.key` and a second snapshot sealed with the new key.
struct Rotated {
    f: Repo,
    new_key: PathBuf,
    /// Runs with the new key file.
    cli: Cli,
    old_snap: Snapshot,
    new_snap: Snapshot,
}

fn rotated() -> Rotated {
    let f = Repo::s3("keys").with_source("app", SQL);
    let url = f.src().url("app");
    let old_snap = f.backup(&url, "app");
    let new_key = f.dir.path().join("new.key");
    let r = f
        .cli
        .ok(&["key", "rotate", "-o", new_key.to_str().unwrap()]);
    assert!(r.stdout.contains("key verify --key-file"), "{}", r.stdout);
    let mode = std::fs::metadata(&new_key).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let cli = f
        .cli
        .clone_with("OFFSITEDB_KEY_FILE", new_key.to_str().unwrap());
    f.src()
        .client("app")
        .batch_execute("INSERT INTO t VALUES (100000, 'after the rotation')")
        .unwrap();
    let new_snap = cli.backup(&url, "app");
    Rotated {
        f,
        new_key,
        cli,
        old_snap,
        new_snap,
    }
}

#[test]
fn verify_names_the_keys_a_file_lacks_before_and_after_a_rotation() {
    let f = Repo::s3("verify").with_source("app", SQL);
    let url = f.src().url("app");
    f.backup(&url, "app");
    let old_id = ids_of(&f.key)[0].clone();

    // The right file: everything opens, one key id, one object authenticated.
    let r = f.cli.ok(&[
        "key",
        "verify",
        "--key-file",
        f.key.to_str().unwrap(),
        "--json",
    ]);
    let v: Verified = json(&r);
    assert!(v.opens_everything && v.missing.is_empty(), "{v:?}");
    assert_eq!(v.keys.len(), 1, "{v:?}");
    assert_eq!(v.keys[0].key_id, old_id);
    assert!(v.keys[0].in_file && v.keys[0].opened.is_some(), "{v:?}");
    assert!(
        v.keys[0].objects >= 2,
        "offsitedb.repo and the manifest: {v:?}"
    );

    // A wrong file: exit 4, both key ids named, no key bytes printed.
    let other = keygen(f.dir.path(), "other.key");
    let r = f.cli.fails(
        &["key", "verify", "--key-file", other.to_str().unwrap()],
        4,
        "was created with key id",
    );
    assert!(r.stderr.contains(&old_id), "{}", r.stderr);
    assert!(r.stderr.contains(&ids_of(&other)[0]), "{}", r.stderr);
    assert!(!r.stderr.contains(&f.key_secret()), "{}", r.stderr);

    // Rotate, back up with the new key: the repository now needs both key ids.
    let new_key = f.dir.path().join("new.key");
    f.cli
        .ok(&["key", "rotate", "-o", new_key.to_str().unwrap()]);
    let ids = ids_of(&new_key);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1], old_id, "the older key follows the new one");
    let new_id = ids[0].clone();
    let cli = f
        .cli
        .clone_with("OFFSITEDB_KEY_FILE", new_key.to_str().unwrap());
    cli.backup(&url, "app");
    let r = cli.ok(&[
        "key",
        "verify",
        "--key-file",
        new_key.to_str().unwrap(),
        "--json",
    ]);
    let v: Verified = json(&r);
    let mut needed: Vec<&str> = v.keys.iter().map(|k| k.key_id.as_str()).collect();
    needed.sort();
    let mut both = vec![old_id.as_str(), new_id.as_str()];
    both.sort();
    assert_eq!(needed, both, "{v:?}");
    assert!(
        v.keys.iter().all(|k| k.in_file && k.opened.is_some()),
        "{v:?}"
    );
    assert_eq!(v.file_key_ids, ids);

    // An offline copy of the new key alone opens the repository but not the older snapshot.
    let only_new = key_file_with(&new_key, &f.dir.path().join("only-new.key"), |i| i == 0);
    let r = cli.fails(
        &["key", "verify", "--key-file", only_new.to_str().unwrap()],
        4,
        &format!("lacks key id {old_id}"),
    );
    assert!(r.stdout.contains("MISSING"), "{}", r.stdout);
    let r = cli.run(&[
        "key",
        "verify",
        "--key-file",
        only_new.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let v: Verified = json(&r);
    assert_eq!(v.missing, vec![old_id.clone()]);
    // And the old key file alone lacks the new key.
    f.cli.fails(
        &["key", "verify", "--key-file", f.key.to_str().unwrap()],
        4,
        &format!("lacks key id {new_id}"),
    );
    // A second rotation never overwrites a key file.
    let before = std::fs::read(&new_key).unwrap();
    cli.fails(
        &["key", "rotate", "-o", new_key.to_str().unwrap()],
        4,
        "refusing to overwrite",
    );
    assert_eq!(std::fs::read(&new_key).unwrap(), before);
}

#[test]
fn after_a_rotation_new_backups_use_the_new_key_and_old_ones_restore() {
    let r = rotated();
    let store = r.f.store();
    let ids = ids_of(&r.new_key);
    let (new_id, old_id) = (&ids[0], &ids[1]);
    let data = |s: &Snapshot| format!("snapshots/app/{}/data", s.id);
    assert_eq!(&sealed_by(&*store, &data(&r.old_snap)), old_id);
    assert_eq!(&sealed_by(&*store, &data(&r.new_snap)), new_id);
    assert_eq!(&sealed_by(&*store, &format!("keys/{new_id}")), new_id);

    // list shows both; each restores with the new key file (its older key opens the first).
    let listed: Vec<Snapshot> = json(&r.cli.ok(&["list", "--json"]));
    // (Both may be of the same second: ids of one second order at random.)
    let mut listed: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    listed.sort();
    let mut both = vec![r.old_snap.id.as_str(), r.new_snap.id.as_str()];
    both.sort();
    assert_eq!(listed, both);
    let src = r.f.src();
    for (snap, db, rows) in [
        (&r.old_snap, "old_copy", 5000),
        (&r.new_snap, "new_copy", 5001),
    ] {
        src.create_db(db, "");
        r.cli
            .ok(&["restore", &snap.id, "--to", &src.url(db), "--json"]);
        assert_eq!(src.scalar_i64(db, "SELECT count(*) FROM t"), rows, "{db}");
    }

    // The old key file alone still reads the old snapshot, not the new one.
    let old_cli = &r.f.cli;
    let out = r.f.dir.path().join("old.dump.gz");
    old_cli.ok(&["decrypt", &r.old_snap.id, "-o", out.to_str().unwrap()]);
    let r2 = old_cli.fails(
        &[
            "decrypt",
            &r.new_snap.id,
            "-o",
            out.with_extension("2").to_str().unwrap(),
        ],
        4,
        new_id,
    );
    assert!(r2.stderr.contains(old_id), "{}", r2.stderr);

    // A key file whose current key is neither the repository's nor a recorded rotation
    // cannot back up into it (it would seal what nobody else can open).
    let stranger = keygen(r.f.dir.path(), "stranger.key");
    let ring = r.f.dir.path().join("stranger-ring.key");
    std::fs::write(
        &ring,
        format!(
            "{}{}",
            std::fs::read_to_string(&stranger).unwrap(),
            std::fs::read_to_string(&r.f.key).unwrap()
        ),
    )
    .unwrap();
    r.f.cli
        .clone_with("OFFSITEDB_KEY_FILE", ring.to_str().unwrap())
        .fails(
            &["backup", "--source", &src.url("app"), "--name", "app"],
            4,
            "is not a key of the repository",
        );
}

#[test]
fn a_paper_copy_types_back_and_a_typo_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    let cli = Cli::new().cwd(dir.path());
    let paper = cli
        .ok(&["keygen", "--paper", "-o", key.to_str().unwrap()])
        .stdout;
    let id = ids_of(&key)[0].clone();
    assert!(paper.contains(&id), "{paper}");
    let key_line = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .to_string();
    assert!(
        !paper.contains(&key_line),
        "the paper copy is not the base64 key"
    );

    let import = |text: &str, out: &Path| {
        let mut child = cli
            .command(crate::common::offsitedb_bin())
            .args(["key", "import", "-o", out.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // Typed back the way people type: upper case, dashes, no line numbers.
    let typed: String = paper
        .lines()
        .map(|l| match l.split_once(": ") {
            Some((n, rest)) if n.len() == 1 => {
                format!("{}\n", rest.to_uppercase().replace(' ', "-"))
            }
            _ => format!("{l}\n"),
        })
        .collect();
    let back = dir.path().join("back.key");
    let out = import(&typed, &back);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ids_of(&back), vec![id.clone()]);
    let back_line = std::fs::read_to_string(&back).unwrap();
    assert!(back_line.contains(&key_line), "the same key bytes");

    // One digit wrong on the second key line.
    let lines: Vec<&str> = paper.lines().collect();
    let (at, line2) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.starts_with("2: "))
        .unwrap();
    let c = line2.as_bytes()[3];
    let swapped = if c == b'0' { '1' } else { '0' };
    let mut bad: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    bad[at] = format!("2: {swapped}{}", &line2[4..]);
    let typo = dir.path().join("typo.key");
    let out = import(&bad.join("\n"), &typo);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.starts_with("error: key line 2 has a typo"),
        "{stderr}"
    );
    assert!(!typo.exists(), "nothing written");
}

#[test]
fn rewrap_copies_everything_under_the_new_key_and_leaves_the_old_location_alone() {
    let r = rotated();
    let (f, cli) = (&r.f, &r.cli);
    let ids = ids_of(&r.new_key);
    let (new_id, old_id) = (ids[0].clone(), ids[1].clone());
    let old_store = f.store();

    // A drill record sealed with the new key; a WAL file and a log object sealed with the old.
    let rr = cli.run(&["drill", &r.old_snap.id, "--json"]);
    assert_eq!(rr.code, 0, "{}", rr.stderr);
    let old_key = MasterKey::load_file(&f.key, &mut |_| {}).unwrap();
    let wal_name = offsitedb::wal::name::WalName::parse("000000010000000000000003").unwrap();
    let wal_bytes: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let sealed = offsitedb::wal::object::encode(
        &old_key,
        &wal_name,
        &wal_bytes,
        &offsitedb::wal::object::digest(&wal_bytes),
        offsitedb::wal::object::WalCompression::Zstd(1),
    )
    .unwrap();
    let wal_key = offsitedb::wal::object::key("app", &wal_name);
    old_store.put(&wal_key, &sealed).unwrap();
    old_store
        .put(
            "log/0000000001",
            &offsitedb::crypto::seal_bytes(&old_key, b"entry").unwrap(),
        )
        .unwrap();
    let before = contents(&*old_store);

    // Into a location that is not empty: refused, nothing written.
    cli.fails(&["key", "rewrap", "--to", &f.url], 3, "is not empty");

    let to = f.weed.as_ref().unwrap().repo_url("rewrapped");
    let out = cli.ok(&["key", "rewrap", "--to", &to]);
    assert!(
        out.stdout.contains("point the configuration at the copy"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("delete the old location"),
        "{}",
        out.stdout
    );
    assert_eq!(
        contents(&*old_store),
        before,
        "the old location is unchanged"
    );

    // Every object of the copy is sealed with the new key; names are kept; log/ and keys/
    // are not copied.
    let copy_store = f.weed.as_ref().unwrap().store("rewrapped");
    let all: Vec<String> = copy_store
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    // The copy's own log: one entry per committed manifest, then one vouching for the copy.
    assert!(all.iter().any(|k| k.starts_with("log/app/")), "{all:?}");
    let copied: Vec<String> = all
        .iter()
        .filter(|k| !k.starts_with("log/"))
        .cloned()
        .collect();
    for name in &copied {
        assert_eq!(sealed_by(&copy_store, name), new_id, "{name}");
    }
    let expected: Vec<String> = before
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !k.starts_with("log/") && !k.starts_with("keys/"))
        .collect();
    assert_eq!(copied, expected);

    // A key file holding only the new key: list, verify, restore, drill, wal-fetch on the copy.
    let only_new = key_file_with(&r.new_key, &f.dir.path().join("only-new.key"), |i| i == 0);
    let copy_cli = cli
        .clone_with("OFFSITEDB_REPO", &to)
        .env("OFFSITEDB_KEY_FILE", only_new.to_str().unwrap());
    let listed: Vec<Snapshot> = json(&copy_cli.ok(&["list", "--json"]));
    assert_eq!(listed.len(), 2);
    let old_listed = listed.iter().find(|s| s.id == r.old_snap.id).unwrap();
    assert_eq!(old_listed.status, "sealed", "its drill record came along");
    // verify finds the copy whole, with nothing unlogged.
    let checked = copy_cli.ok(&["verify", "--json"]);
    let checked: serde_json::Value = serde_json::from_str(&checked.stdout).unwrap();
    assert_eq!(checked["errors"], 0, "{checked:#}");
    assert_eq!(checked["warnings"], 0, "{checked:#}");
    let v: Verified = json(&copy_cli.ok(&[
        "key",
        "verify",
        "--key-file",
        only_new.to_str().unwrap(),
        "--all",
        "--json",
    ]));
    assert_eq!(v.keys.len(), 1, "{v:?}");
    assert_eq!(v.keys[0].key_id, new_id);
    assert!(!v.keys.iter().any(|k| k.key_id == old_id));
    let src = f.src();
    src.create_db("from_copy", "");
    copy_cli.ok(&["restore", &r.old_snap.id, "--to", &src.url("from_copy")]);
    assert_eq!(src.scalar_i64("from_copy", "SELECT count(*) FROM t"), 5000);
    let rr = copy_cli.run(&["drill", &r.new_snap.id, "--json"]);
    assert_eq!(rr.code, 0, "{}", rr.stderr);
    let fetch_dir = tempfile::tempdir().unwrap();
    copy_cli.fresh().cwd(fetch_dir.path()).ok(&[
        "wal-fetch",
        "--source",
        "app",
        &wal_name.to_string(),
        "seg",
    ]);
    assert_eq!(
        std::fs::read(fetch_dir.path().join("seg")).unwrap(),
        wal_bytes
    );
    // The old key alone opens nothing there.
    cli.clone_with("OFFSITEDB_REPO", &to)
        .env("OFFSITEDB_KEY_FILE", f.key.to_str().unwrap())
        .fails(&["list"], 4, "was created with key id");
}

#[derive(serde::Deserialize, Debug)]
struct Pushed {
    backup_id: String,
}

#[derive(serde::Deserialize, Debug)]
struct Fetched {
    backup_id: String,
}

#[test]
fn rewrap_carries_base_backups_sealed_with_either_key() {
    let f = Repo::s3("base");
    let src = crate::common::Source::start_with(offsitedb::cluster::ClusterOptions {
        extra_conf: crate::archiving::archiving_conf(),
        ..Default::default()
    });
    for sql in [
        "ALTER SYSTEM SET archive_command = '/bin/true'",
        "SELECT pg_reload_conf()",
    ] {
        src.cluster.execute("postgres", sql).unwrap();
    }
    src.create_db("app", SQL);
    let url = src.url("app");
    let push = |cli: &Cli| -> Pushed {
        json(&cli.ok(&["backup-push", "--source", &url, "--name", "app", "--json"]))
    };
    let old = push(&f.cli);
    let new_key = f.dir.path().join("new.key");
    f.cli
        .ok(&["key", "rotate", "-o", new_key.to_str().unwrap()]);
    let cli = f
        .cli
        .clone_with("OFFSITEDB_KEY_FILE", new_key.to_str().unwrap());
    let new = push(&cli);

    let to = f.weed.as_ref().unwrap().repo_url("base-copy");
    let out = cli.ok(&["key", "rewrap", "--to", &to, "--json"]);
    let report: serde_json::Value = json(&out);
    assert_eq!(report["base_backups"], 2, "{report}");

    // Only the new key: both base backups fetch from the copy (salt and digests as the
    // re-sealed manifests say), and nothing there is sealed with the old key.
    let only_new = key_file_with(&new_key, &f.dir.path().join("only-new.key"), |i| i == 0);
    let copy_cli = cli
        .clone_with("OFFSITEDB_REPO", &to)
        .env("OFFSITEDB_KEY_FILE", only_new.to_str().unwrap());
    for (i, b) in [&old, &new].iter().enumerate() {
        let dir = f.dir.path().join(format!("fetched{i}"));
        let got: Fetched = json(&copy_cli.ok(&[
            "backup-fetch",
            "--source",
            "app",
            dir.to_str().unwrap(),
            &b.backup_id,
            "--json",
        ]));
        assert_eq!(got.backup_id, b.backup_id);
        assert!(dir.join("PG_VERSION").exists());
    }
    let v: Verified = json(&copy_cli.ok(&[
        "key",
        "verify",
        "--key-file",
        only_new.to_str().unwrap(),
        "--all",
        "--json",
    ]));
    assert_eq!(v.keys.len(), 1, "{v:?}");
    assert!(v.keys[0].kinds_has("base backup data"), "{v:?}");
}
