/*!
One run per source at a time on a machine: `serve`'s jobs and a manual `backup`, `run` or `prune`
of the same source (in the same repository) take an exclusive lock, so a prune never deletes
while a backup of that source uploads, and two backups never race.

The lock is `flock(2)` on a file in the state folder (`locks/<source>-<repository hash>.lock`):
the kernel releases it when its holder exits, however it exits, so a killed process never leaves
a stale lock. The holder writes what it is doing into the file, for the message the waiting run
prints. Waiting polls (and gives up on Ctrl-C / SIGTERM) rather than blocking in the kernel.

Several users may share a state folder (the service's user, and root running a command by
hand): the locks folder is made sticky and writable by all (like /tmp), and a lock file made by
another user is locked through a read-only descriptor (`flock` needs no write access), so nobody
is locked out by a file someone else created. The holder's note is then not rewritten, and a
note whose process is gone is not shown.
*/

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// How often a waiting run tries again.
const POLL: Duration = Duration::from_millis(200);

/// What a run does when the source is busy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Wait until the other run ends (saying so once).
    #[default]
    Yes,
    /// Fail at once with [`ErrorKind::Busy`].
    No,
}

/// Held while a run works on a source; dropping it releases the lock.
#[derive(Debug)]
pub struct SourceLock {
    _file: File,
    path: PathBuf,
}

impl SourceLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of `source` in the repository at `location` (its redacted description).
pub fn lock_path(state_dir: &Path, location: &str, source: &str) -> PathBuf {
    let h = Sha256::digest(location.as_bytes());
    state_dir
        .join("locks")
        .join(format!("{source}-{}.lock", crate::units::hex(&h[..6])))
}

/// Takes the lock of `source` for `what` ("backup", "prune", ...). With [`Wait::Yes`], `note`
/// hears once that the run waits, and for whom.
pub fn acquire(
    state_dir: &Path,
    location: &str,
    source: &str,
    what: &str,
    wait: Wait,
    note: &mut dyn FnMut(String),
) -> Result<SourceLock> {
    let path = lock_path(state_dir, location, source);
    if let Some(dir) = path.parent() {
        make_lock_dir(dir)?;
    }
    let (mut file, writable) = open(&path)?;
    let mut said = false;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::io_at("cannot lock", &path, &e));
        }
        let holder = holder(&mut file);
        if wait == Wait::No {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("source {source} is busy: {holder}"),
            )
            .with_hint("run it again when that run ends, or leave out --no-wait to wait for it"));
        }
        if !said {
            note(format!(
                "waiting for source {source}: {holder} (Ctrl-C to give up)"
            ));
            said = true;
        }
        crate::interrupt::check().map_err(|_| {
            Error::new(
                ErrorKind::Interrupted,
                "interrupted while waiting for the source's lock; nothing was done",
            )
        })?;
        std::thread::sleep(POLL);
    }
    if writable {
        let text = format!(
            "{what} (pid {}) since {}",
            std::process::id(),
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_else(|_| jiff::Timestamp::now())
        );
        let _ = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(text.as_bytes()));
    }
    Ok(SourceLock { _file: file, path })
}

/// The locks folder, sticky and writable by every user who can reach the state folder.
fn make_lock_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        return Ok(());
    }
    match std::fs::create_dir(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))
            .map_err(|e| Error::io_at("cannot set the mode of", dir, &e)),
        // Another run made it a moment ago.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io_at("cannot create the state folder", parent, &e))?;
            }
            make_lock_dir(dir)
        }
        Err(e) => Err(Error::io_at("cannot create the lock folder", dir, &e)),
    }
}

/// Opens (creating) the lock file, read-write when we may, else read-only. Never follows a
/// symlink planted in a shared folder.
fn open(path: &Path) -> Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    match rw {
        Ok(f) => Ok((f, true)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map(|f| (f, false))
            .map_err(|e| Error::io_at("cannot open the lock file", path, &e)),
        Err(e) => Err(Error::io_at("cannot open the lock file", path, &e)),
    }
}

/// What the holder wrote, when that process still runs (a holder that could not write its note
/// leaves an earlier one's), else a plain phrase.
fn holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut s));
    let s = s.trim();
    let alive = s
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse::<i32>().ok())
        // SAFETY: kill with signal 0 only asks whether the process exists.
        .is_some_and(|pid| {
            let r = unsafe { libc::kill(pid, 0) };
            r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        });
    if alive {
        format!("another offsitedb run holds its lock: {s}")
    } else {
        "another offsitedb run holds its lock".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_or_waits_and_a_released_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let a = acquire(dir.path(), "repo", "app", "backup", Wait::No, &mut |_| {}).unwrap();
        // flock is per open file description: a second open in this process conflicts too.
        let e = acquire(dir.path(), "repo", "app", "prune", Wait::No, &mut |_| {}).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Busy);
        assert!(e.message().contains("backup (pid "), "{e:?}");
        // Another source, or the same name in another repository, is independent.
        let _b = acquire(dir.path(), "repo", "other", "backup", Wait::No, &mut |_| {}).unwrap();
        let _c = acquire(dir.path(), "repo2", "app", "backup", Wait::No, &mut |_| {}).unwrap();
        let path = a.path().to_path_buf();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(a);
        });
        let mut notes = Vec::new();
        let d = acquire(dir.path(), "repo", "app", "prune", Wait::Yes, &mut |n| {
            notes.push(n)
        })
        .unwrap();
        t.join().unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("waiting for source app"), "{notes:?}");
        assert_eq!(d.path(), path);
    }
}
