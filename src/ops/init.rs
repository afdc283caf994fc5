/*!
`offsitedb init`: writes a first `offsitedb.toml` (a source, the repository, a new key file, a
schedule and retention) from answers or flags; the CLI then runs `check` on it.

The file is written mode 0600 when it holds a secret (a password in the database URL, an S3
secret), and never over an existing file unless asked. Every value is validated the way the
configuration loader will read it, so a file `init` writes always loads.
*/

use std::path::{Path, PathBuf};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::postgres::ConnInfo;

#[derive(Clone, Debug, Default)]
pub struct Answers {
    pub name: String,
    pub source_url: String,
    pub repo: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub schedule: String,
    pub keep: String,
    /// Where the new master key goes (relative paths: next to the configuration file).
    pub key_file: PathBuf,
}

/// TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `$` starts an interpolation in the configuration: a literal one is written `$$`.
fn literal(s: &str) -> String {
    quote(&s.replace("${", "$${"))
}

/// Checks the answers and renders the configuration file.
pub fn render(a: &Answers) -> Result<String> {
    crate::catalog::check_source_name(&a.name)?;
    ConnInfo::parse(&a.source_url).map_err(|e| e.context("the database URL"))?;
    crate::storage::Location::parse(&a.repo, None).map_err(|e| e.context("the repository"))?;
    crate::schedule::Schedule::parse(&a.schedule, None)?;
    let keep = crate::retention::parse_rules(&a.keep)?;
    let mut s = String::from(
        "# Written by offsitedb init. Secrets may also come from the environment: url = \"${DATABASE_URL}\".\n\n[repository]\n",
    );
    s.push_str(&format!("url = {}\n", literal(&a.repo)));
    if let (Some(id), Some(secret)) = (&a.access_key_id, &a.secret_access_key) {
        s.push_str(&format!(
            "access_key_id = {}\nsecret_access_key = {}\n",
            literal(id),
            literal(secret)
        ));
    }
    s.push_str(&format!(
        "key_file = {}\n\n[[source]]\nname = {}\nurl = {}\nschedule = {}\nkeep = {{ {} }}\n",
        literal(&a.key_file.display().to_string()),
        literal(&a.name),
        literal(&a.source_url),
        literal(&a.schedule),
        keep_table(&keep)
    ));
    // What the loader reads must be what was meant.
    let parsed = crate::config::parse(&s, "offsitedb.toml", &|_| None)?;
    debug_assert_eq!(parsed.sources[0].name, a.name);
    Ok(s)
}

fn keep_table(k: &crate::retention::Keep) -> String {
    [
        ("last", k.last),
        ("hourly", k.hourly),
        ("daily", k.daily),
        ("weekly", k.weekly),
        ("monthly", k.monthly),
        ("yearly", k.yearly),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} = {n}"))
    .collect::<Vec<_>>()
    .join(", ")
}

/// Writes the key file (new) and the configuration file. Returns the key's id.
pub fn write(config: &Path, a: &Answers, force: bool) -> Result<String> {
    let text = render(a)?;
    if config.exists() && !force {
        return Err(
            Error::config(format!("{} already exists", config.display()))
                .with_hint("pass --force to replace it, or --config to write another file"),
        );
    }
    let base = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let key_path = if a.key_file.is_relative() {
        base.join(&a.key_file)
    } else {
        a.key_file.clone()
    };
    let key_id = if key_path.exists() {
        // An existing key is used, not replaced: it may already hold a repository's backups.
        MasterKey::load_file(&key_path, &mut |_| {})?
            .id()
            .to_string()
    } else {
        let k = MasterKey::generate()?;
        k.write_new_file(&key_path)?;
        k.id().to_string()
    };
    let ci = ConnInfo::parse(&a.source_url)?;
    let secret = ci.get("password").is_some()
        || ci.get("sslpassword").is_some()
        || a.secret_access_key.is_some();
    write_file(config, &text, if secret { 0o600 } else { 0o644 })?;
    Ok(key_id)
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io_at("cannot create", path, &e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io_at("cannot write", path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> Answers {
        Answers {
            name: "app".into(),
            source_url: "postgres://u:p\"w$@db.example.com/app".into(),
            repo: "s3://bucket/prefix?endpoint=https://s3.example.com".into(),
            access_key_id: Some("id".into()),
            secret_access_key: Some("se${cret".into()),
            schedule: "daily at 03:00".into(),
            keep: "daily=7,weekly=4,monthly=12".into(),
            key_file: "master.key".into(),
        }
    }

    #[test]
    fn renders_a_file_the_loader_reads_back_exactly() {
        let text = render(&answers()).unwrap();
        let c = crate::config::parse(&text, "t", &|_| None).unwrap();
        assert_eq!(
            c.sources[0].url.as_ref().unwrap().expose(),
            "postgres://u:p\"w$@db.example.com/app"
        );
        let r = c.repository.unwrap();
        assert_eq!(r.secret_access_key.unwrap().expose(), "se${cret");
        assert_eq!(c.sources[0].schedule.as_deref(), Some("daily at 03:00"));
        assert!(
            text.contains("keep = { daily = 7, weekly = 4, monthly = 12 }"),
            "{text}"
        );
    }

    #[test]
    fn bad_answers_are_refused() {
        for f in [
            |a: &mut Answers| a.name = "a/b".into(),
            |a: &mut Answers| a.source_url = "mysql://x".into(),
            |a: &mut Answers| a.schedule = "sometimes".into(),
            |a: &mut Answers| a.keep = "".into(),
        ] {
            let mut a = answers();
            f(&mut a);
            assert!(render(&a).is_err(), "{a:?}");
        }
    }
}
