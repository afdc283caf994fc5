/*!
`offsitedb key …`: the operations on a repository's keys.

- [`keys_needed`] and [`verify`]: which key ids the repository's objects are sealed with, and
  whether a key file (an offline copy) holds them all: the proof, before the bad day, that the
  copy in the safe opens the backups.
- [`rotate`]: a new current key, recorded in the repository (`catalog::keys`).
- [`paper`]: a copy of a key a person can type back.
- [`rewrap`]: a copy of the whole repository sealed with the current key only, for retiring an
  old key.
*/

pub mod paper;
pub mod rewrap;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use crate::catalog::Repository;
use crate::catalog::keys::KeyRotation;
use crate::crypto::key::KeyId;
use crate::crypto::seal::read_header;
use crate::crypto::{MasterKey, UnsealReader};
use crate::error::{Error, Result};
use crate::storage::{ObjectInfo, ReadStore, WriteStore};

/// Prefix of the tamper-evidence log, which has its own format and is not ours to read here.
pub const LOG_PREFIX: &str = "log/";

/// What kind of object a name is, for people.
pub fn kind_of(name: &str) -> &'static str {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        [crate::catalog::repo::REPO_OBJECT] => "repository",
        ["keys", _] => "key rotation record",
        ["snapshots", _, _, "manifest"] => "snapshot manifest",
        ["snapshots", _, _, "data"] => "snapshot data",
        ["snapshots", _, _, "drills", _] => "drill record",
        ["base", _, _, "manifest"] => "base backup manifest",
        ["base", _, _, "data"] => "base backup data",
        ["base", _, _, "backup_manifest"] => "server backup manifest",
        ["base", _, _, "drills", _] => "PITR drill record",
        ["wal", ..] => "WAL file",
        ["reports", _] => "report",
        _ => "other",
    }
}

/// The objects whose headers [`keys_needed`] reads by default: every small object that says
/// what is in the repository. A data object (snapshot, base backup) is sealed in the same run,
/// with the same key, as its manifest, so the manifest answers for it; WAL files and data are
/// read with `all`.
fn by_default(name: &str) -> bool {
    !matches!(
        kind_of(name),
        "snapshot data" | "base backup data" | "server backup manifest" | "WAL file" | "other"
    )
}

/// One key id the repository needs.
#[derive(Clone, Debug, Serialize)]
pub struct Needed {
    pub key_id: String,
    pub objects: u64,
    /// Objects per kind (`snapshot manifest`, `drill record`, …).
    pub kinds: BTreeMap<String, u64>,
    /// The smallest object sealed with it (the one `verify` opens completely).
    pub smallest: String,
    #[serde(skip)]
    smallest_size: u64,
    #[serde(skip)]
    id: Option<KeyId>,
}

impl Needed {
    pub fn id(&self) -> KeyId {
        self.id.expect("set by keys_needed")
    }
}

/// Every key id the repository's objects are sealed with, from the 62-byte header of each
/// object read (see [`by_default`]; every object but the log's with `all`), most used first.
pub fn keys_needed<S: ReadStore + ?Sized>(repo: &Repository<S>, all: bool) -> Result<Vec<Needed>> {
    let store = repo.store();
    let mut by_id: BTreeMap<[u8; 16], Needed> = BTreeMap::new();
    for ObjectInfo { key: name, size } in store.list("")? {
        if name.starts_with(LOG_PREFIX) || !(all || by_default(&name)) {
            continue;
        }
        crate::interrupt::check()?;
        let mut r = store.get(&name)?;
        let h = read_header(&mut r).map_err(|e| e.context(&name))?;
        let n = by_id.entry(h.key_id.0).or_insert_with(|| Needed {
            key_id: h.key_id.to_string(),
            objects: 0,
            kinds: BTreeMap::new(),
            smallest: name.clone(),
            smallest_size: size,
            id: Some(h.key_id),
        });
        n.objects += 1;
        *n.kinds.entry(kind_of(&name).to_string()).or_default() += 1;
        if size < n.smallest_size {
            n.smallest = name.clone();
            n.smallest_size = size;
        }
    }
    let mut v: Vec<Needed> = by_id.into_values().collect();
    v.sort_by(|a, b| b.objects.cmp(&a.objects).then(a.key_id.cmp(&b.key_id)));
    Ok(v)
}

/// One needed key id and whether the file has it.
#[derive(Clone, Debug, Serialize)]
pub struct Checked {
    #[serde(flatten)]
    pub needed: Needed,
    pub in_file: bool,
    /// The object opened completely with the file's key (set when `in_file`).
    pub opened: Option<String>,
}

/// What `key verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    pub repository: String,
    /// The file's key ids, its current key first.
    pub file_key_ids: Vec<String>,
    pub keys: Vec<Checked>,
    /// Needed key ids the file lacks.
    pub missing: Vec<String>,
    /// Whether every header of every object was read (`--all`).
    pub all_objects: bool,
}

impl Verified {
    pub fn opens_everything(&self) -> bool {
        self.missing.is_empty()
    }

    /// The error `key verify` ends with when the file lacks a key.
    pub fn missing_error(&self) -> Option<Error> {
        if self.missing.is_empty() {
            return None;
        }
        let objects: u64 = self
            .keys
            .iter()
            .filter(|k| !k.in_file)
            .map(|k| k.needed.objects)
            .sum();
        Some(
            Error::key(format!(
                "the key file lacks key id{} {} that {objects} object{} of the repository {} sealed with (it holds {})",
                if self.missing.len() == 1 { "" } else { "s" },
                self.missing.join(", "),
                if objects == 1 { "" } else { "s" },
                if objects == 1 { "is" } else { "are" },
                self.file_key_ids.join(", ")
            ))
            .with_hint(
                "add the missing keys to the file (older keys on the lines after the current one), from the key file you use for backups",
            ),
        )
    }
}

/// Proves that `file_key` alone opens the repository in `store`: opens it with only that key
/// file, lists the key ids its objects need ([`keys_needed`]) and authenticates one object per
/// key id the file holds completely. A file without the key of the repository itself fails
/// here with the repository's key error; one without some older key returns a result whose
/// [`Verified::missing_error`] says which.
pub fn verify<S: ReadStore + ?Sized>(
    store: Box<S>,
    file_key: MasterKey,
    all: bool,
) -> Result<Verified> {
    let repo = Repository::open(store, file_key)?;
    let needed = keys_needed(&repo, all)?;
    let mut keys = Vec::new();
    let mut missing = Vec::new();
    for n in needed {
        let in_file = repo.key().has(&n.id());
        let opened = if in_file {
            open_fully(repo.store(), repo.key(), &n.smallest)?;
            Some(n.smallest.clone())
        } else {
            missing.push(n.key_id.clone());
            None
        };
        keys.push(Checked {
            needed: n,
            in_file,
            opened,
        });
    }
    Ok(Verified {
        repository: repo.location(),
        file_key_ids: repo.key().ids().iter().map(|i| i.to_string()).collect(),
        keys,
        missing,
        all_objects: all,
    })
}

/// Unseals a whole object (every chunk authenticated), discarding the plaintext.
fn open_fully<S: ReadStore + ?Sized>(store: &S, key: &MasterKey, name: &str) -> Result<u64> {
    let r = store.get(name)?;
    let mut u = UnsealReader::new(r, key).map_err(|e| e.context(name))?;
    crate::pipeline::copy_large(&mut u as &mut dyn Read, &mut std::io::sink())
        .map_err(|e| Error::from_io(e, &format!("cannot read {name}")))
}

/// What `key rotate` did.
#[derive(Clone, Debug, Serialize)]
pub struct Rotated {
    pub key_id: String,
    pub previous_key_id: String,
    /// Every key id in the new file, the new current key first.
    pub file_key_ids: Vec<String>,
    pub file: String,
    pub record: String,
}

/// Makes a new current key: writes `out` (mode 0600, never over a file) holding the new key
/// and then every key of the repository's keyring, and records the rotation in the repository,
/// endorsed by the current key. Nothing is left when the record cannot be written.
pub fn rotate<S: WriteStore + ?Sized>(repo: &Repository<S>, out: &Path) -> Result<Rotated> {
    if repo.config().is_none() {
        return Err(
            Error::not_found(format!("no OffsiteDB repository at {}", repo.location()))
                .with_hint("a repository is created by its first backup; rotate keys after it"),
        );
    }
    let new = MasterKey::generate()?;
    let ring = MasterKey::with_older(&new, repo.key());
    ring.write_new_file(out)?;
    let r: KeyRotation = match repo.commit_rotation(&new) {
        Ok(r) => r,
        Err(e) => {
            // A key no record names would be refused by the next backup: take it back.
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
    };
    Ok(Rotated {
        key_id: r.key_id.clone(),
        previous_key_id: r.previous_key_id,
        file_key_ids: ring.ids().iter().map(|i| i.to_string()).collect(),
        file: out.display().to_string(),
        record: crate::catalog::keys::rotation_key(&new.id()),
    })
}
