//! `offsitedb init`: asks for what the flags did not give (on a terminal, or with
//! `--interactive`), writes the configuration through the library, then runs `check`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use offsitedb::Error;
use offsitedb::config::{Overrides, Settings};
use offsitedb::ops::init::{Answers, write};

use super::Global;

/// Write a first offsitedb.toml (source, repository, new key, schedule, retention), then check it
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The database URL (postgres://user:password@host:5432/db)
    #[arg(long, alias = "source", value_name = "URL")]
    pub source_url: Option<String>,
    /// A name for the source (default: the database's name)
    #[arg(long)]
    pub name: Option<String>,
    /// S3 access key id (default: AWS_ACCESS_KEY_ID, else not written)
    #[arg(long)]
    pub access_key_id: Option<String>,
    /// S3 secret access key (default: AWS_SECRET_ACCESS_KEY, else not written)
    #[arg(long)]
    pub secret_access_key: Option<String>,
    /// When backups run
    #[arg(long)]
    pub schedule: Option<String>,
    /// Retention, e.g. "daily=7,weekly=4,monthly=12"
    #[arg(long)]
    pub keep: Option<String>,
    /// Replace an existing configuration file
    #[arg(long)]
    pub force: bool,
    /// Do not run check afterwards
    #[arg(long)]
    pub no_check: bool,
    /// Ask for missing values even when standard input is not a terminal
    #[arg(long)]
    pub interactive: bool,
}

const SCHEDULE: &str = "daily at 03:00";
const KEEP: &str = "daily=7,weekly=4,monthly=12";

struct Asker {
    on: bool,
    lines: std::io::StdinLock<'static>,
}

impl Asker {
    /// The answer to `question` (the default when empty); `check` says why an answer is refused,
    /// and the question is asked again.
    fn ask(
        &mut self,
        question: &str,
        default: Option<&str>,
        secret: bool,
        check: &dyn Fn(&str) -> std::result::Result<(), String>,
    ) -> Result<String> {
        loop {
            match default {
                Some(d) => eprint!("{question} [{d}]: "),
                None => eprint!("{question}: "),
            }
            let _ = std::io::stderr().flush();
            let echo_off = secret && std::io::stdin().is_terminal();
            if echo_off {
                set_echo(false);
            }
            let mut line = String::new();
            let n = self.lines.read_line(&mut line);
            if echo_off {
                set_echo(true);
                eprintln!();
            }
            if n.map_err(|e| Error::from_io(e, "cannot read the answer"))? == 0 {
                return Err(Error::config("no answer (end of input)")
                    .with_hint("give the values as flags: offsitedb init --help")
                    .into());
            }
            let answer = line.trim();
            let answer = if answer.is_empty() {
                default.unwrap_or("").to_string()
            } else {
                answer.to_string()
            };
            match check(&answer) {
                Ok(()) => return Ok(answer),
                Err(why) => eprintln!("  {why}"),
            }
        }
    }
}

fn set_echo(on: bool) {
    // SAFETY: termios calls on our own standard input; a failure leaves the terminal as it was.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) == 0 {
            if on {
                t.c_lflag |= libc::ECHO;
            } else {
                t.c_lflag &= !libc::ECHO;
            }
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
    }
}

fn err_text(e: Error) -> String {
    match e.hint() {
        Some(h) => format!("{} ({h})", e.message()),
        None => e.message().to_string(),
    }
}

pub fn run(f: Args, g: &Global) -> Result<()> {
    let then_check = !f.no_check;
    // Where later commands will look first: --config, then OFFSITEDB_CONFIG.
    let config = g
        .config
        .clone()
        .or_else(|| {
            std::env::var_os("OFFSITEDB_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("offsitedb.toml"));
    // Paths typed on the command line mean what they meant where they were typed, not next to
    // the file (the file's own defaults, like master.key, do go next to it).
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    if config.exists() && !f.force {
        return Err(
            Error::config(format!("{} already exists", config.display()))
                .with_hint("pass --force to replace it, or --config to write another file")
                .into(),
        );
    }
    let mut a = Asker {
        on: f.interactive || std::io::stdin().is_terminal(),
        lines: std::io::stdin().lock(),
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut missing = Vec::new();
    let source_url = match f.source_url {
        Some(u) => u,
        None if a.on => a.ask(
            "Database URL (postgres://user:password@host:5432/db)",
            None,
            true,
            &|s| {
                offsitedb::postgres::ConnInfo::parse(s)
                    .map(|_| ())
                    .map_err(err_text)
            },
        )?,
        None => {
            missing.push("--source-url");
            String::new()
        }
    };
    let repo_flag = g.repo.clone().map(|r| {
        if r.contains("://") {
            r
        } else {
            absolute(PathBuf::from(r)).display().to_string()
        }
    });
    let repo = match repo_flag {
        Some(r) => r,
        None if a.on => a.ask(
            "Repository (s3://bucket/prefix?endpoint=https://..., or a folder)",
            None,
            false,
            &|s| {
                offsitedb::storage::Location::parse(s, None)
                    .map(|_| ())
                    .map_err(err_text)
            },
        )?,
        None => {
            missing.push("--repo");
            String::new()
        }
    };
    if !missing.is_empty() {
        return Err(Error::config(format!("missing {}", missing.join(" and ")))
            .with_hint("run offsitedb init on a terminal to be asked, or pass them as flags")
            .into());
    }
    let default_name = offsitedb::postgres::ConnInfo::parse(&source_url)
        .map(|c| c.dbname())
        .ok()
        .filter(|n| offsitedb::catalog::check_source_name(n).is_ok())
        .unwrap_or_else(|| "db".into());
    let name = match f.name {
        Some(n) => n,
        None if a.on => a.ask("Name for this source", Some(&default_name), false, &|s| {
            offsitedb::catalog::check_source_name(s).map_err(err_text)
        })?,
        None => default_name,
    };
    let s3 = repo.starts_with("s3://");
    let access_key_id = f.access_key_id.or_else(|| env("AWS_ACCESS_KEY_ID"));
    let secret_access_key = f.secret_access_key.or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    let (access_key_id, secret_access_key) = match (access_key_id, secret_access_key) {
        (Some(i), Some(s)) => (Some(i), Some(s)),
        _ if s3 && a.on => (
            Some(a.ask("S3 access key id", None, false, &|s| {
                if s.is_empty() {
                    Err("an access key id is needed".into())
                } else {
                    Ok(())
                }
            })?),
            Some(a.ask("S3 secret access key", None, true, &|s| {
                if s.is_empty() {
                    Err("a secret is needed".into())
                } else {
                    Ok(())
                }
            })?),
        ),
        _ => (None, None),
    };
    let schedule = match f.schedule {
        Some(s) => s,
        None if a.on => a.ask(
            "Schedule (hourly, daily at HH:MM, every 6h, or cron)",
            Some(SCHEDULE),
            false,
            &|s| {
                offsitedb::schedule::Schedule::parse(s, None)
                    .map(|_| ())
                    .map_err(err_text)
            },
        )?,
        None => SCHEDULE.into(),
    };
    let keep = match f.keep {
        Some(k) => k,
        None if a.on => a.ask("Retention", Some(KEEP), false, &|s| {
            offsitedb::retention::parse_rules(s)
                .map(|_| ())
                .map_err(err_text)
        })?,
        None => KEEP.into(),
    };
    let answers = Answers {
        name,
        source_url,
        repo,
        access_key_id,
        secret_access_key,
        schedule,
        keep,
        key_file: g
            .key_file
            .clone()
            .map(absolute)
            .unwrap_or_else(|| PathBuf::from("master.key")),
    };
    let key_id = write(&config, &answers, f.force)?;
    crate::output::info(&format!(
        "wrote {} and the key {} (key id {key_id})",
        config.display(),
        answers.key_file.display()
    ));
    crate::output::info(
        "keep a copy of the key somewhere other than the backup bucket: without it no backup can be restored",
    );
    if !then_check {
        if g.json {
            super::print_json(&serde_json::json!({
                "config": config.display().to_string(),
                "key_file": answers.key_file.display().to_string(),
                "key_id": key_id.to_string(),
            }))?;
        }
        return Ok(());
    }
    crate::output::info("checking it (offsitedb check):");
    let settings = Settings::load(
        Overrides {
            config: Some(config),
            repo: None,
            key_file: None,
        },
        &mut |w| crate::output::warn(&w),
    )?;
    super::check::check(&settings, super::SourceArgs::default(), g.json)
}
