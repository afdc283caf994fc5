/*!
The one way OffsiteDB runs a child process (pg_dump, pg_restore, initdb, postgres), after
ripgrep's `CommandReader`: stdout is handed to the caller as a stream, stderr is drained on its own
thread (so a chatty child can never deadlock on a full pipe) keeping its last lines, and a non-zero
exit becomes an error that carries the child's own words. A child that is dropped before it was
waited for is killed and reaped: no orphan keeps a database connection open.
*/

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

const TAIL_LINES: usize = 40;
/// Error lines kept apart from the tail: pg_restore can report many, and each one matters.
const ERROR_LINES: usize = 500;

pub struct ChildProcess {
    name: String,
    child: Child,
    stderr: Option<JoinHandle<(Vec<String>, Vec<String>)>>,
    stdout_drain: Option<JoinHandle<()>>,
    waited: bool,
}

/// How a child ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    /// Its last lines of stderr.
    pub stderr: Vec<String>,
    /// Every `error:` line it printed (up to 500), with the line that follows each (the
    /// statement that failed, or a detail).
    pub errors: Vec<String>,
}

impl Exit {
    /// The line that best says what went wrong: the last `error:`/`FATAL:` line, else the last line.
    pub fn reason(&self) -> String {
        let pick = self
            .stderr
            .iter()
            .rev()
            .find(|l| l.contains("error:") || l.contains("FATAL:") || l.contains("ERROR:"))
            .or_else(|| self.stderr.iter().rev().find(|l| !l.trim().is_empty()));
        match pick {
            Some(l) => l.trim().to_string(),
            None => describe_status(self.status),
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.join("\n")
    }
}

/// Environment variables a child may inherit. Everything else (the master key in `OFFSITEDB_KEY`,
/// S3 secrets, any variable the configuration file interpolates) stays with us: children such as
/// a throwaway PostgreSQL may run as another user, who could read their environment.
const INHERITED: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "TZ", "TMPDIR"];

/// libpq variables a child does not get: the password (callers pass it explicitly), and those
/// that would shape its session behind our back: a `TimeZone` or `DateStyle` in pg_dump's
/// session that our own connection (which reads no `PG*` variable) did not record changes the
/// text the drills hash, and a service file can carry such options too.
const WITHHELD: &[&str] = &[
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGTZ",
    "PGDATESTYLE",
    "PGCLIENTENCODING",
    "PGGEQO",
    "PGPASSWORD",
];

/// A `Command` with a cleaned environment (see [`child_env`]).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    cmd.envs(child_env(std::env::vars_os()));
    cmd
}

/// What a child gets of `parent`: the variables in [`INHERITED`], libpq's connection variables
/// (`PG*`, less [`WITHHELD`]), and `LC_ALL=C`:
/// we read our children's messages (pg_restore's `error:` lines decide whether a drill passes),
/// and a translated message must not read as no message at all.
pub fn child_env(
    parent: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env: Vec<_> = parent
        .filter(|(k, _)| {
            k.to_str().is_some_and(|name| {
                INHERITED.contains(&name) || (name.starts_with("PG") && !WITHHELD.contains(&name))
            })
        })
        .collect();
    env.push(("LC_ALL".into(), "C".into()));
    env
}

/// Grows a pipe's buffer from 64 KiB to 1 MiB (the unprivileged maximum): a child streaming
/// gigabytes then wakes us 16 times less often. Best effort.
fn widen_pipe(p: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a pipe descriptor we own; failure is harmless.
    unsafe {
        libc::fcntl(p.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

pub fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown exit".into(),
    }
}

impl ChildProcess {
    /// Starts `cmd` with stdout piped (take it with `take_stdout`, or drain it), stderr captured,
    /// and stdin piped when `with_stdin`.
    pub fn spawn(mut cmd: Command, name: &str, with_stdin: bool) -> Result<Self> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if with_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::tool(format!("cannot run {program}: not found"))
            } else {
                Error::process(format!(
                    "cannot start {program}: {}",
                    crate::error::describe_io(&e)
                ))
            }
        })?;
        let stderr = child.stderr.take().map(|err| {
            std::thread::Builder::new()
                .name(format!("{name}-stderr"))
                .spawn(move || {
                    let mut tail = VecDeque::with_capacity(TAIL_LINES);
                    let mut errors = Vec::new();
                    let mut after_error = false;
                    for line in BufReader::new(err).split(b'\n').map_while(|l| l.ok()) {
                        let line = String::from_utf8_lossy(&line).trim_end().to_string();
                        let is_error = line.contains("error:");
                        if (is_error || after_error) && errors.len() < ERROR_LINES {
                            errors.push(line.clone());
                        }
                        after_error = is_error;
                        if tail.len() == TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                    (tail.into_iter().collect(), errors)
                })
                .expect("spawn stderr thread")
        });
        Ok(ChildProcess {
            name: name.to_string(),
            child,
            stderr,
            stdout_drain: None,
            waited: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdout(&mut self) -> ChildStdout {
        let out = self.child.stdout.take().expect("stdout taken once");
        widen_pipe(&out);
        out
    }

    pub fn take_stdin(&mut self) -> ChildStdin {
        let input = self.child.stdin.take().expect("stdin piped and taken once");
        widen_pipe(&input);
        input
    }

    /// Reads and discards stdout on a thread (for children whose output we do not need).
    pub fn drain_stdout(&mut self) {
        if let Some(mut out) = self.child.stdout.take() {
            self.stdout_drain = Some(
                std::thread::Builder::new()
                    .name(format!("{}-stdout", self.name))
                    .spawn(move || {
                        let _ = std::io::copy(&mut out, &mut std::io::sink());
                    })
                    .expect("spawn stdout thread"),
            );
        }
    }

    /// Waits for the child and returns how it ended, success or not.
    pub fn wait_exit(mut self) -> Result<Exit> {
        self.child.stdin.take();
        let status = self
            .child
            .wait()
            .map_err(|e| Error::process(format!("cannot wait for {}: {e}", self.name)))?;
        self.waited = true;
        if let Some(h) = self.stdout_drain.take() {
            let _ = h.join();
        }
        let (stderr, errors) = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok(Exit {
            status,
            stderr,
            errors,
        })
    }

    /// Waits; a non-zero exit is an error of kind `Process` quoting the child's stderr.
    pub fn wait(self) -> Result<Exit> {
        let name = self.name.clone();
        let exit = self.wait_exit()?;
        if exit.status.success() {
            Ok(exit)
        } else {
            Err(Error::process(format!("{name} failed: {}", exit.reason())))
        }
    }

    /// Sends a signal (e.g. SIGINT for a fast PostgreSQL shutdown).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; the pid cannot be reused before we reap it.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// True once the child has exited (it is then reaped; `wait_exit` still returns its stderr).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(mut self) -> Exit {
        let _ = self.child.kill();
        self.wait_exit().unwrap_or_else(|_| Exit {
            status: std::os::unix::process::ExitStatusExt::from_raw(9),
            stderr: Vec::new(),
            errors: Vec::new(),
        })
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn streams_stdout_and_reports_success() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; echo note >&2"]);
        let mut c = ChildProcess::spawn(cmd, "sh", false).unwrap();
        let mut out = String::new();
        c.take_stdout().read_to_string(&mut out).unwrap();
        let exit = c.wait().unwrap();
        assert_eq!(out, "hello\n");
        assert_eq!(exit.stderr, ["note"]);
    }

    #[test]
    fn failure_quotes_the_error_line() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo 'x: error: it broke' >&2; echo 'detail' >&2; exit 3",
        ]);
        let mut c = ChildProcess::spawn(cmd, "x", false).unwrap();
        c.drain_stdout();
        let e = c.wait().unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Process);
        assert_eq!(e.message(), "x failed: x: error: it broke");
    }

    #[test]
    fn a_flood_of_stderr_cannot_deadlock() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "i=0; while [ $i -lt 20000 ]; do echo line $i >&2; i=$((i+1)); done; echo done",
        ]);
        let mut c = ChildProcess::spawn(cmd, "sh", false).unwrap();
        let mut out = String::new();
        c.take_stdout().read_to_string(&mut out).unwrap();
        let exit = c.wait().unwrap();
        assert_eq!(out, "done\n");
        assert_eq!(exit.stderr.len(), TAIL_LINES);
        assert_eq!(exit.stderr.last().unwrap(), "line 19999");
    }

    #[test]
    fn children_do_not_inherit_secrets() {
        // SAFETY: tests in this module do not read these variables concurrently.
        unsafe {
            std::env::set_var("OFFSITEDB_KEY", "secret-key-material");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "secret-s3");
            std::env::set_var("PGPASSWORD", "secret-pw");
            std::env::set_var("PGCONNECT_TIMEOUT", "7");
        }
        let mut cmd = command("env");
        cmd.arg("-0");
        let mut c = ChildProcess::spawn(cmd, "env", false).unwrap();
        let mut out = String::new();
        c.take_stdout().read_to_string(&mut out).unwrap();
        c.wait().unwrap();
        assert!(!out.contains("secret"), "{out}");
        assert!(out.contains("PGCONNECT_TIMEOUT=7"));
        assert!(out.contains("PATH="));
    }

    /// A German locale or a `TimeZone` in `PGOPTIONS` must not reach pg_dump or pg_restore: their
    /// `error:` lines decide drills, and their session shapes the text the drills hash.
    #[test]
    fn children_speak_english_in_a_session_like_ours() {
        let parent = [
            ("LANG", "de_DE.UTF-8"),
            ("LC_ALL", "de_DE.UTF-8"),
            ("LC_MESSAGES", "de_DE.UTF-8"),
            ("LANGUAGE", "de"),
            ("PGOPTIONS", "-c TimeZone=America/New_York"),
            ("PGTZ", "Asia/Tokyo"),
            ("PGSERVICE", "prod"),
            ("PGSSLROOTCERT", "/etc/ca.pem"),
            ("PATH", "/usr/bin"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let env = child_env(parent.into_iter());
        let got: Vec<(&str, &str)> = env
            .iter()
            .map(|(k, v)| (k.to_str().unwrap(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("PGSSLROOTCERT", "/etc/ca.pem"),
                ("PATH", "/usr/bin"),
                ("LC_ALL", "C")
            ]
        );
    }

    #[test]
    fn missing_programs_are_tool_errors() {
        let e = ChildProcess::spawn(Command::new("/nonexistent/pg_dump"), "pg_dump", false)
            .err()
            .unwrap();
        assert_eq!(e.kind(), crate::ErrorKind::Tool);
    }
}
