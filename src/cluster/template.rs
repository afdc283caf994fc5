/*!
Freshly initialized data folders, kept per server build: copying one (about 40 MB) takes a
fraction of the time `initdb` takes, so a drill starts restoring that much sooner.

The cache is a private folder (`OFFSITEDB_CACHE_DIR`, else `$XDG_CACHE_HOME/offsitedb`, else
`~/.cache/offsitedb`; `OFFSITEDB_CACHE_DIR=none` turns it off). An entry is keyed by the server
programs' paths, sizes and times, written in full (and synced) before it is renamed into place,
and used only as a whole. Anything wrong with the cache (missing, not ours, writable by others,
unwritable, damaged, or a copy the server will not start from) means `initdb` runs as before: the
cache can only save time. Entries not
used for 30 days (an upgraded server leaves its old one behind) are removed when a new one is made.
*/

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Changes whenever the `initdb` arguments change, so older entries are not used.
const FORMAT: &[u8] =
    b"offsitedb initdb -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C";

/// The default cache folder, None when turned off or when there is no home folder.
pub(super) fn default_root() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = env("OFFSITEDB_CACHE_DIR") {
        return (dir != "none").then(|| PathBuf::from(dir));
    }
    env("XDG_CACHE_HOME")
        .map(|d| PathBuf::from(d).join("offsitedb"))
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache/offsitedb")))
}

/// The entry under the cache folder `root` for the server programs in `bin`, or None when the
/// cache cannot be used.
pub(super) fn entry(root: &Path, bin: &Path) -> Option<PathBuf> {
    let root = root.join("initdb");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .ok()?;
    // Only a folder of ours that nobody else can write to: a planted template would run
    // whatever its configuration says.
    let meta = std::fs::symlink_metadata(&root).ok()?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return None;
    }
    let mut h = Sha256::new();
    h.update(FORMAT);
    for program in ["initdb", "postgres"] {
        let path = bin.join(program);
        let m = std::fs::metadata(&path).ok()?;
        h.update(path.as_os_str().as_bytes());
        for n in [m.len() as i64, m.mtime(), m.mtime_nsec(), m.ino() as i64] {
            h.update(n.to_le_bytes());
        }
    }
    let key: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(root.join(key))
}

/// Fills `data` (which must not exist) from the entry, owned by `owner`. False (and nothing
/// left at `data`) when there is no entry or it cannot be copied; a damaged entry is removed,
/// for [`save`] to make again.
pub(super) fn restore(entry: &Path, data: &Path, owner: Option<(u32, u32)>) -> bool {
    if !entry.exists() {
        return false;
    }
    let source = entry.join("data");
    let copied = source.join("global/pg_control").is_file()
        && copy_tree(&source, data, owner, false).is_ok();
    if copied {
        // Its time says when it was last used, for the clean-up in `save`.
        let _ = filetime::set_file_mtime(entry, filetime::FileTime::now());
    } else {
        let _ = std::fs::remove_dir_all(data);
        let _ = std::fs::remove_dir_all(entry);
    }
    copied
}

/// Keeps a copy of `data`, fresh from initdb, as the entry (unless one appeared meanwhile).
pub(super) fn save(entry: &Path, data: &Path) {
    if entry.exists() {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = entry.with_extension(format!("tmp-{}-{nanos}", std::process::id()));
    let made = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .and_then(|()| copy_tree(data, &tmp.join("data"), None, true))
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        // Another process may have put the same entry in place first; theirs is as good.
        .and_then(|()| std::fs::rename(&tmp, entry));
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if let Some(root) = entry.parent() {
        remove_unused(root, entry);
    }
}

/// Removes the entries (and leftovers of interrupted saves) of `root` other than `keep` that
/// were not used for 30 days.
fn remove_unused(root: &Path, keep: &Path) {
    let Ok(list) = std::fs::read_dir(root) else {
        return;
    };
    let month = std::time::Duration::from_secs(30 * 24 * 3600);
    for e in list.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > month);
        if old && e.path() != keep {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Copies a data folder (folders and plain files only, as initdb makes them), with its modes.
fn copy_tree(from: &Path, to: &Path, owner: Option<(u32, u32)>, sync: bool) -> io::Result<()> {
    let mode = std::fs::symlink_metadata(from)?.mode() & 0o7777;
    std::fs::DirBuilder::new().mode(0o700).create(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let kind = e.file_type()?;
        let dest = to.join(e.file_name());
        if kind.is_dir() {
            copy_tree(&e.path(), &dest, owner, sync)?;
        } else if kind.is_file() {
            std::fs::copy(e.path(), &dest)?;
            if sync {
                std::fs::File::open(&dest)?.sync_all()?;
            }
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::lchown(&dest, Some(uid), Some(gid))?;
            }
        } else {
            return Err(io::Error::other("not a plain file or folder"));
        }
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(to, Some(uid), Some(gid))?;
    }
    if sync {
        std::fs::File::open(to)?.sync_all()?;
    }
    Ok(())
}
