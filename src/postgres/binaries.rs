/*!
Finding PostgreSQL's programs. pg_dump must be at least as new as the server it dumps, and
pg_restore at least as new as the pg_dump that wrote the archive; among those we take the lowest
major (its output is the most widely restorable). Throwaway clusters want the server programs of
one exact major.

Places searched, in order: configured directories (`pg_bin_dirs`, `OFFSITEDB_PG_BIN_DIRS`),
`/usr/lib/postgresql/*/bin` (Debian, Ubuntu), `/usr/pgsql-*/bin` (RHEL), `/usr/local/pgsql/bin`,
then `PATH`. Debian's `pg_wrapper` shims are skipped: they pick a version by their own rules.
*/

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgProgram {
    pub path: PathBuf,
    /// e.g. "15.18"
    pub version: String,
    pub major: u32,
}

/// The directories to search: `OFFSITEDB_PG_BIN_DIRS`, then `pg_bin_dirs` of the file, then the
/// usual places and PATH.
pub fn search_dirs(configured: &[PathBuf]) -> Vec<PathBuf> {
    // The environment before the file, as for every setting.
    let mut dirs: Vec<PathBuf> = std::env::var("OFFSITEDB_PG_BIN_DIRS")
        .map(|env| {
            env.split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    dirs.extend(configured.iter().cloned());
    for pattern_root in ["/usr/lib/postgresql", "/usr"] {
        if let Ok(entries) = std::fs::read_dir(pattern_root) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (pattern_root == "/usr/lib/postgresql" || name.starts_with("pgsql-"))
                        .then(|| e.path().join("bin"))
                })
                .collect();
            found.sort();
            dirs.extend(found);
        }
    }
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// Every distinct, runnable copy of `tool` in `dirs`, with its version.
pub fn find_all(tool: &str, dirs: &[PathBuf]) -> Vec<PgProgram> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for d in dirs {
        let p = d.join(tool);
        let Ok(real) = std::fs::canonicalize(&p) else {
            continue;
        };
        if real.file_name().is_some_and(|n| n == "pg_wrapper") || !seen.insert(real.clone()) {
            continue;
        }
        if let Some(prog) = probe(&p) {
            out.push(prog);
        }
    }
    out
}

/// Runs `tool --version` once per path per process.
fn probe(path: &Path) -> Option<PgProgram> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Option<PgProgram>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap().get(path) {
        return hit.clone();
    }
    let result = crate::process::command(path)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| parse_version_output(&String::from_utf8_lossy(&o.stdout)))
        .map(|(version, major)| PgProgram {
            path: path.to_path_buf(),
            version,
            major,
        });
    cache
        .lock()
        .unwrap()
        .insert(path.to_path_buf(), result.clone());
    result
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → ("15.18", 15).
pub fn parse_version_output(s: &str) -> Option<(String, u32)> {
    let after = s.split(')').nth(1)?.trim();
    let version = after.split_whitespace().next()?;
    let major: u32 = version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    (major >= 10).then(|| (version.to_string(), major))
}

/// The lowest major of `tool` that is at least `min_major`. `why` says what needs it, for the
/// error ("the server at postgres://… runs PostgreSQL 17.2").
pub fn pick(tool: &str, min_major: u32, dirs: &[PathBuf], why: &str) -> Result<PgProgram> {
    let all = find_all(tool, dirs);
    if let Some(best) = all
        .iter()
        .filter(|p| p.major >= min_major)
        .min_by_key(|p| p.major)
    {
        return Ok(best.clone());
    }
    let found = if all.is_empty() {
        "none is installed".to_string()
    } else {
        let mut v: Vec<String> = all
            .iter()
            .map(|p| format!("{} ({})", p.major, p.path.display()))
            .collect();
        v.dedup();
        format!("found only {}", v.join(", "))
    };
    Err(Error::tool(format!(
        "no {tool} of PostgreSQL {min_major} or newer: {why}; {found}"
    ))
    .with_hint(format!(
        "install the PostgreSQL {min_major} client (Debian/Ubuntu: apt-get install postgresql-client-{min_major} \
         from apt.postgresql.org), or list its bin directory in OFFSITEDB_PG_BIN_DIRS"
    )))
}

/// The directory holding the server programs (initdb, postgres) of exactly `major`, or of the
/// newest major when `major` is `None`.
pub fn server_dir(major: Option<u32>, dirs: &[PathBuf]) -> Result<PgProgram> {
    let all: Vec<PgProgram> = find_all("postgres", dirs)
        .into_iter()
        .filter(|p| p.path.with_file_name("initdb").exists())
        .collect();
    let pick = match major {
        Some(m) => all.iter().find(|p| p.major == m),
        None => all.iter().max_by_key(|p| p.major),
    };
    match pick {
        Some(p) => Ok(p.clone()),
        None => {
            let want = major.map_or("any version".to_string(), |m| format!("PostgreSQL {m}"));
            let have: Vec<String> = all.iter().map(|p| p.major.to_string()).collect();
            Err(Error::tool(format!(
                "no PostgreSQL server programs (initdb, postgres) for {want}{}",
                if have.is_empty() {
                    String::new()
                } else {
                    format!("; found {}", have.join(", "))
                }
            ))
            .with_hint(match major {
                Some(m) => format!("install postgresql-{m} (apt), or list its bin directory in OFFSITEDB_PG_BIN_DIRS"),
                None => "install PostgreSQL (apt-get install postgresql), or list its bin directory in OFFSITEDB_PG_BIN_DIRS".to_string(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_lines() {
        let cases = [
            (
                "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n",
                Some(("15.18", 15)),
            ),
            ("pg_restore (PostgreSQL) 18.1\n", Some(("18.1", 18))),
            ("postgres (PostgreSQL) 17beta2\n", Some(("17beta2", 17))),
            ("pg_dump (PostgreSQL) 9.6.24\n", None),
            ("garbage", None),
        ];
        for (line, want) in cases {
            let got = parse_version_output(line);
            assert_eq!(got.as_ref().map(|(v, m)| (v.as_str(), *m)), want, "{line}");
        }
    }

    #[test]
    fn finds_the_installed_pg_dump() {
        // The machine running the tests has at least one PostgreSQL client installed
        // (the test command installs it).
        let all = find_all("pg_dump", &search_dirs(&[]));
        assert!(!all.is_empty(), "no pg_dump found");
        let lowest = all.iter().map(|p| p.major).min().unwrap();
        let p = pick("pg_dump", lowest, &search_dirs(&[]), "test").unwrap();
        assert_eq!(p.major, lowest);
        let e = pick(
            "pg_dump",
            99,
            &search_dirs(&[]),
            "the server runs PostgreSQL 99.0",
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Tool);
        assert!(e.message().contains("PostgreSQL 99"), "{e}");
        assert!(e.hint().unwrap().contains("postgresql-client-99"));
    }
}
