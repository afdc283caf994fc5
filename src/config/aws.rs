/*!
S3 settings as the AWS tools read them, so a machine already set up for `aws s3` needs nothing
more: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, `AWS_PROFILE` with the
shared files `~/.aws/credentials` and `~/.aws/config` (`AWS_SHARED_CREDENTIALS_FILE`,
`AWS_CONFIG_FILE`), `AWS_REGION` / `AWS_DEFAULT_REGION`, and `AWS_ENDPOINT_URL_S3` /
`AWS_ENDPOINT_URL`.

Precedence follows the rest of OffsiteDB (flags, then environment, then the file), with the shared
files' `default` profile last, as the AWS SDKs fall back to it:

- credentials: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY`; else the profile `AWS_PROFILE`
  names; else `[repository] access_key_id` + `secret_access_key`; else `[repository] profile`;
  else the `default` profile;
- endpoint: `?endpoint=` in the repository URL (wherever the URL comes from: it names this
  repository, the variables a machine's default); else `AWS_ENDPOINT_URL_S3`,
  `AWS_ENDPOINT_URL`; else the profile's `endpoint_url`;
- region: `?region=` in the URL; else `AWS_REGION`, `AWS_DEFAULT_REGION`; else the profile's
  `region` (a provider's endpoint names its own region and wins over both, as before).

The shared files are INI: `[name]` sections in `credentials`, `[default]` and `[profile name]` in
`config`, `key = value` lines, `#` and `;` comments. Nested service sections (`s3 =` followed by
indented lines) are skipped.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::s3::Credentials;

/// One profile's settings, merged from both shared files (credentials file first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub values: BTreeMap<String, String>,
    /// Where it was read, for messages.
    pub files: Vec<PathBuf>,
}

impl Profile {
    fn get(&self, k: &str) -> Option<&str> {
        self.values
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn credentials(&self) -> Option<Credentials> {
        Some(Credentials {
            access_key_id: self.get("aws_access_key_id")?.to_string(),
            secret_access_key: self.get("aws_secret_access_key")?.to_string(),
            session_token: self.get("aws_session_token").map(str::to_string),
        })
    }

    pub fn region(&self) -> Option<&str> {
        self.get("region")
    }

    pub fn endpoint(&self) -> Option<&str> {
        self.get("endpoint_url")
    }
}

/// Where the AWS settings came from, for `check` and `-v`.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    pub credentials: Option<Credentials>,
    pub credentials_from: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// What the configuration file says about credentials.
pub struct FileSettings<'a> {
    pub access_key_id: Option<&'a str>,
    pub secret_access_key: Option<&'a str>,
    pub session_token: Option<&'a str>,
    pub profile: Option<&'a str>,
}

/// Resolves credentials, endpoint and region from the environment (`env`), the shared files and
/// the configuration file.
pub fn resolve(env: &dyn Fn(&str) -> Option<String>, file: &FileSettings<'_>) -> Result<Resolved> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let env_profile = var("AWS_PROFILE").or_else(|| var("AWS_DEFAULT_PROFILE"));
    // An explicitly named profile must exist; the default one may be missing.
    let named = match env_profile.as_deref().or(file.profile) {
        Some(name) => Some(load_profile(name, env)?.ok_or_else(|| {
            Error::config(format!(
                "the AWS profile {name:?} is in neither {} nor {}",
                shown(credentials_file(env)),
                shown(config_file(env))
            ))
            .with_hint(if env_profile.is_some() {
                "set AWS_PROFILE to a profile the files define, or unset it"
            } else {
                "set profile under [repository] to a profile the files define"
            })
        })?),
        None => None,
    };
    let default = match &named {
        Some(_) => None,
        None => load_profile("default", env)?,
    };
    let profile = named.as_ref().or(default.as_ref());

    let mut out = Resolved {
        endpoint: var("AWS_ENDPOINT_URL_S3")
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| profile.and_then(|p| p.endpoint().map(str::to_string))),
        region: var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| profile.and_then(|p| p.region().map(str::to_string))),
        ..Default::default()
    };
    let from_profile = |p: &Profile, why: &str| {
        p.credentials().map(|c| {
            (
                c,
                format!(
                    "the AWS profile {:?} ({why}; {})",
                    p.name,
                    p.files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    };
    let env_keys = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Some((
            Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: var("AWS_SESSION_TOKEN"),
            },
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_string(),
        )),
        _ => None,
    };
    let file_keys = match (file.access_key_id, file.secret_access_key) {
        (Some(id), Some(secret)) => Some((
            Credentials {
                access_key_id: id.to_string(),
                secret_access_key: secret.to_string(),
                session_token: file.session_token.map(str::to_string),
            },
            "access_key_id and secret_access_key in the configuration file".to_string(),
        )),
        _ => None,
    };
    let chosen = env_keys
        .or_else(|| {
            env_profile
                .as_ref()
                .and(named.as_ref())
                .and_then(|p| from_profile(p, "AWS_PROFILE"))
        })
        .or(file_keys)
        .or_else(|| {
            named
                .as_ref()
                .and_then(|p| from_profile(p, "profile in the configuration file"))
        })
        .or_else(|| {
            default
                .as_ref()
                .and_then(|p| from_profile(p, "the default"))
        });
    if let Some((c, from)) = chosen {
        out.credentials = Some(c);
        out.credentials_from = Some(from);
    }
    Ok(out)
}

/// The home folder; without one, the shared files are not looked for (never relative to
/// wherever we run).
fn home(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("HOME")
        .filter(|h| Path::new(h).is_absolute())
        .map(PathBuf::from)
}

pub fn credentials_file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("AWS_SHARED_CREDENTIALS_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home(env).map(|h| h.join(".aws/credentials")))
}

pub fn config_file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("AWS_CONFIG_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home(env).map(|h| h.join(".aws/config")))
}

/// The profile `name` from the shared files; `None` when neither defines it.
fn load_profile(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Profile>> {
    let mut p = Profile {
        name: name.to_string(),
        ..Default::default()
    };
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    let mut found = false;
    for (path, section) in [
        (credentials_file(env), name.to_string()),
        (config_file(env), config_section),
    ] {
        let Some(path) = path else { continue };
        let Some(text) = read_optional(&path)? else {
            continue;
        };
        let sections = parse_ini(&text);
        if let Some(values) = sections.get(&section) {
            found = true;
            p.files.push(path.clone());
            for (k, v) in values {
                // The credentials file wins over the config file.
                p.values.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    Ok(found.then_some(p))
}

fn shown(p: Option<PathBuf>) -> String {
    p.map_or("(no HOME: no AWS shared file)".to_string(), |p| {
        p.display().to_string()
    })
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io_at("cannot read the AWS settings file", path, &e)),
    }
}

/// `[section]` → `key = value`, as the AWS CLI reads it (keys lowercased; nested service
/// sections skipped).
pub fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let indented = line.starts_with([' ', '\t']);
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        if indented {
            // A nested `s3 =` block's lines: service-specific settings we do not read.
            continue;
        }
        let (Some(section), Some((k, v))) = (&current, t.split_once('=')) else {
            continue;
        };
        out.entry(section.clone())
            .or_default()
            .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env(Vec<(String, String)>);
    impl Env {
        fn get(&self, k: &str) -> Option<String> {
            self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        }
    }

    const NO_FILE: FileSettings<'static> = FileSettings {
        access_key_id: None,
        secret_access_key: None,
        session_token: None,
        profile: None,
    };

    fn setup() -> (tempfile::TempDir, Vec<(String, String)>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(".aws")).unwrap();
        std::fs::write(
            d.path().join(".aws/credentials"),
            "# comment\n[default]\naws_access_key_id = DEFAULTID\naws_secret_access_key = defaultsecret\n\n\
             [b2]\naws_access_key_id=B2ID\naws_secret_access_key=b2secret\naws_session_token = tok\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n[profile b2]\nregion = us-west-004\n\
             endpoint_url = https://s3.us-west-004.backblazeb2.com\ns3 =\n  addressing_style = path\n\
             [profile keysonly]\naws_access_key_id = CFGID\naws_secret_access_key = cfgsecret\n",
        )
        .unwrap();
        let home = d.path().display().to_string();
        (d, vec![("HOME".into(), home)])
    }

    fn run(vars: &[(String, String)], file: &FileSettings<'_>) -> Result<Resolved> {
        let env = Env(vars.to_vec());
        resolve(&|k| env.get(k), file)
    }

    #[test]
    fn the_default_profile_is_the_fallback() {
        let (_d, vars) = setup();
        let r = run(&vars, &NO_FILE).unwrap();
        assert_eq!(r.credentials.unwrap().access_key_id, "DEFAULTID");
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));
        assert_eq!(r.endpoint, None);
    }

    #[test]
    fn aws_profile_picks_a_profile_from_both_files() {
        let (_d, mut vars) = setup();
        vars.push(("AWS_PROFILE".into(), "b2".into()));
        let r = run(&vars, &NO_FILE).unwrap();
        let c = r.credentials.unwrap();
        assert_eq!(c.access_key_id, "B2ID");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert_eq!(r.region.as_deref(), Some("us-west-004"));
        assert_eq!(
            r.endpoint.as_deref(),
            Some("https://s3.us-west-004.backblazeb2.com")
        );
        assert!(r.credentials_from.unwrap().contains("\"b2\""));
        // Credentials may live in the config file alone.
        let (_d, mut vars) = setup();
        vars.push(("AWS_PROFILE".into(), "keysonly".into()));
        assert_eq!(
            run(&vars, &NO_FILE)
                .unwrap()
                .credentials
                .unwrap()
                .access_key_id,
            "CFGID"
        );
    }

    #[test]
    fn precedence_environment_then_file_then_default_profile() {
        let (_d, vars) = setup();
        let file = FileSettings {
            access_key_id: Some("FILEID"),
            secret_access_key: Some("filesecret"),
            session_token: None,
            profile: None,
        };
        // The file beats the default profile.
        assert_eq!(
            run(&vars, &file)
                .unwrap()
                .credentials
                .unwrap()
                .access_key_id,
            "FILEID"
        );
        // AWS_PROFILE (environment) beats the file.
        let mut with_profile = vars.clone();
        with_profile.push(("AWS_PROFILE".into(), "b2".into()));
        assert_eq!(
            run(&with_profile, &file)
                .unwrap()
                .credentials
                .unwrap()
                .access_key_id,
            "B2ID"
        );
        // Keys in the environment beat everything.
        let mut with_keys = with_profile.clone();
        with_keys.push(("AWS_ACCESS_KEY_ID".into(), "ENVID".into()));
        with_keys.push(("AWS_SECRET_ACCESS_KEY".into(), "envsecret".into()));
        with_keys.push(("AWS_REGION".into(), "ap-south-1".into()));
        with_keys.push(("AWS_ENDPOINT_URL".into(), "http://generic".into()));
        with_keys.push(("AWS_ENDPOINT_URL_S3".into(), "http://s3only".into()));
        let r = run(&with_keys, &file).unwrap();
        assert_eq!(r.credentials.unwrap().access_key_id, "ENVID");
        assert_eq!(r.region.as_deref(), Some("ap-south-1"));
        assert_eq!(r.endpoint.as_deref(), Some("http://s3only"));
        // A profile named in the file is used when nothing in the environment says otherwise.
        let file = FileSettings {
            profile: Some("b2"),
            ..NO_FILE
        };
        assert_eq!(
            run(&vars, &file)
                .unwrap()
                .credentials
                .unwrap()
                .access_key_id,
            "B2ID"
        );
    }

    #[test]
    fn a_named_profile_that_does_not_exist_is_an_error() {
        let (_d, mut vars) = setup();
        vars.push(("AWS_PROFILE".into(), "nope".into()));
        let e = run(&vars, &NO_FILE).unwrap_err();
        assert!(e.message().contains("\"nope\""), "{e:?}");
        // No files at all and no profile named: nothing, and no error.
        let empty = tempfile::tempdir().unwrap();
        let r = run(
            &[("HOME".into(), empty.path().display().to_string())],
            &NO_FILE,
        )
        .unwrap();
        assert!(r.credentials.is_none() && r.region.is_none());
    }
}
