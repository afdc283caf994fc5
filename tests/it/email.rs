//! Email alerts against a real mail server: a throwaway Postfix (Debian's package) with its own
//! config folder, queue and maildirs in a temporary folder, on loopback ports, that requires a
//! fully qualified EHLO name, TLS (STARTTLS or implicit) and SASL AUTH, and delivers into maildirs
//! that the tests read back with Python's `email` package. See tests/fixtures/postfix/main.cf.
//! The faster aiosmtpd server (tests/fixtures/smtp_server.py) serves the daemon's alert tests.
//! Needs root (Postfix's master) and a temporary folder ($TMPDIR, /tmp by default) that the
//! postfix and nobody users can traverse.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Cli, Run, project_dir, venv_tool};

const USER: &str = "alerts";
/// Known secret: tests assert it never shows in any output or in the server's log.
const PASSWORD: &str = "Mail-Pa55-7hQ2x";

/// A running Postfix instance of the test's own; stopped (and checked gone) on `stop` or drop.
pub struct Postfix {
    dir: tempfile::TempDir,
    /// STARTTLS required, AUTH only after it.
    pub submission: u16,
    /// TLS from the first byte.
    pub smtps: u16,
    /// No STARTTLS; AUTH offered in the clear; a relay for 127.0.0.0/8 without AUTH.
    pub plain: u16,
    /// The CA that signed the server's certificate, and one that signed nothing here.
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    stopped: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (uid, gid) of a system user, from /etc/passwd.
fn user_ids(name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == name)
        .map(|f| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        .unwrap_or_else(|| panic!("no user {name}: is the postfix package installed?"))
}

impl Postfix {
    pub fn start() -> Postfix {
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(
            me, 0,
            "the Postfix tests run as root (Postfix's master must), as scripts/test.sh and CI do"
        );
        for tool in ["/usr/sbin/postfix", "/usr/sbin/saslpasswd2"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run scripts/test.sh (it installs postfix, sasl2-bin and libsasl2-modules)"
            );
        }
        // A port taken between free_port() and Postfix's bind: try again with others.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Postfix::try_start() {
                Ok(p) => return p,
                Err(log) if attempt < 3 && log.contains("in use") => continue,
                Err(log) => panic!("postfix did not start:\n{log}"),
            }
        }
    }

    fn try_start() -> Result<Postfix, String> {
        let dir = tempfile::Builder::new()
            .prefix("offsitedb-postfix-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        // smtpd runs as the postfix user and delivery as nobody: both must reach in here.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        for sub in ["conf/sasl", "queue", "data", "mail", "tls"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let (pf_uid, pf_gid) = user_ids("postfix");
        std::os::unix::fs::chown(d.join("data"), Some(pf_uid), None).unwrap();
        std::os::unix::fs::chown(d.join("mail"), Some(65534), Some(65534)).unwrap();
        let ok = Command::new(venv_tool("python"))
            .arg(project_dir().join("tests/fixtures/certs.py"))
            .arg(d.join("tls"))
            .status()
            .unwrap();
        assert!(ok.success(), "tests/fixtures/certs.py failed");

        let (submission, smtps, plain) = (free_port(), free_port(), free_port());
        let fill = |name: &str| {
            std::fs::read_to_string(project_dir().join("tests/fixtures/postfix").join(name))
                .unwrap()
                .replace("@DIR@", d.to_str().unwrap())
                .replace("@SUBMISSION@", &submission.to_string())
                .replace("@SMTPS@", &smtps.to_string())
                .replace("@PLAIN@", &plain.to_string())
        };
        std::fs::write(d.join("conf/main.cf"), fill("main.cf")).unwrap();
        std::fs::write(d.join("conf/master.cf"), fill("master.cf")).unwrap();
        std::fs::write(d.join("conf/sasl/smtpd.conf"), fill("smtpd.conf")).unwrap();

        let db = d.join("sasldb2");
        let mut child = Command::new("/usr/sbin/saslpasswd2")
            .arg("-f")
            .arg(&db)
            .args(["-p", "-c", "-u", "offsitedb.test", USER])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "saslpasswd2 failed");
        std::os::unix::fs::chown(&db, None, Some(pf_gid)).unwrap();

        let mut pf = Postfix {
            ca: d.join("tls/ca.pem"),
            other_ca: d.join("tls/other-ca.pem"),
            dir,
            submission,
            smtps,
            plain,
            stopped: false,
        };
        // `start` returns once the master has bound its ports (master -w), or failed to.
        let out = pf.postfix("start");
        if !out.status.success() {
            let log = format!("{}\n{}", String::from_utf8_lossy(&out.stderr), pf.log());
            pf.stop();
            return Err(log);
        }
        Ok(pf)
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    fn postfix(&self, cmd: &str) -> std::process::Output {
        Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.conf())
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Postfix's log (maillog_file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits for `n` messages in `mailbox`'s maildir (delivery follows the 250 by a moment) and
    /// returns their paths, oldest first.
    pub fn wait_for_mail(&self, mailbox: &str, n: usize) -> Vec<PathBuf> {
        let new = self.dir.path().join("mail").join(mailbox).join("new");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&new)
                .map(|r| {
                    r.flatten()
                        .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
                        .collect()
                })
                .unwrap_or_default();
            if found.len() >= n || Instant::now() > deadline {
                found.sort();
                assert_eq!(
                    found.len(),
                    n,
                    "messages in {mailbox}'s maildir; the log:\n{}",
                    self.log()
                );
                return found.into_iter().map(|(_, p)| p).collect();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Processes of this instance: every Postfix daemon carries MAIL_CONFIG=<its conf folder>.
    fn processes(&self) -> Vec<i32> {
        let needle = format!("MAIL_CONFIG={}\0", self.conf().display());
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
            })
            .collect()
    }

    /// `postfix stop`, then waits for every process of the instance to go; returns the ones that
    /// had to be killed (none, when all is well).
    fn stop(&mut self) -> Vec<i32> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let _ = self.postfix("stop");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = self.processes();
        for &pid in &left {
            // SAFETY: kill(2) on processes of this test's own Postfix instance.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        left
    }

    /// Stops the instance and checks that nothing of it is left running or listening.
    pub fn stop_and_check(mut self) {
        let left = self.stop();
        assert!(left.is_empty(), "postfix processes left running: {left:?}");
        // With no process of it left nothing of it can listen; a port that answers now was
        // taken by another test's server, so only an SMTP greeting counts as Postfix's.
        for port in [self.submission, self.plain] {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut greeting = [0u8; 64];
                let n = std::io::Read::read(&mut s, &mut greeting).unwrap_or(0);
                let said = String::from_utf8_lossy(&greeting[..n]);
                assert!(!said.contains("ESMTP"), "port {port} still answers: {said}");
            }
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A delivered message as Python's `email` package reads it (RFC 2047 subjects decoded,
/// quoted-printable or base64 bodies decoded), plus checks on its raw form.
fn read_mail(path: &Path) -> Value {
    let raw = std::fs::read(path).unwrap();
    for line in raw.split(|&b| b == b'\n') {
        assert!(
            line.len() <= 998,
            "a line of {} octets (RFC 5322 allows 998)",
            line.len()
        );
    }
    let out = Command::new(venv_tool("python"))
        .args([
            "-c",
            "import email, email.policy, json, sys\n\
             m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)\n\
             print(json.dumps({'from': str(m['From']), 'to': str(m['To']), 'subject': str(m['Subject']),\n\
               'received': [str(r) for r in m.get_all('Received', [])], 'body': m.get_content(),\n\
               'cte': str(m['Content-Transfer-Encoding']), 'type': m.get_content_type(),\n\
               'message_id': str(m['Message-ID']), 'date': str(m['Date'])}))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The Subject header as it crossed the wire (unfolded): ASCII only.
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\n\n").next().unwrap();
    let subject = head
        .split('\n')
        .skip_while(|l| !l.starts_with("Subject:"))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with([' ', '\t']))
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n");
    v["raw_subject"] = subject.into();
    v
}

/// Speaks SMTP by hand: sends each line, returns the server's replies (greeting first).
fn converse(port: u16, lines: &[&str]) -> Vec<String> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            all.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    let mut out = vec![reply()];
    for line in lines {
        (&s).write_all(format!("{line}\r\n").as_bytes()).unwrap();
        out.push(reply());
    }
    out
}

/// The fixture itself: a bare EHLO name (what the hand-written client sent: `EHLO offsitedb`)
/// is refused, an address literal is not. Without this, passing tests would prove little.
#[test]
fn the_test_postfix_refuses_a_bare_ehlo_name() {
    let pf = Postfix::start();
    let bare = converse(
        pf.plain,
        &[
            "EHLO offsitedb",
            "MAIL FROM:<backups@example.com>",
            "RCPT TO:<ops@example.com>",
            "QUIT",
        ],
    );
    assert!(
        bare[3].starts_with("504") && bare[3].contains("need fully-qualified hostname"),
        "{bare:?}"
    );
    let literal = converse(
        pf.plain,
        &[
            "EHLO [127.0.0.1]",
            "MAIL FROM:<backups@example.com>",
            "RCPT TO:<ops@example.com>",
            "RSET",
            "QUIT",
        ],
    );
    assert!(literal[3].starts_with("250"), "{literal:?}");
    // The submission port offers AUTH only after STARTTLS; the plain one never offers STARTTLS.
    let sub = converse(pf.submission, &["EHLO [127.0.0.1]", "QUIT"]);
    assert!(
        sub[1].contains("STARTTLS") && !sub[1].contains("AUTH"),
        "{sub:?}"
    );
    let plain = converse(pf.plain, &["EHLO [127.0.0.1]", "QUIT"]);
    assert!(
        plain[1].contains("AUTH") && !plain[1].contains("STARTTLS"),
        "{plain:?}"
    );
    pf.stop_and_check();
}

fn email_section(url: &str, to: &[&str]) -> offsitedb::config::EmailSection {
    offsitedb::config::EmailSection {
        smtp: offsitedb::config::Secret::new(url),
        from: "OffsiteDB <backups@example.com>".into(),
        to: to.iter().map(|s| s.to_string()).collect(),
    }
}

/// Through the library: STARTTLS + AUTH on the submission port and implicit TLS + AUTH, with a
/// non-ASCII subject, a long line and a leading dot in the body; delivered intact.
#[test]
fn the_library_sends_through_postfix_with_starttls_and_implicit_tls() {
    let pf = Postfix::start();
    let mail = offsitedb::alerts::smtp::Mail::from_config(&email_section(
        &format!(
            "smtp://{USER}:{PASSWORD}@127.0.0.1:{}?ca={}",
            pf.submission,
            pf.ca.display()
        ),
        &["ops@example.com", "dev@example.com"],
    ))
    .unwrap();
    let subject = "[OffsiteDB] la sauvegarde a échoué pour « café » ☕";
    let long = "x".repeat(3000);
    let body = format!("first line\n.a leading dot\n{long}\nnon-ASCII: Grüße, 日本語\nlast\n");
    if let Err(e) = mail.send(subject, &body) {
        panic!("{e}\n{}", pf.log());
    }
    for mailbox in ["ops", "dev"] {
        let got = read_mail(&pf.wait_for_mail(mailbox, 1)[0]);
        assert_eq!(got["subject"], subject, "{got:#}");
        assert_eq!(got["from"], "OffsiteDB <backups@example.com>", "{got:#}");
        assert_eq!(got["to"], "ops@example.com, dev@example.com", "{got:#}");
        // Trailing line breaks are the encoding's business (7bit, quoted-printable or base64).
        assert_eq!(
            got["body"].as_str().unwrap().trim_end(),
            body.trim_end(),
            "{got:#}"
        );
        let raw_subject = got["raw_subject"].as_str().unwrap();
        assert!(
            raw_subject.is_ascii() && raw_subject.contains("=?utf-8?"),
            "{raw_subject}"
        );
        assert_eq!(got["type"], "text/plain", "{got:#}");
        // Postfix's Received line names the EHLO it got: an FQDN or an address literal.
        let received = got["received"][0].as_str().unwrap();
        let helo = received.split_whitespace().nth(1).unwrap();
        assert!(
            helo == "[127.0.0.1]" || (helo.contains('.') && !helo.starts_with('[')),
            "{received}"
        );
    }

    let tls = offsitedb::alerts::smtp::Mail::from_config(&email_section(
        &format!(
            "smtps://{USER}:{PASSWORD}@127.0.0.1:{}?ca={}",
            pf.smtps,
            pf.ca.display()
        ),
        &["ops@example.com"],
    ))
    .unwrap();
    // ASCII with short lines goes 7bit: the leading dot is doubled on the wire and undone.
    if let Err(e) = tls.send("[OffsiteDB] implicit TLS", "over smtps\n.leading dot\n") {
        panic!("{e}\n{}", pf.log());
    }
    let got = read_mail(&pf.wait_for_mail("ops", 2)[1]);
    assert_eq!(got["subject"], "[OffsiteDB] implicit TLS", "{got:#}");
    assert_eq!(got["body"], "over smtps\n.leading dot\n", "{got:#}");
    assert_eq!(got["cte"], "7bit", "{got:#}");

    // A CA that did not sign the server's certificate: refused before anything is said.
    let wrong_ca = offsitedb::alerts::smtp::Mail::from_config(&email_section(
        &format!(
            "smtps://{USER}:{PASSWORD}@127.0.0.1:{}?ca={}",
            pf.smtps,
            pf.other_ca.display()
        ),
        &["ops@example.com"],
    ))
    .unwrap();
    let e = wrong_ca.send("x", "x").unwrap_err().to_string();
    assert!(e.contains("certificate"), "{e}");
    assert!(!pf.log().contains(PASSWORD));
    pf.stop_and_check();
}

/// Writes a config whose only alert channel is `email`, and runs `offsitedb alert-test`.
fn alert_test(dir: &Path, smtp: &str) -> Run {
    std::fs::write(
        dir.join("offsitedb.toml"),
        format!(
            "[alerts]\nemail = {{ smtp = \"{smtp}\", from = \"backups@example.com\", to = [\"ops@example.com\"] }}\n"
        ),
    )
    .unwrap();
    Cli::new()
        .cwd(dir)
        .env("SMTP_PASSWORD", PASSWORD)
        .run(&["alert-test"])
}

/// Through `offsitedb alert-test`: both TLS modes deliver; a wrong password and a server without
/// STARTTLS fail clearly (exit 13) without a retry, and the password never crosses in the clear.
#[test]
fn alert_test_through_postfix() {
    let pf = Postfix::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = pf.ca.display().to_string();
    let no_secret = |r: &Run| {
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(!all.contains(PASSWORD), "the password leaked:\n{all}");
    };

    let r = alert_test(
        dir.path(),
        &format!(
            "smtp://{USER}:${{SMTP_PASSWORD}}@127.0.0.1:{}?ca={ca}",
            pf.submission
        ),
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", pf.log());
    assert!(
        r.stdout
            .contains(&format!("ok      email via 127.0.0.1:{}", pf.submission)),
        "{}",
        r.stdout
    );
    let got = read_mail(&pf.wait_for_mail("ops", 1)[0]);
    assert_eq!(got["subject"], "[OffsiteDB] test alert for test", "{got:#}");
    assert!(
        got["body"]
            .as_str()
            .unwrap()
            .contains("if you read this, alerts reach you"),
        "{got:#}"
    );

    let r = alert_test(
        dir.path(),
        &format!(
            "smtps://{USER}:${{SMTP_PASSWORD}}@127.0.0.1:{}?ca={ca}",
            pf.smtps
        ),
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", pf.log());
    pf.wait_for_mail("ops", 2);

    // A wrong password: one attempt (a refused password is refused again), a clear message.
    let before = pf.log().matches("authentication failed").count();
    std::fs::write(
        dir.path().join("offsitedb.toml"),
        format!(
            "[alerts]\nemail = {{ smtp = \"smtp://{USER}:not-the-password@127.0.0.1:{}?ca={ca}\", from = \"backups@example.com\", to = [\"ops@example.com\"] }}\n",
            pf.submission
        ),
    )
    .unwrap();
    let r = Cli::new()
        .cwd(dir.path())
        .fails(&["alert-test"], 13, "1 of 1 alert channels failed");
    assert!(
        r.stdout
            .contains("smtp authentication failed for user alerts"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("not-the-password"), "{}", r.stdout);
    // Postfix writes its log line a moment after it answered: wait for it, then for any second
    // attempt to show as well.
    let failed = || pf.log().matches("authentication failed").count() - before;
    let t = std::time::Instant::now();
    while failed() == 0 && t.elapsed() < std::time::Duration::from_secs(15) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(failed(), 1, "{}", pf.log());

    // smtp:// to a server without STARTTLS: refused before AUTH; the password never left.
    let r = alert_test(
        dir.path(),
        &format!("smtp://{USER}:${{SMTP_PASSWORD}}@127.0.0.1:{}", pf.plain),
    );
    assert_eq!(r.code, 13, "{r:?}");
    assert!(r.stdout.contains("does not offer STARTTLS"), "{}", r.stdout);
    no_secret(&r);
    // The plain port logs every command it receives (debug_peer_list): EHLO and QUIT at most.
    let log = pf.log();
    let received: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("postfix/smtpd[") && l.contains(": < "))
        .collect();
    assert!(!received.is_empty(), "{log}");
    assert!(
        received
            .iter()
            .all(|l| !l.to_uppercase().contains(": AUTH") && !l.to_uppercase().contains(": MAIL")),
        "{received:#?}"
    );
    assert!(!log.contains(PASSWORD));

    // ?tls=none: plain text, allowed for a relay (here the plain port relays for 127.0.0.1).
    let r = alert_test(
        dir.path(),
        &format!("smtp://127.0.0.1:{}?tls=none", pf.plain),
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", pf.log());
    pf.wait_for_mail("ops", 3);
    pf.stop_and_check();
}
