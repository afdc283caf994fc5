/*!
Running pg_restore as a drill runs it (no owners, no privileges; from a file, or fed the archive's
header and table of contents on its standard input), and reading its errors: each becomes one
problem of the drill, named with the fix where it is known (a missing extension with its package,
a missing role), and a message that is no problem at all (`transaction_timeout` on an older
server) becomes a note.
*/

use crate::error::Result;
use crate::postgres::{self, ConnInfo};
use crate::process::{ChildProcess, Exit};

use super::load;
use super::target::{extension_package, major_of};

/// pg_restore into `target`, as a drill runs it: no owners, no privileges.
pub(super) fn pg_restore_command(
    pg_restore: &std::path::Path,
    target: &ConnInfo,
) -> std::process::Command {
    let mut cmd = crate::process::command(pg_restore);
    cmd.args(["--no-password", "--no-owner", "--no-privileges"])
        .arg("--dbname")
        .arg(target.to_conninfo_without_secrets());
    postgres::child_env(&mut cmd, target);
    cmd
}

/// pg_restore reading `archive` (header and TOC only) from its standard input.
pub(super) fn pg_restore_piped(
    pg_restore: &std::path::Path,
    target: &ConnInfo,
    args: &[&str],
    archive: &[u8],
) -> Result<Exit> {
    let mut cmd = pg_restore_command(pg_restore, target);
    cmd.args(args);
    let mut child = ChildProcess::spawn(cmd, "pg_restore", true)?;
    child.drain_stdout();
    load::feed_pg_restore(child.take_stdin(), archive, None);
    child.wait_exit()
}

/// pg_restore's errors, one problem each, named with the fix where it is known.
pub(super) fn restore_problems(
    exit: &Exit,
    server_version: &str,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let major = major_of(server_version);
    let mut out = Vec::new();
    let mut lines = exit.errors.iter().peekable();
    while let Some(line) = lines.next() {
        if !line.contains("error:") {
            continue;
        }
        let text = line
            .split_once("error: ")
            .map_or(line.as_str(), |(_, t)| t)
            .trim();
        if text.starts_with("errors ignored on restore") {
            continue;
        }
        // pg_restore 17+ sets transaction_timeout, which servers before 17 do not know; the
        // setting only guards pg_restore's own session, and everything else restores.
        if text.contains("unrecognized configuration parameter \"transaction_timeout\"") {
            notes.push(format!(
                "pg_restore set transaction_timeout, which PostgreSQL {server_version} does not have (harmless; a pg_restore of the server's own major avoids it)"
            ));
            continue;
        }
        let detail = lines
            .peek()
            .filter(|l| !l.contains("error:"))
            .map(|l| l.trim().to_string());
        if let Some(ext) = quoted_after(text, "extension \"")
            .filter(|_| text.contains("is not available") || text.contains("control file"))
            .or_else(|| control_file_name(text))
        {
            out.push(format!(
                "the drill server lacks the extension {ext:?}: install {} where the drill runs",
                extension_package(&ext, major)
            ));
        } else if let Some(role) =
            quoted_after(text, "role \"").filter(|_| text.contains("does not exist"))
        {
            out.push(format!(
                "the dump refers to role {role:?}, which the drill server does not have{}: create it there \
                 (CREATE ROLE {role} NOLOGIN), or drill on a server that has it (--drill-server URL)",
                detail.map(|d| format!(" ({d})")).unwrap_or_default()
            ));
        } else {
            out.push(format!(
                "pg_restore: {text}{}",
                detail.map(|d| format!(" [{d}]")).unwrap_or_default()
            ));
        }
    }
    // A failed exit is a problem unless pg_restore said why and every reason is benign: one
    // killed by a signal, or whose messages we cannot read, has restored an unknown part.
    let mut reasons = exit
        .errors
        .iter()
        .filter(|l| l.contains("error:") && !l.contains("errors ignored on restore"))
        .peekable();
    let benign_only = exit.status.success()
        || (reasons.peek().is_some() && reasons.all(|l| l.contains("\"transaction_timeout\"")));
    if out.is_empty() && !benign_only {
        out.push(format!("pg_restore failed: {}", exit.reason()));
    }
    out.dedup();
    out
}

fn quoted_after(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let end = text[start..].find('"')?;
    Some(text[start..start + end].to_string())
}

/// `could not open extension control file "/usr/share/.../vector.control"` → `vector`.
fn control_file_name(text: &str) -> Option<String> {
    let path = quoted_after(text, "control file \"")?;
    let file = path.rsplit('/').next()?;
    file.strip_suffix(".control").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_extension_packages() {
        assert!(extension_package("postgis", 16).contains("postgresql-16-postgis-3"));
        assert!(extension_package("vector", 18).contains("postgresql-18-pgvector"));
        assert!(extension_package("pg_trgm", 15).contains("contrib"));
        assert!(extension_package("my_ext", 17).contains("postgresql-17-my-ext"));
    }

    #[test]
    fn reads_extension_names_from_errors() {
        assert_eq!(
            control_file_name(
                "could not open extension control file \"/usr/share/postgresql/18/extension/vector.control\": No such file or directory"
            )
            .as_deref(),
            Some("vector")
        );
        assert_eq!(
            quoted_after("extension \"vector\" is not available", "extension \"").as_deref(),
            Some("vector")
        );
    }

    fn exit(code: &str, errors: &[&str]) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        let raw = match code {
            "ok" => 0,
            "1" => 1 << 8,
            _ => 9, // killed by SIGKILL
        };
        Exit {
            status: std::process::ExitStatus::from_raw(raw),
            stderr: errors.iter().map(|l| l.to_string()).collect(),
            errors: errors.iter().map(|l| l.to_string()).collect(),
        }
    }

    /// A pg_restore that failed without a line we can read (killed, or speaking another
    /// language) has restored an unknown part: the drill must not pass.
    #[test]
    fn a_failed_pg_restore_is_a_problem_even_when_it_says_nothing_we_read() {
        let mut notes = Vec::new();
        assert!(restore_problems(&exit("ok", &[]), "16.4", &mut notes).is_empty());
        let killed = restore_problems(&exit("9", &[]), "16.4", &mut notes);
        assert_eq!(killed, ["pg_restore failed: killed by signal 9"]);
        let german = restore_problems(
            &exit(
                "1",
                &["pg_restore: Fehler: Funktion inner_f(text) existiert nicht"],
            ),
            "16.4",
            &mut notes,
        );
        assert_eq!(german.len(), 1, "{german:?}");
        let benign = [
            "pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter \"transaction_timeout\"",
            "Command was: SET transaction_timeout = 0;",
            "pg_restore: warning: errors ignored on restore: 1",
        ];
        assert!(restore_problems(&exit("1", &benign), "16.4", &mut notes).is_empty());
        assert!(notes.iter().any(|n| n.contains("transaction_timeout")));
    }
}
