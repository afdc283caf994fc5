/*!
What a restored data folder needs to recover on its own: `recovery.signal`, the recovery settings
(appended to `postgresql.auto.conf`, which PostgreSQL reads last), and a `restore_command` that
calls this binary with a configuration of its own.

`restore_command` runs whenever the server is started, perhaps days later, by another user, from
a service manager without this shell's environment. So it names everything: the binary by its
absolute path, and a configuration file written next to the data folder
(`<data folder>.offsitedb.toml`, mode 0600, owned by the data folder's owner) that holds the
repository (URL, S3 keys when they came from the environment or a profile) and names a copy of
the master key (`<data folder>.offsitedb.key`, mode 0600). Both live outside the data folder, so
no later base backup copies them; delete them once the server is promoted.
*/

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::storage::Location;
use crate::storage::s3::Credentials;

use super::target::Target;

/// What the restored server must be told.
pub struct Recovery<'a> {
    pub source: &'a str,
    pub target: &'a Target,
    /// `promote`, `pause` or `shutdown`.
    pub action: &'a str,
    /// `latest`, `current`, or a timeline number.
    pub timeline: &'a str,
    /// Turn off archiving in the restored server (a test restore must not add a timeline to
    /// the source's archive).
    pub no_archive: bool,
}

/// The files written next to the data folder.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Written {
    pub config: PathBuf,
    pub key: PathBuf,
    pub restore_command: String,
}

/// Where the restore configuration of `pgdata` goes.
pub fn companion(pgdata: &Path, ext: &str) -> Result<PathBuf> {
    let abs =
        std::path::absolute(pgdata).map_err(|e| Error::io_at("cannot resolve", pgdata, &e))?;
    let name = abs
        .file_name()
        .ok_or_else(|| Error::config(format!("{} is not a folder name", pgdata.display())))?
        .to_string_lossy()
        .into_owned();
    Ok(abs.with_file_name(format!("{name}.offsitedb.{ext}")))
}

/// Writes the restore configuration and key copy next to `pgdata`, owned by `owner`.
pub fn write_companions(
    pgdata: &Path,
    location: &Location,
    credentials: &Credentials,
    key: &MasterKey,
    source: &str,
    owner: Option<(u32, u32)>,
) -> Result<Written> {
    let config = companion(pgdata, "toml")?;
    let key_path = companion(pgdata, "key")?;
    let mut repo = toml::Table::new();
    repo.insert("url".into(), location.to_url().into());
    if matches!(location, Location::S3(_)) && !credentials.access_key_id.is_empty() {
        repo.insert(
            "access_key_id".into(),
            credentials.access_key_id.clone().into(),
        );
        repo.insert(
            "secret_access_key".into(),
            credentials.secret_access_key.clone().into(),
        );
        if let Some(t) = &credentials.session_token {
            repo.insert("session_token".into(), t.clone().into());
        }
    }
    repo.insert("key_file".into(), key_path.display().to_string().into());
    let mut doc = toml::Table::new();
    doc.insert("repository".into(), repo.into());
    let body = format!(
        "# Written by `offsitedb restore --pgdata` for the restore_command of {}.\n\
         # It holds repository credentials: delete it (and {}) once the server is promoted.\n\
         {}",
        std::path::absolute(pgdata)
            .unwrap_or(pgdata.to_path_buf())
            .display(),
        key_path.display(),
        toml::to_string(&doc).map_err(|e| Error::internal(format!("toml: {e}")))?
    );
    write_private(&key_path, key.to_file_text().as_bytes(), owner)?;
    write_private(&config, body.as_bytes(), owner)?;
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| Error::io(format!("cannot find this program's path: {e}")))?;
    let restore_command = format!(
        "{} wal-fetch --config {} --source {} \"%f\" \"%p\"",
        shell_quote(&exe.display().to_string()),
        shell_quote(&config.display().to_string()),
        shell_quote(source)
    );
    Ok(Written {
        config,
        key: key_path,
        restore_command,
    })
}

/// Appends the recovery settings to `postgresql.auto.conf` and creates `recovery.signal`.
pub fn write_recovery(
    pgdata: &Path,
    r: &Recovery<'_>,
    restore_command: &str,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let mut lines = vec![
        format!(
            "\n# Added by offsitedb restore at {}: recover {} to {}.",
            jiff::Timestamp::now(),
            r.source,
            r.target.describe()
        ),
        setting("restore_command", restore_command),
        setting("recovery_target_timeline", r.timeline),
    ];
    if *r.target != Target::Latest {
        for (k, v) in r.target.settings() {
            lines.push(setting(k, &v));
        }
        lines.push(setting("recovery_target_action", r.action));
    }
    if r.no_archive {
        lines.push(setting("archive_mode", "off"));
    }
    let auto = append_auto_conf(pgdata, &(lines.join("\n") + "\n"))?;
    let signal = pgdata.join("recovery.signal");
    write_private(&signal, b"", owner)?;
    give(&auto, owner)?;
    Ok(())
}

/// Appends `text` to `pgdata/postgresql.auto.conf` (created if missing) and syncs it; returns
/// its path. Never through a symlink: the file came out of a base backup, and a crafted one
/// could make it a link to a file elsewhere, which we (perhaps root) would then write and give
/// to the server's user.
pub fn append_auto_conf(pgdata: &Path, text: &str) -> Result<PathBuf> {
    let auto = pgdata.join("postgresql.auto.conf");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&auto);
    let mut f = match f {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
        Err(e) if e.raw_os_error() != Some(libc::ELOOP) => {
            return Err(Error::io_at("cannot write", &auto, &e));
        }
        _ => {
            return Err(Error::integrity(format!(
                "{} is not a file (a symlink, or something else): nothing is written through it",
                auto.display()
            ))
            .with_hint("the base backup was crafted or damaged: fetch another one"));
        }
    };
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io_at("cannot write", &auto, &e))?;
    Ok(auto)
}

/// `name = 'value'` with the value quoted as postgresql.conf wants it.
fn setting(name: &str, value: &str) -> String {
    format!(
        "{name} = '{}'",
        value.replace('\\', "\\\\").replace('\'', "''")
    )
}

/// `'...'` for /bin/sh.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@+".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Writes a file with mode 0600 (replacing an earlier one of ours), then gives it to `owner`.
fn write_private(path: &Path, data: &[u8], owner: Option<(u32, u32)>) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io_at("cannot create", path, &e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io_at("cannot write", path, &e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io_at("cannot set the mode of", path, &e))?;
    give(path, owner)
}

/// Gives `path` itself (never what a symlink there points at) to `owner`.
fn give(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io_at("cannot change the owner of", path, &e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_quoted_for_postgresql_conf() {
        assert_eq!(setting("a", "it's"), "a = 'it''s'");
        assert_eq!(setting("a", r"c:\x"), r"a = 'c:\\x'");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/usr/bin/offsitedb"), "/usr/bin/offsitedb");
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn companions_sit_next_to_the_data_folder() {
        assert_eq!(
            companion(Path::new("/var/lib/pg/restored/"), "toml").unwrap(),
            PathBuf::from("/var/lib/pg/restored.offsitedb.toml")
        );
    }
}
