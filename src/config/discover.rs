/*!
Where the configuration file is. `archive_command`, `restore_command` and systemd units run
OffsiteDB with the data directory or `/` as their working directory, so the file is looked for
where daemons look, not only here:

1. `--config FILE`
2. `OFFSITEDB_CONFIG`
3. `./offsitedb.toml`
4. `$XDG_CONFIG_HOME/offsitedb/offsitedb.toml` (default `~/.config/offsitedb/offsitedb.toml`)
5. `/etc/offsitedb/offsitedb.toml`

The first that exists is used; one given explicitly (1, 2) must exist. `check` and `-v` say
which one was used and why.
*/

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How the configuration file was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    WorkingDir,
    Xdg,
    System,
}

impl Origin {
    pub fn describe(&self) -> &'static str {
        match self {
            Origin::Flag => "given by --config",
            Origin::Env => "given by OFFSITEDB_CONFIG",
            Origin::WorkingDir => "found in the working directory",
            Origin::Xdg => "found in the user's configuration folder",
            Origin::System => "found in /etc/offsitedb",
        }
    }
}

/// The system-wide file (the last place looked).
pub const SYSTEM_FILE: &str = "/etc/offsitedb/offsitedb.toml";

/// The places looked, in order, for messages ("looked in ...").
pub fn candidates(env: &dyn Fn(&str) -> Option<String>) -> Vec<(PathBuf, Origin)> {
    let mut out = vec![(PathBuf::from("offsitedb.toml"), Origin::WorkingDir)];
    let xdg = env("XDG_CONFIG_HOME")
        .filter(|v| Path::new(v).is_absolute())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(d) = xdg {
        out.push((d.join("offsitedb").join("offsitedb.toml"), Origin::Xdg));
    }
    out.push((PathBuf::from(SYSTEM_FILE), Origin::System));
    out
}

/// The configuration file to read, if any: an explicit one (flag, then environment) must exist;
/// otherwise the first of [`candidates`] that exists.
pub fn find(
    flag: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(PathBuf, Origin)>> {
    let explicit = match flag {
        Some(p) => Some((p.to_path_buf(), Origin::Flag)),
        None => env("OFFSITEDB_CONFIG").map(|p| (PathBuf::from(p), Origin::Env)),
    };
    if let Some((p, origin)) = explicit {
        if !p.exists() {
            return Err(Error::config(format!(
                "configuration file {} does not exist ({})",
                p.display(),
                origin.describe()
            )));
        }
        return Ok(Some((p, origin)));
    }
    match candidates(env).into_iter().find(|(p, _)| p.is_file()) {
        Some((p, origin)) => {
            trusted(&p)?;
            Ok(Some((p, origin)))
        }
        None => Ok(None),
    }
}

/// A file found by looking around (not one given explicitly) is used only if nobody else could
/// have put it there: it runs programs (`pg_bin_dirs`) and names where backups go. Refused: a
/// file every user may write, and a file of another user in a folder every user may write (a
/// working directory such as /tmp).
fn trusted(p: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| {
        Err(Error::config(format!("refusing the configuration file {}: {why}", p.display()))
            .with_hint("pass it explicitly (--config FILE or OFFSITEDB_CONFIG) if you trust it, or move it somewhere only its owner can write"))
    };
    let Ok(m) = std::fs::metadata(p) else {
        return Ok(());
    };
    if m.mode() & 0o002 != 0 {
        return refuse(format!(
            "every user may write it (mode {:o})",
            m.mode() & 0o777
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let folder = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if m.uid() != me
        && let Ok(d) = std::fs::metadata(folder)
        && d.mode() & 0o002 != 0
    {
        return refuse(format!(
            "it belongs to another user (uid {}), in a folder every user may write",
            m.uid()
        ));
    }
    Ok(())
}

/// "./offsitedb.toml, ~/.config/offsitedb/offsitedb.toml, /etc/offsitedb/offsitedb.toml", for
/// hints.
pub fn looked_in(env: &dyn Fn(&str) -> Option<String>) -> String {
    candidates(env)
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_anyone_could_have_planted_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let xdg = dir.path().join("offsitedb/offsitedb.toml");
        std::fs::create_dir_all(xdg.parent().unwrap()).unwrap();
        std::fs::write(&xdg, "").unwrap();
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o666)).unwrap();
        let home = dir.path().display().to_string();
        let env = move |k: &str| (k == "XDG_CONFIG_HOME").then(|| home.clone());
        let e = find(None, &env).unwrap_err();
        assert!(e.message().contains("every user may write it"), "{e:?}");
        // Named explicitly, it is the user's choice.
        assert!(find(Some(&xdg), &env).is_ok());
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(find(None, &env).unwrap().is_some());
    }

    #[test]
    fn the_first_that_exists_wins_and_explicit_ones_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let xdg = dir.path().join("xdg");
        let xdg_file = xdg.join("offsitedb/offsitedb.toml");
        let home_file = home.join(".config/offsitedb/offsitedb.toml");
        for f in [&xdg_file, &home_file] {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "").unwrap();
        }
        let vars = |pairs: Vec<(&'static str, PathBuf)>| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.display().to_string())
            }
        };
        // XDG_CONFIG_HOME beats HOME's default.
        let env = vars(vec![
            ("HOME", home.clone()),
            ("XDG_CONFIG_HOME", xdg.clone()),
        ]);
        assert_eq!(
            find(None, &env).unwrap(),
            Some((xdg_file.clone(), Origin::Xdg))
        );
        // A relative XDG_CONFIG_HOME is ignored, as the spec says.
        let env = vars(vec![
            ("HOME", home.clone()),
            ("XDG_CONFIG_HOME", "rel".into()),
        ]);
        assert_eq!(
            find(None, &env).unwrap(),
            Some((home_file.clone(), Origin::Xdg))
        );
        // The environment's file beats discovery, the flag beats the environment.
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "").unwrap();
        let env = vars(vec![
            ("HOME", home.clone()),
            ("OFFSITEDB_CONFIG", other.clone()),
        ]);
        assert_eq!(
            find(None, &env).unwrap(),
            Some((other.clone(), Origin::Env))
        );
        assert_eq!(
            find(Some(&xdg_file), &env).unwrap(),
            Some((xdg_file.clone(), Origin::Flag))
        );
        // Explicit but missing: an error, never a silent fall-through to another file.
        let env = vars(vec![("OFFSITEDB_CONFIG", dir.path().join("nope.toml"))]);
        let e = find(None, &env).unwrap_err();
        assert!(
            e.message()
                .contains("does not exist (given by OFFSITEDB_CONFIG)"),
            "{e:?}"
        );
    }
}
