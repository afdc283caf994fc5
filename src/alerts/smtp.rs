/*!
Email alerts over SMTP through `lettre`, on rustls with the ring provider like the rest of
OffsiteDB: one connection per message, driven step by step (connect, STARTTLS, AUTH, send) so
that a failure says which step failed and whether another attempt could help.

`smtp://user:password@host:587` requires STARTTLS (a server that does not offer it is an error
found before AUTH, so a password never crosses the network in the clear); `smtps://...:465` speaks
TLS from the first byte; `?tls=none` allows plain text, for a relay on the same machine.
`?ca=/path/ca.pem` trusts an extra certificate authority (a company CA, or a test server) besides
the Mozilla roots (webpki-roots).

EHLO carries the machine's fully qualified name, or else the address literal of the local address
that reaches the server (`[192.0.2.7]`, as RFC 5321 4.1.4 asks): servers that enforce the RFC,
such as Postfix with `reject_non_fqdn_helo_hostname`, refuse a bare name like `offsitedb`. lettre
builds the message: a non-ASCII subject goes RFC 2047 encoded, and the body goes 7bit,
quoted-printable or base64, whichever keeps every line within limits (998 octets at most).
*/

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::{ContentType, MIME_VERSION_1_0};
use lettre::message::{Mailbox, Message, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    Certificate, CertificateStore, SmtpConnection, TlsParameters,
};
use lettre::transport::smtp::extension::{ClientId, Extension};

use super::Failure;
use crate::config::{EmailSection, Secret};
use crate::error::{Error, Result};

/// Connect, read and write timeout of one exchange.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tls {
    /// STARTTLS after the greeting, required.
    Upgrade,
    Implicit,
    None,
}

/// A file sent with a message.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
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
    from: Mailbox,
    to: Vec<Mailbox>,
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
        let mailbox = |field: &str, s: &str| {
            s.parse::<Mailbox>().map_err(|err| {
                Error::config(format!(
                    "[alerts] email {field} {s:?} is not an email address: {err}"
                ))
                .with_hint("write it like ops@example.com or \"Ops <ops@example.com>\"")
            })
        };
        Ok(Mail {
            host,
            port,
            tls,
            user,
            password,
            ca,
            from: mailbox("from", &e.from)?,
            to: e
                .to
                .iter()
                .map(|t| mailbox("to", t))
                .collect::<Result<_>>()?,
        })
    }

    /// "host:port", for messages.
    pub fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Sends one message. The failure says which step failed and what the server answered, and
    /// whether trying again could help.
    pub fn send(&self, subject: &str, body: &str) -> std::result::Result<(), Failure> {
        self.send_with(subject, body, &[])
    }

    /// [`Mail::send`] with files attached (the monthly report).
    pub fn send_with(
        &self,
        subject: &str,
        body: &str,
        attachments: &[Attachment],
    ) -> std::result::Result<(), Failure> {
        let message = self.message(subject, body, attachments)?;
        let tls = match self.tls {
            Tls::None => None,
            _ => Some(self.tls_parameters()?),
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| Failure::transient(format!("cannot resolve {}: {e}", self.host)))?
            .next()
            .ok_or_else(|| Failure::transient(format!("{} has no address", self.host)))?;
        let hello = hello_name(addr).map_err(|e| {
            Failure::transient(format!(
                "cannot connect to {}: {}",
                self.server(),
                crate::error::describe_io(&e)
            ))
        })?;
        let wrapper = tls.as_ref().filter(|_| self.tls == Tls::Implicit);
        let mut conn = SmtpConnection::connect(addr, Some(TIMEOUT), &hello, wrapper, None)
            .map_err(|e| self.failure("EHLO", e))?;
        match self.session(&mut conn, &hello, tls.as_ref(), &message) {
            Ok(()) => {
                let _ = conn.quit();
                Ok(())
            }
            Err(f) => {
                conn.abort();
                Err(f)
            }
        }
    }

    /// STARTTLS when required, AUTH when configured, then the message.
    fn session(
        &self,
        conn: &mut SmtpConnection,
        hello: &ClientId,
        tls: Option<&TlsParameters>,
        message: &Message,
    ) -> std::result::Result<(), Failure> {
        if let (Tls::Upgrade, Some(params)) = (self.tls, tls) {
            if !conn.server_info().supports_feature(Extension::StartTls) {
                return Err(Failure::permanent(format!(
                    "{} does not offer STARTTLS; use smtps:// for TLS from the start, or ?tls=none only for a relay on this machine",
                    self.server()
                )));
            }
            conn.starttls(params, hello)
                .map_err(|e| self.failure("STARTTLS", e))?;
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            // Only tls=none, said in so many words, lets a password go out in plain text.
            if self.tls != Tls::None && !conn.is_encrypted() {
                return Err(Failure::permanent(
                    "the connection is not encrypted: the password was not sent",
                ));
            }
            let credentials = Credentials::new(user.clone(), password.expose().to_string());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .map_err(|e| {
                    let f = self.failure("", e);
                    Failure {
                        message: format!(
                            "smtp authentication failed for user {user}: {}",
                            f.message
                        ),
                        ..f
                    }
                })?;
        }
        conn.send(message.envelope(), &message.formatted())
            .map_err(|e| self.failure("sending the message", e))?;
        Ok(())
    }

    fn message(
        &self,
        subject: &str,
        body: &str,
        attachments: &[Attachment],
    ) -> std::result::Result<Message, Failure> {
        let mut id = [0u8; 12];
        let _ = getrandom::fill(&mut id);
        let mut b = Message::builder()
            .from(self.from.clone())
            // One header line: a line break in the subject would start a header of its own.
            .subject(subject.replace(['\r', '\n'], " "))
            .message_id(Some(format!("<{}@offsitedb>", crate::units::hex(&id))))
            .header(MIME_VERSION_1_0);
        for to in &self.to {
            b = b.to(to.clone());
        }
        let built =
            |e: lettre::error::Error| Failure::permanent(format!("cannot build the message: {e}"));
        // lettre ends the data with CRLF . CRLF itself: a final line break would add a blank line.
        let text = body.trim_end_matches(['\r', '\n']).to_string();
        if attachments.is_empty() {
            return b.header(ContentType::TEXT_PLAIN).body(text).map_err(built);
        }
        let mut parts = MultiPart::mixed().singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text),
        );
        for a in attachments {
            let ctype = ContentType::parse(&a.content_type)
                .map_err(|e| Failure::permanent(format!("cannot attach {}: {e}", a.name)))?;
            parts = parts.singlepart(
                lettre::message::Attachment::new(a.name.clone()).body(a.bytes.clone(), ctype),
            );
        }
        b.multipart(parts).map_err(built)
    }

    /// The Mozilla roots, plus the certificates in `?ca=`.
    fn tls_parameters(&self) -> std::result::Result<TlsParameters, Failure> {
        let mut b = TlsParameters::builder(self.host.clone())
            .certificate_store(CertificateStore::WebpkiRoots);
        if let Some(ca) = &self.ca {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let bad =
                |why: String| Failure::permanent(format!("cannot use ca={}: {why}", ca.display()));
            let pem = std::fs::read(ca).map_err(|e| bad(crate::error::describe_io(&e)))?;
            let mut n = 0;
            for der in CertificateDer::pem_slice_iter(&pem) {
                let der = der.map_err(|e| bad(e.to_string()))?;
                let cert = Certificate::from_der(der.to_vec()).map_err(|e| bad(e.to_string()))?;
                b = b.add_root_certificate(cert);
                n += 1;
            }
            if n == 0 {
                return Err(bad("it holds no PEM certificate".into()));
            }
        }
        b.build()
            .map_err(|e| Failure::permanent(format!("TLS setup: {e}")))
    }

    /// Turns lettre's error at `step` into words, and says whether to try again: a 4xx reply or
    /// a network failure may pass; a 5xx reply, a TLS failure or a client error will not.
    fn failure(&self, step: &str, e: lettre::transport::smtp::Error) -> Failure {
        if let Some(tls) = rustls_error(&e) {
            let hint = if matches!(tls, rustls::Error::InvalidCertificate(_)) {
                " (if a private CA signed the server's certificate, add ?ca=/path/ca.pem to the smtp URL)"
            } else {
                ""
            };
            return Failure::permanent(format!("TLS with {} failed: {tls}{hint}", self.server()));
        }
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        let at = if step.is_empty() {
            String::new()
        } else {
            format!("{step}: ")
        };
        if let Some(code) = e.status() {
            let message = format!(
                "{at}the server answered {code} {}",
                source.unwrap_or_default()
            );
            return if e.is_transient() {
                Failure::transient(message)
            } else {
                Failure::permanent(message)
            };
        }
        if let Some(io) = io_error(&e) {
            let what = crate::error::describe_io(io);
            return Failure::transient(if step == "EHLO" {
                format!("cannot connect to {}: {what}", self.server())
            } else {
                format!("connection to {} lost: {at}{what}", self.server())
            });
        }
        let message = format!("{at}{}", source.unwrap_or_else(|| e.to_string()));
        if e.is_client() || e.is_tls() || e.is_response() {
            Failure::permanent(message)
        } else {
            Failure::transient(message)
        }
    }
}

/// The rustls error behind a failure, if any (rustls reports through std::io::Error).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(t) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(t);
        }
        next = err.source();
    }
    None
}

fn io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = err.source();
    }
    None
}

/// The EHLO name: the machine's fully qualified name, else the address literal of the local
/// address that reaches `server` (a connected UDP socket tells it without sending anything).
fn hello_name(server: SocketAddr) -> std::io::Result<ClientId> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if let Some(name) = fqdn(&crate::config::host_name(), &hosts) {
        return Ok(ClientId::Domain(name));
    }
    let udp = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    udp.connect(server)?;
    Ok(match udp.local_addr()?.ip() {
        IpAddr::V4(a) => ClientId::Ipv4(a),
        IpAddr::V6(a) => ClientId::Ipv6(a),
    })
}

/// The machine's fully qualified name: the hostname when it is one, else the name that
/// /etc/hosts gives it (`hostname -f` finds the same, without asking DNS): a dotted name on the
/// hostname's line whose first label is the hostname.
fn fqdn(hostname: &str, etc_hosts: &str) -> Option<String> {
    let host = hostname.trim().trim_end_matches('.');
    if is_fqdn(host) {
        return Some(host.to_string());
    }
    if host.is_empty() {
        return None;
    }
    etc_hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>())
        .filter(|names| names.iter().any(|n| n.eq_ignore_ascii_case(host)))
        .flatten()
        .map(|n| n.trim_end_matches('.'))
        .find(|n| {
            is_fqdn(n)
                && n.split('.')
                    .next()
                    .is_some_and(|first| first.eq_ignore_ascii_case(host))
        })
        .map(str::to_string)
}

/// A dotted DNS name (letters, digits, hyphens; not an IPv4 address).
fn is_fqdn(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && name.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
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
    fn addresses_are_checked_when_the_config_is_read() {
        let section = |from: &str, to: &str| EmailSection {
            smtp: Secret::new("smtp://mail.example.com"),
            from: from.into(),
            to: vec![to.into()],
        };
        assert!(Mail::from_config(&section("Backups <b@example.com>", "o@example.com")).is_ok());
        for (from, to) in [
            ("not an address", "o@example.com"),
            ("b@example.com", "ops"),
        ] {
            let e = Mail::from_config(&section(from, to)).unwrap_err();
            assert!(e.to_string().contains("is not an email address"), "{e}");
        }
    }

    #[test]
    fn the_message_is_within_limits() {
        let m = mail("smtp://mail.example.com").unwrap();
        let long = "y".repeat(5000);
        let msg = m
            .message(
                "échec\r\nBcc: x@example.com",
                &format!("one\n.two\n{long}\n"),
                &[],
            )
            .unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        assert!(text.is_ascii(), "{text}");
        assert!(!text.contains("\nBcc:"), "{text}");
        let subject = text.lines().find(|l| l.starts_with("Subject: ")).unwrap();
        assert!(subject.starts_with("Subject: =?utf-8?"), "{subject}");
        for line in text.split("\r\n") {
            assert!(line.len() <= 998, "{} octets", line.len());
            assert!(!line.contains('\n'), "a bare LF in {line:?}");
        }
    }

    #[test]
    fn an_attachment_travels_as_base64_beside_the_text() {
        let m = mail("smtp://mail.example.com").unwrap();
        let pdf = b"%PDF-1.7\n\x00\xffbinary".to_vec();
        let msg = m
            .message(
                "report",
                "the summary",
                &[Attachment {
                    name: "offsitedb-report-2026-11.pdf".into(),
                    content_type: "application/pdf".into(),
                    bytes: pdf.clone(),
                }],
            )
            .unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        assert!(text.contains("multipart/mixed"), "{text}");
        assert!(text.contains("the summary"), "{text}");
        assert!(
            text.contains("filename=\"offsitedb-report-2026-11.pdf\""),
            "{text}"
        );
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pdf);
        assert!(text.contains(&b64), "{text}");
    }

    #[test]
    fn the_ehlo_name_is_fully_qualified() {
        let hosts = "127.0.0.1 localhost\n127.0.1.1 web1.example.com web1 # the machine\n";
        assert_eq!(
            fqdn("db.example.com", hosts).as_deref(),
            Some("db.example.com")
        );
        assert_eq!(fqdn("web1", hosts).as_deref(), Some("web1.example.com"));
        assert_eq!(fqdn("WEB1\n", hosts).as_deref(), Some("web1.example.com"));
        // A bare name with no dotted alias of its own, or nothing at all: no FQDN.
        assert_eq!(
            fqdn("vm", "127.0.0.1 localhost.localdomain localhost vm"),
            None
        );
        assert_eq!(fqdn("vm", ""), None);
        assert_eq!(fqdn("", hosts), None);
        for bad in [
            "vm",
            "127.0.0.1",
            "-x.example.com",
            "a..b",
            "under_score.example.com",
        ] {
            assert!(!is_fqdn(bad), "{bad}");
        }
        // Without an FQDN, the address literal of the local address toward the server.
        let server: SocketAddr = "127.0.0.1:25".parse().unwrap();
        match hello_name(server).unwrap() {
            ClientId::Domain(d) => assert!(is_fqdn(&d), "{d}"),
            ClientId::Ipv4(a) => assert_eq!(a.to_string(), "127.0.0.1"),
            other => panic!("{other:?}"),
        }
    }
}
