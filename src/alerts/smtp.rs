/*!
Email alerts over SMTP: a small client for one message at a time (EHLO, STARTTLS or TLS from the
start, AUTH PLAIN or LOGIN, MAIL, RCPT, DATA), on rustls like everything else.

`smtp://user:password@host:587` requires STARTTLS (a server that does not offer it is an error,
so a password never crosses the network in the clear); `smtps://...:465` speaks TLS from the start;
`?tls=none` allows plain text, for a relay on the same machine. `?ca=/path/ca.pem` trusts an extra
certificate authority (a company CA, or a test server).
*/

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use crate::config::{EmailSection, Secret};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tls {
    /// STARTTLS after the greeting.
    Upgrade,
    Implicit,
    None,
}

/// A configured mail route: server, credentials, sender and recipients.
#[derive(Clone, Debug)]
pub struct Mail {
    host: String,
    port: u16,
    tls: Tls,
    user: Option<String>,
    password: Option<Secret>,
    ca: Option<PathBuf>,
    from: String,
    to: Vec<String>,
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// The connection: plain until STARTTLS (or never, with tls=none), TLS after.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl Mail {
    pub fn from_config(e: &EmailSection) -> Result<Mail> {
        let url = e.smtp.expose();
        let bad = |why: &str| {
            Error::config(format!("invalid [alerts] email smtp URL: {why}")).with_hint(
                "write it like smtp://user:${SMTP_PASSWORD}@mail.example.com:587 (STARTTLS) or smtps://...:465",
            )
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("it has no scheme"))?;
        let mut tls = match scheme {
            "smtp" => Tls::Upgrade,
            "smtps" => Tls::Implicit,
            _ => return Err(bad("the scheme must be smtp or smtps")),
        };
        // The user info ends at the last "@" (a password may hold "?", "/" or "@" unescaped),
        // so nothing of it can end up in the host, the query, or a message.
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            None => (
                hostport.to_string(),
                if tls == Tls::Implicit { 465 } else { 587 },
            ),
        };
        if host.is_empty() {
            return Err(bad("it has no host"));
        }
        let decode = |s: &str| crate::units::percent_decode(s).ok_or_else(|| bad("bad %-escape"));
        let (user, password) = match auth {
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (Some(decode(u)?), Some(Secret::new(decode(p)?))),
                None => (Some(decode(a)?), None),
            },
            None => (None, None),
        };
        let mut ca = None;
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some(("tls", "none")) => tls = Tls::None,
                Some(("tls", "starttls")) => tls = Tls::Upgrade,
                Some(("ca", p)) => ca = Some(PathBuf::from(decode(p)?)),
                _ => {
                    return Err(bad(&format!(
                        "unknown parameter {kv:?} (known: tls=none, ca=PATH)"
                    )));
                }
            }
        }
        if e.to.is_empty() {
            return Err(Error::config(
                "[alerts] email has no recipient in to = [...]",
            ));
        }
        Ok(Mail {
            host,
            port,
            tls,
            user,
            password,
            ca,
            from: e.from.clone(),
            to: e.to.clone(),
        })
    }

    /// "host:port", for messages.
    pub fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Sends one message. The error says which step failed and what the server answered.
    pub fn send(&self, subject: &str, body: &str) -> std::result::Result<(), String> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.host))?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(15)).map_err(|e| {
            format!(
                "cannot connect to {}: {}",
                self.server(),
                crate::error::describe_io(&e)
            )
        })?;
        tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
        tcp.set_write_timeout(Some(Duration::from_secs(30))).ok();
        let mut s = match self.tls {
            Tls::Implicit => self.wrap(tcp)?,
            _ => Conn::Plain(tcp),
        };
        expect(&mut s, 220, "greeting")?;
        let mut caps = ehlo(&mut s)?;
        if self.tls == Tls::Upgrade {
            if !caps.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")) {
                return Err(format!(
                    "{} does not offer STARTTLS; use smtps:// for TLS from the start, or ?tls=none only for a local relay",
                    self.server()
                ));
            }
            command(&mut s, "STARTTLS", 220, "STARTTLS")?;
            // The plain stream is done; TLS takes over the socket.
            if let Conn::Plain(tcp) = s {
                s = self.wrap(tcp)?;
            }
            caps = ehlo(&mut s)?;
        }
        if let (Some(user), Some(pass)) = (&self.user, &self.password) {
            let auth = caps
                .iter()
                .find(|c| c.to_ascii_uppercase().starts_with("AUTH"))
                .map(|c| c.to_ascii_uppercase())
                .unwrap_or_default();
            let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
            if auth.contains("PLAIN") || !auth.contains("LOGIN") {
                let token = b64(format!("\0{user}\0{}", pass.expose()).as_bytes());
                command(
                    &mut s,
                    &format!("AUTH PLAIN {token}"),
                    235,
                    "authentication",
                )
                .map_err(|e| format!("smtp authentication failed for user {user}: {e}"))?;
            } else {
                command(&mut s, "AUTH LOGIN", 334, "authentication")?;
                command(&mut s, &b64(user.as_bytes()), 334, "authentication")?;
                command(
                    &mut s,
                    &b64(pass.expose().as_bytes()),
                    235,
                    "authentication",
                )
                .map_err(|e| format!("smtp authentication failed for user {user}: {e}"))?;
            }
        }
        command(
            &mut s,
            &format!("MAIL FROM:<{}>", self.from),
            250,
            "MAIL FROM",
        )?;
        for to in &self.to {
            let r = command_any(&mut s, &format!("RCPT TO:<{to}>"))?;
            if r.0 != 250 && r.0 != 251 {
                return Err(format!("recipient {to} refused: {} {}", r.0, r.1));
            }
        }
        command(&mut s, "DATA", 354, "DATA")?;
        let msg = message(&self.from, &self.to, subject, body);
        s.write_all(msg.as_bytes()).map_err(io_err)?;
        s.write_all(b".\r\n").map_err(io_err)?;
        expect(&mut s, 250, "message")?;
        let _ = command_any(&mut s, "QUIT");
        Ok(())
    }

    fn wrap(&self, tcp: TcpStream) -> std::result::Result<Conn, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &self.ca {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("bad certificate in {}: {e}", ca.display()))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| format!("bad server name {}: {e}", self.host))?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
    }
}

fn io_err(e: std::io::Error) -> String {
    format!("connection lost: {}", crate::error::describe_io(&e))
}

/// Reads one reply: its code and its last line's text.
fn reply(s: &mut dyn Stream) -> std::result::Result<(u16, String, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            let n = s.read(&mut b).map_err(io_err)?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            if b[0] == b'\n' {
                break;
            }
            if line.len() < 4096 {
                line.push(b[0]);
            }
        }
        // The code is three ASCII digits; whatever follows is text, maybe not UTF-8.
        let digits = line.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit));
        let Some(digits) = digits else {
            return Err(format!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            ));
        };
        let code = digits
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        let more = line.get(3) == Some(&b'-');
        let text = String::from_utf8_lossy(line.get(4..).unwrap_or(&[]));
        lines.push(text.trim_end().to_string());
        if !more {
            let last = lines.last().cloned().unwrap_or_default();
            return Ok((code, last, lines));
        }
    }
}

fn expect(s: &mut dyn Stream, code: u16, what: &str) -> std::result::Result<Vec<String>, String> {
    let (c, text, lines) = reply(s)?;
    if c != code {
        return Err(format!("{what}: the server answered {c} {text}"));
    }
    Ok(lines)
}

fn command_any(s: &mut dyn Stream, line: &str) -> std::result::Result<(u16, String), String> {
    s.write_all(format!("{line}\r\n").as_bytes())
        .map_err(io_err)?;
    s.flush().map_err(io_err)?;
    let (c, t, _) = reply(s)?;
    Ok((c, t))
}

fn command(
    s: &mut dyn Stream,
    line: &str,
    code: u16,
    what: &str,
) -> std::result::Result<(), String> {
    let (c, t) = command_any(s, line)?;
    if c != code {
        return Err(format!("{what}: the server answered {c} {t}"));
    }
    Ok(())
}

/// EHLO; returns the server's extensions.
fn ehlo(s: &mut dyn Stream) -> std::result::Result<Vec<String>, String> {
    s.write_all(b"EHLO offsitedb\r\n").map_err(io_err)?;
    let lines = expect(s, 250, "EHLO")?;
    Ok(lines.into_iter().skip(1).collect())
}

/// The message: headers, then the body with CRLF line ends and leading dots doubled.
fn message(from: &str, to: &[String], subject: &str, body: &str) -> String {
    let mut id = [0u8; 12];
    let _ = getrandom::fill(&mut id);
    let mut m = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{}@offsitedb>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        to.join(", "),
        subject.replace(['\r', '\n'], " "),
        jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S +0000"),
        crate::units::hex(&id)
    );
    for line in body.lines() {
        if line.starts_with('.') {
            m.push('.');
        }
        m.push_str(line);
        m.push_str("\r\n");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(url: &str) -> Result<Mail> {
        Mail::from_config(&EmailSection {
            smtp: Secret::new(url),
            from: "backups@example.com".into(),
            to: vec!["ops@example.com".into()],
        })
    }

    #[test]
    fn urls() {
        let m = mail("smtp://user%40x:p%3Ass@mail.example.com:2525").unwrap();
        assert_eq!(
            (m.host.as_str(), m.port, m.tls),
            ("mail.example.com", 2525, Tls::Upgrade)
        );
        assert_eq!(m.user.as_deref(), Some("user@x"));
        assert_eq!(m.password.as_ref().unwrap().expose(), "p:ss");
        assert!(!format!("{m:?}").contains("p:ss"));
        let m = mail("smtps://mail.example.com").unwrap();
        assert_eq!((m.port, m.tls), (465, Tls::Implicit));
        let m = mail("smtp://127.0.0.1:25?tls=none").unwrap();
        assert_eq!((m.port, m.tls, m.user.as_deref()), (25, Tls::None, None));
        for bad in [
            "mail.example.com",
            "http://x",
            "smtp://:25",
            "smtp://h:x",
            "smtp://h?tls=maybe",
        ] {
            assert!(mail(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dots_are_stuffed_and_lines_end_in_crlf() {
        let m = message("a@x", &["b@x".into()], "s\nt", "one\n.two\n..three");
        assert!(m.contains("Subject: s t\r\n"), "{m}");
        assert!(m.ends_with("one\r\n..two\r\n...three\r\n"), "{m}");
    }
}
