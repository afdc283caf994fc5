/*!
`offsitedb key rewrap --to LOCATION`: retires old keys by copying the whole repository into a new,
empty location with every object sealed again with the current key only. Objects are never
rewritten in place (Object Lock forbids it, and an interrupted rewrite would lose backups), so the
copy is a new repository, with its own `offsitedb.repo`; the old location stays as it was until
its owner deletes it.

Each object streams: download → unseal (any key of the ring) → seal (current key, the object's
own chunk size) → streaming upload, measuring the plaintext and the sealed bytes on the way, so
memory stays at a few chunks whatever the object's size and nothing touches the disk. Names and
ids are kept. A manifest (snapshot or base backup) records its data object's sealed size, SHA-256
and salt: its data object is copied first, the plaintext's SHA-256 checked against the manifest's
`sha256_compressed` (the copy proves every byte), and the manifest is re-sealed with the new
object's figures and written after it, as a backup writes it. `offsitedb.repo` is written last, so
an interrupted copy is never mistaken for a repository.

Not copied: `log/` (the tamper-evidence log: the copy's log vouches for the copied objects in one entry per source), `keys/` (the
old keys' rotation records: the copy has one key), and objects of interrupted backups (a data
object without its manifest), which prune would remove anyway.
*/

use std::collections::BTreeSet;

use serde::Serialize;

use super::{LOG_PREFIX, kind_of};
use crate::catalog::Repository;
use crate::catalog::base::base_manifest_key;
use crate::catalog::keys::KEYS_PREFIX;
use crate::catalog::manifest::{DataObject, Encryption, Sizes};
use crate::catalog::repo::{REPO_OBJECT, manifest_key};
use crate::crypto::{MasterKey, SealWriter, UnsealReader};
use crate::error::{Error, Result};
use crate::pipeline::{MeasureWriter, Measured};
use crate::storage::{ObjectInfo, ReadStore, WriteStore};

/// What `key rewrap` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rewrapped {
    pub from: String,
    pub to: String,
    /// The key every object of the copy is sealed with.
    pub key_id: String,
    /// Objects written into the copy (`offsitedb.repo` included).
    pub objects: u64,
    /// Bytes written into the copy.
    pub bytes: u64,
    pub snapshots: u64,
    pub base_backups: u64,
    pub wal_files: u64,
    /// Left out: objects of interrupted backups (data without a manifest).
    pub skipped_incomplete: Vec<String>,
    /// Left out: `log/` objects (rebuilt in the copy by the log's own code).
    pub skipped_log: u64,
    /// Left out: the old keys' rotation records.
    pub skipped_key_records: u64,
}

/// A sealed object copied: what the new object is.
struct Copied {
    stored: Measured,
    salt: [u8; 32],
    chunk_size: u32,
}

/// Copies `old` into the empty location `dest`, sealed with `old`'s current key only.
/// `note` hears of progress (one line per snapshot or base backup).
pub fn rewrap<S: ReadStore + ?Sized, D: WriteStore + ?Sized>(
    old: &Repository<S>,
    dest: Box<D>,
    note: &mut dyn FnMut(String),
) -> Result<Rewrapped> {
    let key = old.key().current_only();
    if let Some(o) = dest.any("")? {
        return Err(Error::config(format!(
            "{} is not empty (it holds {}): rewrap copies the repository into a new, empty location",
            dest.location(),
            o.key
        ))
        .with_hint("give an empty folder or a bucket prefix that holds nothing"));
    }
    let mut out = Rewrapped {
        from: old.location(),
        to: dest.location(),
        key_id: key.id().to_string(),
        ..Default::default()
    };
    let listing = old.store().list("")?;
    let mut done: BTreeSet<String> = BTreeSet::new();
    // The copy, as a repository: manifests go through the same commit as a backup's.
    let copy = Repository::open_for_writing(dest, key.clone())?;

    for e in old.entries(None)? {
        let m = old.manifest(&e.source, &e.id)?;
        let mut m2 = m.clone();
        let c = copy_object(old, copy.store(), &key, &m.data.key, Some(&m.data))
            .map_err(|err| damaged(err, &format!("snapshot {}/{}", e.source, e.id)))?;
        m2.sizes = Sizes {
            stored_bytes: c.stored.bytes,
            ..m.sizes.clone()
        };
        m2.data = new_data(&m.data, &c);
        m2.encryption = encryption(&key, &c);
        copy.commit_manifest(&m2)?;
        done.extend([m.data.key.clone(), manifest_key(&e.source, &e.id)]);
        out.objects += 2;
        out.bytes += c.stored.bytes;
        out.snapshots += 1;
        note(format!("copied snapshot {}/{}", e.source, e.id));
    }

    let sources: BTreeSet<String> = old
        .base_entries(None)?
        .into_iter()
        .map(|b| b.source)
        .collect();
    for source in sources {
        for m in old.base_manifests(&source)? {
            let what = format!("base backup {}/{}", m.source.name, m.backup_id);
            let c = copy_object(old, copy.store(), &key, &m.data.key, Some(&m.data))
                .map_err(|err| damaged(err, &what))?;
            let mut m2 = m.clone();
            m2.sizes = Sizes {
                stored_bytes: c.stored.bytes,
                ..m.sizes.clone()
            };
            m2.data = new_data(&m.data, &c);
            m2.encryption = encryption(&key, &c);
            // Its server backup_manifest before the manifest that commits it.
            let server = crate::catalog::base::server_manifest_key(&source, &m.backup_id);
            if let Some(info) = listing.iter().find(|o| o.key == server) {
                out.bytes += copy_object(old, copy.store(), &key, &info.key, None)?
                    .stored
                    .bytes;
                out.objects += 1;
                done.insert(server);
            }
            copy.commit_base_manifest(&m2)?;
            done.extend([m.data.key.clone(), base_manifest_key(&source, &m.backup_id)]);
            out.objects += 2;
            out.bytes += c.stored.bytes;
            out.base_backups += 1;
            note(format!("copied {what}"));
        }
    }

    for ObjectInfo { key: name, .. } in &listing {
        if done.contains(name) || name == REPO_OBJECT {
            continue;
        }
        if name.starts_with(LOG_PREFIX) {
            out.skipped_log += 1;
            continue;
        }
        if name.starts_with(KEYS_PREFIX) {
            out.skipped_key_records += 1;
            continue;
        }
        // A data object (or server backup_manifest) whose manifest is not there: an
        // interrupted backup.
        if matches!(
            kind_of(name),
            "snapshot data"
                | "base backup data"
                | "server backup manifest"
                | "snapshot manifest"
                | "base backup manifest"
        ) {
            out.skipped_incomplete.push(name.clone());
            continue;
        }
        let c = copy_object(old, copy.store(), &key, name, None)?;
        out.objects += 1;
        out.bytes += c.stored.bytes;
        if kind_of(name) == "WAL file" {
            out.wal_files += 1;
        }
    }

    // Last: only a complete copy is a repository; its log starts by vouching for the copy.
    copy.ensure_created()?;
    let mut sources: BTreeSet<String> = BTreeSet::new();
    for top in ["snapshots/", "base/"] {
        for o in copy.store().list(top)? {
            if let Some(s) = o.key[top.len()..].split('/').next() {
                sources.insert(s.to_string());
            }
        }
    }
    for source in sources {
        copy.log_copied(&source, &out.from)?;
    }
    out.objects += 1;
    Ok(out)
}

/// A data object that cannot be copied: the copy stops, saying which snapshot.
fn damaged(e: Error, what: &str) -> Error {
    let hint = "rewrap copies every snapshot whole: remove the damaged one from the old location (or restore it from elsewhere), empty the new location, and run rewrap again";
    e.context(what).with_hint(hint)
}

fn new_data(old: &DataObject, c: &Copied) -> DataObject {
    DataObject {
        key: old.key.clone(),
        salt: crate::units::hex(&c.salt),
        sha256_stored: c.stored.sha256.clone(),
        sha256_compressed: old.sha256_compressed.clone(),
    }
}

fn encryption(key: &MasterKey, c: &Copied) -> Encryption {
    Encryption {
        chunk_size: c.chunk_size,
        ..Encryption::sealed_with(key)
    }
}

/// Streams one object from `old` into `dest` under the same name, sealed with `key`. With
/// `data`, the object must be the one that manifest entry describes (its salt), and its
/// plaintext must have the recorded SHA-256, checked before the new object is completed.
fn copy_object<S: ReadStore + ?Sized, D: WriteStore + ?Sized>(
    old: &Repository<S>,
    dest: &D,
    key: &MasterKey,
    name: &str,
    data: Option<&DataObject>,
) -> Result<Copied> {
    crate::interrupt::check()?;
    let obj = old.store().open(name)?;
    let mut r = UnsealReader::new(obj.reader, old.key()).map_err(|e| e.context(name))?;
    let chunk_size = r.header().chunk_size;
    if let Some(d) = data
        && crate::units::hex(&r.header().salt) != d.salt
    {
        return Err(Error::integrity(format!(
            "{name} is not the object its manifest describes (different salt)"
        )));
    }
    let upload = dest.upload(name, obj.size)?;
    let seal = SealWriter::with_chunk_size(MeasureWriter::hashing(upload), key, chunk_size)?;
    let salt = seal.salt();
    let mut plain = MeasureWriter::hashing(seal);
    crate::pipeline::copy_large(&mut r, &mut plain).map_err(|e| {
        let e = Error::from_io(e, &format!("cannot copy {name}"));
        e.context(name)
    })?;
    let (seal, seen) = plain.finish();
    if let Some(d) = data
        && seen.sha256 != d.sha256_compressed
    {
        // Dropping the upload aborts it.
        return Err(Error::integrity(format!(
            "{name} does not match its manifest: its content has sha256 {}, the manifest says {}",
            seen.sha256, d.sha256_compressed
        )));
    }
    let (upload, stored) = seal.finish()?.finish();
    upload.finish()?;
    Ok(Copied {
        stored,
        salt,
        chunk_size,
    })
}
