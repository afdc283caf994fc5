/*!
Key rotation records: `keys/<new key id>`, one sealed JSON object per rotation, sealed with the
new key and never rewritten. Each names the key it follows, and carries an *endorsement*: a keyed
digest by the previous key of the new key id and the repository id, so that only the holder of
the previous key can introduce a new one (anyone else can write objects into the bucket, but not
that digest). It also carries a copy of the repository's description, so that a key file holding
only keys rotated to since opens the repository (`key verify` then names the older keys it lacks).

Whoever holds the previous key checks the endorsement on every open; a ring without the previous
key cannot, and relies on the record being sealed with a key it holds.
*/

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::repo::{RepoConfig, Repository, read_sealed, within_limit};
use crate::crypto::key::KeyId;
use crate::crypto::{MasterKey, seal_bytes};
use crate::error::{Error, Result};
use crate::storage::{ReadStore, WriteStore};

pub const KEY_ROTATION_VERSION: u32 = 1;
pub const KEYS_PREFIX: &str = "keys/";
/// A record is a few hundred bytes.
pub const KEY_ROTATION_MAX: u64 = 1 << 20;
const ENDORSEMENT: &[u8] = b"offsitedb key rotation";

pub fn rotation_key(id: &KeyId) -> String {
    format!("{KEYS_PREFIX}{id}")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotation {
    pub key_rotation_version: u32,
    /// The new key: the one this record is sealed with.
    pub key_id: String,
    /// The key it follows (the current key when `key rotate` ran).
    pub previous_key_id: String,
    pub rotated: Timestamp,
    /// Hex HMAC-SHA-256 under the previous key ([`MasterKey::mac`], purpose
    /// "offsitedb key rotation") of the new key id's 16 bytes followed by the repository id.
    pub endorsement: String,
    /// A copy of `offsitedb.repo`'s description (created with the first key).
    pub repository: RepoConfig,
    pub created_by: String,
}

/// What the previous key's holder signs: the new key id, bound to this repository.
fn endorsed_data(new: &KeyId, repository_id: &str) -> Vec<u8> {
    let mut d = new.0.to_vec();
    d.extend_from_slice(repository_id.as_bytes());
    d
}

/// The rotation records' key ids, from the listing.
fn listed<S: ?Sized + ReadStore>(store: &S) -> Result<Vec<KeyId>> {
    Ok(store
        .list(KEYS_PREFIX)?
        .iter()
        .filter_map(|o| parse_id(o.key.strip_prefix(KEYS_PREFIX)?))
        .collect())
}

/// A key id from its 32 hex digits.
pub fn parse_id(hex: &str) -> Option<KeyId> {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(KeyId(id))
}

/// Reads and checks the record of `id` (sealed with that key, which `key` must hold).
fn read<S: ?Sized + ReadStore>(store: &S, key: &MasterKey, id: &KeyId) -> Result<KeyRotation> {
    let name = rotation_key(id);
    let plain = read_sealed(store, key, &name, KEY_ROTATION_MAX, |theirs| {
        Error::integrity(format!(
            "{name} is sealed with key id {theirs}, not with the key it names"
        ))
    })?;
    let r: KeyRotation = serde_json::from_slice(&plain)
        .map_err(|e| Error::integrity(format!("key rotation record {name} is not valid: {e}")))?;
    if r.key_rotation_version != KEY_ROTATION_VERSION {
        return Err(Error::config(format!(
            "key rotation record {name} has version {}, and this offsitedb reads version {KEY_ROTATION_VERSION}",
            r.key_rotation_version
        ))
        .with_hint("upgrade offsitedb"));
    }
    if r.key_id != id.to_string() {
        return Err(Error::integrity(format!(
            "{name} describes key id {}, not the key it is stored under",
            r.key_id
        )));
    }
    Ok(r)
}

/// The repository's description from a rotation record that `key` opens, when `key` lacks the
/// key `offsitedb.repo` is sealed with (`creation`). `None` when the ring opens no record.
pub(super) fn config_from_rotation<S: ?Sized + ReadStore>(
    store: &S,
    key: &MasterKey,
    creation: &KeyId,
) -> Result<Option<RepoConfig>> {
    for id in listed(store)? {
        if !key.has(&id) {
            continue;
        }
        let r = read(store, key, &id)?;
        if r.repository.key_id != creation.to_string() {
            return Err(Error::integrity(format!(
                "{} describes a repository created with key id {}, but {} here is sealed with key id {creation}",
                rotation_key(&id),
                r.repository.key_id,
                super::repo::REPO_OBJECT
            )));
        }
        return Ok(Some(r.repository));
    }
    Ok(None)
}

/// Checks every rotation record that `key` opens: it belongs to this repository, and its
/// endorsement verifies whenever `key` holds the previous key. Returns the rotated-to key ids.
pub(super) fn check_rotations<S: ?Sized + ReadStore>(
    store: &S,
    key: &MasterKey,
    config: &RepoConfig,
) -> Result<Vec<KeyId>> {
    let mut out = Vec::new();
    for id in listed(store)? {
        if !key.has(&id) {
            continue;
        }
        let name = rotation_key(&id);
        let r = read(store, key, &id)?;
        if r.repository.id != config.id {
            return Err(Error::integrity(format!(
                "{name} is the key rotation record of another repository ({})",
                r.repository.id
            )));
        }
        if let Some(prev) = parse_id(&r.previous_key_id)
            && let Some(mac) = key.mac_by(&prev, ENDORSEMENT, &endorsed_data(&id, &r.repository.id))
            && crate::units::hex(&mac) != r.endorsement
        {
            return Err(Error::integrity(format!(
                "{name} says key id {id} follows key id {prev}, but it is not endorsed by key id {prev}: it was not written by the holder of that key"
            ))
            .with_hint(format!(
                "if nobody with this repository's key ran `offsitedb key rotate`, someone else wrote {name}: remove it, and check who can write to the bucket"
            )));
        }
        out.push(id);
    }
    Ok(out)
}

impl<S: ?Sized + ReadStore> Repository<S> {
    /// The rotation records the keyring opens, oldest first (by time).
    pub fn rotations(&self) -> Result<Vec<KeyRotation>> {
        let mut v = Vec::new();
        for id in listed(self.store())? {
            if self.key().has(&id) {
                v.push(read(self.store(), self.key(), &id)?);
            }
        }
        v.sort_by_key(|r| r.rotated);
        Ok(v)
    }
}

impl<S: ?Sized + WriteStore> Repository<S> {
    /// Records that `new` follows this repository's current key: `keys/<new key id>`, sealed
    /// with `new` and endorsed by the current key. Returns the record.
    pub fn commit_rotation(&self, new: &MasterKey) -> Result<KeyRotation> {
        let config = self.config().cloned().ok_or_else(|| {
            Error::not_found(format!("no OffsiteDB repository at {}", self.location()))
                .with_hint("a repository is created by its first backup; rotate keys after it")
        })?;
        let old = self.key();
        let id = new.id();
        let r = KeyRotation {
            key_rotation_version: KEY_ROTATION_VERSION,
            key_id: id.to_string(),
            previous_key_id: old.id().to_string(),
            rotated: Timestamp::now(),
            endorsement: crate::units::hex(&old.mac(ENDORSEMENT, &endorsed_data(&id, &config.id))),
            repository: config,
            created_by: format!("offsitedb {}", crate::VERSION),
        };
        let json = serde_json::to_vec(&r).expect("serializable");
        let sealed = seal_bytes(new, &json)?;
        let name = rotation_key(&id);
        within_limit(&name, &sealed, KEY_ROTATION_MAX)?;
        if self.store().put_new(&name, &sealed)? {
            Ok(r)
        } else {
            Err(Error::storage(format!("{name} already exists")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::storage::local::LocalStore;

    fn repo(dir: &std::path::Path, key: &MasterKey) -> Repository<LocalStore> {
        Repository::open_for_writing(Box::new(LocalStore::new(dir.into())), key.clone()).unwrap()
    }

    #[test]
    fn a_rotation_opens_with_either_key_and_a_forged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k0 = MasterKey::from_bytes([1; 32]);
        let k1 = MasterKey::from_bytes([2; 32]);
        let r = repo(dir.path(), &k0);
        r.ensure_created().unwrap();
        r.commit_rotation(&k1).unwrap();
        let store = || Box::new(LocalStore::new(dir.path().into()));

        // The new ring writes; the new key alone opens (from the record's copy).
        let ring = MasterKey::with_older(&k1, &k0);
        let w = Repository::open_for_writing(store(), ring.clone()).unwrap();
        assert_eq!(w.rotations().unwrap().len(), 1);
        let alone = Repository::open(store(), k1.clone()).unwrap();
        assert_eq!(alone.config().unwrap().key_id, k0.id().to_string());

        // A key that is neither, as the current key: refused for writing.
        let k2 = MasterKey::from_bytes([3; 32]);
        let e = Repository::open_for_writing(store(), MasterKey::with_older(&k2, &k0))
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Key, "{e}");
        assert!(e.message().contains(&k2.id().to_string()), "{e}");

        // A record for k2 written by someone without k0 (endorsed by k2 itself).
        let forged = {
            let mut f = read(&*store(), &k1, &k1.id()).unwrap();
            f.key_id = k2.id().to_string();
            f.previous_key_id = k0.id().to_string();
            f.endorsement = crate::units::hex(&k2.mac(ENDORSEMENT, b"whatever"));
            seal_bytes(&k2, &serde_json::to_vec(&f).unwrap()).unwrap()
        };
        LocalStore::new(dir.path().into())
            .put(&rotation_key(&k2.id()), &forged)
            .unwrap();
        let e = Repository::open(store(), MasterKey::with_older(&k2, &k0))
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        assert!(e.message().contains("not endorsed"), "{e}");
    }
}
