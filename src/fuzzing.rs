/*!
Fuzz targets: one `fn(&[u8])` per parser of bytes that come from outside (the store, a pg_dump or
pg_basebackup stream, a configuration file), calling the library the way the product does. The
fuzz crate (`fuzz/`, see its README.md) runs them under libFuzzer; the test below replays the
committed corpus (`fuzz/corpus/<target>/`, seeds and every input that once crashed) through every
target on each `cargo nextest run`.

A target returns nothing and checks nothing but its own invariants: any input may fail, but as
an `Err`, never a panic, an abort, or an allocation sized by a length field.
*/

use std::io::Read;
use std::sync::OnceLock;

use crate::catalog::SnapshotId;
use crate::crypto::MasterKey;

/// A fuzz target: any bytes, and no panic.
pub type Target = fn(&[u8]);

/// Every target, by the name of its fuzz binary and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("unseal", unseal),
    ("catalog", catalog),
    ("dump", dump),
    ("s3_xml", s3_xml),
    ("folder_tar", folder_tar),
    ("base_tar", base_tar),
    ("wal_object", wal_object),
    ("config", config),
];

/// The fixed test key the sealed seeds were made with (never a real key).
pub fn test_key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| MasterKey::from_bytes([7; 32]))
}

/// The source and ids the catalog seeds are written for (a record read under another name is
/// refused, so the fuzzer needs these to reach past that check).
pub const SOURCE: &str = "db";
pub const SNAPSHOT: &str = "20260101T000000Z-abcdef";
pub const DRILL: &str = "20260102T000000Z-ghijkl";

/// The WAL file name the `wal_object` seeds carry.
pub const WAL_NAME: &str = "000000010000000000000001";

/// A sealed object (the repository's small objects, a snapshot's data), opened with the test key
/// and read to the end in small, uneven reads.
pub fn unseal(data: &[u8]) {
    let Ok(mut r) = crate::crypto::UnsealReader::new(data, test_key()) else {
        return;
    };
    let mut buf = [0u8; 4099];
    let mut n = 1;
    loop {
        match r.read(&mut buf[..n]) {
            Ok(0) | Err(_) => break,
            Ok(_) => n = (n * 3 + 1) % buf.len() + 1,
        }
    }
}

/// The opened JSON of a manifest, a drill record, a base backup manifest, a PITR drill record
/// and `offsitedb.repo`: version checks, then the records, then their identity.
pub fn catalog(plain: &[u8]) {
    let id = SnapshotId::parse(SNAPSHOT).expect("a valid id");
    let drill = SnapshotId::parse(DRILL).expect("a valid id");
    let _ = crate::catalog::repo::parse_config(plain);
    let _ = crate::catalog::repo::parse_manifest(plain, SOURCE, &id);
    let _ = crate::catalog::repo::parse_drill(plain, SOURCE, &id, &drill);
    if let Ok(m) = crate::catalog::base::parse_base_manifest(plain, SOURCE, &id) {
        let _ = (m.start_segment(), m.chain_ids(), m.duration_secs());
    }
    let _ = crate::catalog::base_drill::parse_base_drill(plain, SOURCE, &id, &drill);
}

/// A pg_dump custom-format archive, as the backup inspects the stream.
pub fn dump(data: &[u8]) {
    let _ = crate::dump::inspect(data);
}

/// A response body of the S3 service: an error, a listing, an Object Lock configuration, the
/// multipart replies.
pub fn s3_xml(body: &[u8]) {
    crate::storage::s3::fuzz_response(body);
}

/// A folder snapshot's tar stream, extracted as `restore --to-dir` and folder drills do, into a
/// temporary folder. Whatever the archive says, nothing may appear beside the destination.
pub fn folder_tar(data: &[u8]) {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).expect("the destination");
    let _ = crate::ops::directory::extract(&mut &data[..], &dest);
    crate::ops::directory::make_removable(&dest);
    let beside: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("the temporary folder")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(beside, ["dest"], "the extraction wrote outside its folder");
}

/// pg_basebackup's tar stream, read as a base backup reads it (backup_label, pg_control,
/// backup_manifest), and the facts it gives checked against each other.
pub fn base_tar(data: &[u8]) {
    crate::ops::backup::basebackup::fuzz_tar(data);
}

/// The plaintext of a stored WAL file (header, then the file, maybe zstd-compressed): sealed
/// with the test key and decoded as `wal-fetch` does.
pub fn wal_object(plain: &[u8]) {
    let Ok(sealed) = crate::crypto::seal_bytes(test_key(), plain) else {
        return;
    };
    let name = crate::wal::name::WalName::parse(WAL_NAME).expect("a valid name");
    let _ = crate::wal::object::decode(&sealed[..], test_key(), &name, &mut std::io::sink());
}

/// A configuration file (and the same text as a key file): parsed with `${VAR}` interpolation,
/// then everything a command derives from it without touching the network or other files.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = MasterKey::parse(text, "fuzz.key");
    // `${SET}` stands for whatever a seed needs a value for: a database URL fits most fields.
    let lookup = |k: &str| (k == "SET").then(|| "postgres://app@db.internal:5432/app".to_string());
    let Ok(file) = crate::config::parse(text, "fuzz.toml", &lookup) else {
        return;
    };
    let settings = crate::config::Settings {
        file,
        path: None,
        origin: None,
        overrides: Default::default(),
    };
    let _ = settings.location();
    let _ = settings.repository_identity();
    let _ = settings.s3_options();
    let _ = settings.configured_sources(None);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn corpus() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
    }

    /// Every corpus file of every target, through every target: the seeds and every input that
    /// once crashed one (committed there with its fix) are regression tests on stable Rust.
    #[test]
    fn the_corpus_replays_through_every_target_without_a_panic() {
        let mut files = Vec::new();
        for (name, _) in TARGETS {
            let dir = corpus().join(name);
            let before = files.len();
            for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                files.push(e.unwrap().path());
            }
            assert!(files.len() > before, "{} has no seeds", dir.display());
        }
        for f in &files {
            let data = std::fs::read(f).unwrap();
            for (name, target) in TARGETS {
                if let Err(p) = std::panic::catch_unwind(|| target(&data)) {
                    let why = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    panic!("target {name} panicked on {}: {why}", f.display());
                }
            }
        }
    }

    /// A corpus folder for each target and a target for each corpus folder.
    #[test]
    fn every_target_has_a_corpus_and_every_corpus_a_target() {
        let mut dirs: Vec<String> = std::fs::read_dir(corpus())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        dirs.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        assert_eq!(dirs, names);
        let bins = std::fs::read_dir(corpus().join("../fuzz_targets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|f| f.strip_suffix(".rs").map(str::to_string));
        let mut bins: Vec<String> = bins.collect();
        bins.sort();
        assert_eq!(bins, names);
    }
}
