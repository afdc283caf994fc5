/*!
PostgreSQL connection strings, read the way libpq reads them (URL or `key=value` form, the same
`PG*` environment variables and `~/.pgpass`), so that our own connection and pg_dump's agree.

The password never travels on a command line (other users can read those in /proc): children get
a conninfo string without it, and the password in `PGPASSWORD`. Every message uses
[`ConnInfo::redacted`], which has no password and no query parameters.
*/

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Parameters that may hold secrets; never shown, never put in a conninfo string.
const SECRET_KEYS: &[&str] = &["password", "sslpassword"];

#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// libpq parameters in the order given, keys lowercase, values decoded.
    params: Vec<(String, String)>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnInfo({})", self.redacted())
    }
}

impl ConnInfo {
    /// Parses `postgres://…`/`postgresql://…` URLs and `key=value` strings.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::config("the database URL is empty")
                .with_hint("use postgres://USER:PASSWORD@HOST:5432/DBNAME"));
        }
        let params = if let Some(rest) = s
            .strip_prefix("postgresql://")
            .or_else(|| s.strip_prefix("postgres://"))
        {
            parse_url(rest)?
        } else if s.contains('=') {
            parse_keyvalue(s)?
        } else {
            return Err(Error::config(
                "the database URL must start with postgres:// (or be key=value pairs)",
            )
            .with_hint("use postgres://USER:PASSWORD@HOST:5432/DBNAME"));
        };
        Ok(ConnInfo { params })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.to_string(), value.to_string()));
    }

    /// A parameter, else its environment variable, as libpq does.
    fn get_env(&self, key: &str, env: &str) -> Option<String> {
        self.get(key)
            .map(str::to_string)
            .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
    }

    pub fn host(&self) -> String {
        self.get_env("host", "PGHOST")
            .or_else(|| self.get("hostaddr").map(str::to_string))
            .unwrap_or_else(|| "/var/run/postgresql".to_string())
    }

    /// The first host's port.
    pub fn port(&self) -> u16 {
        self.ports()[0]
    }

    /// The hosts of a multi-host string (`host=a,b`, `postgres://a:1,b:2/db`), in order: libpq
    /// tries each until one accepts (and suits `target_session_attrs`). One for a plain string.
    pub fn hosts(&self) -> Vec<String> {
        self.host().split(',').map(str::to_string).collect()
    }

    /// One port per host, as libpq pairs them: a single port serves every host, an empty entry
    /// is 5432. A count that matches neither is kept as given (the connection refuses it).
    pub fn ports(&self) -> Vec<u16> {
        let given = self.get_env("port", "PGPORT").unwrap_or_default();
        let ports: Vec<u16> = given
            .split(',')
            .map(|p| p.trim().parse().unwrap_or(5432))
            .collect();
        let hosts = self.hosts().len();
        if ports.len() == 1 && hosts > 1 {
            vec![ports[0]; hosts]
        } else {
            ports
        }
    }

    pub fn user(&self) -> String {
        self.get_env("user", "PGUSER")
            .unwrap_or_else(current_os_user)
    }

    pub fn dbname(&self) -> String {
        self.get_env("dbname", "PGDATABASE")
            .unwrap_or_else(|| self.user())
    }

    pub fn sslmode(&self) -> String {
        self.get_env("sslmode", "PGSSLMODE")
            .unwrap_or_else(|| "prefer".to_string())
    }

    pub fn is_unix_socket(&self) -> bool {
        self.host().starts_with('/')
    }

    /// The password: from the string, `PGPASSWORD`, or the password file, like libpq.
    pub fn password(&self) -> Option<String> {
        self.get("password")
            .map(str::to_string)
            .or_else(|| std::env::var("PGPASSWORD").ok().filter(|v| !v.is_empty()))
            .or_else(|| self.pgpass_lookup())
    }

    fn pgpass_lookup(&self) -> Option<String> {
        let path = std::env::var_os("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
        let text = std::fs::read_to_string(&path).ok()?;
        let host = self.host();
        let host = if host.starts_with('/') {
            "localhost".to_string()
        } else {
            host
        };
        pgpass_match(
            &text,
            &host,
            &self.port().to_string(),
            &self.dbname(),
            &self.user(),
        )
    }

    /// `postgres://user@host:port/dbname`: what messages and manifests show. No secrets.
    pub fn redacted(&self) -> String {
        let ports = self.ports();
        let hosts: Vec<String> = self
            .hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                // Socket paths and IPv6 addresses are bracketed, as in URLs.
                if h.starts_with('/') || h.contains(':') {
                    format!("[{h}]:{port}")
                } else {
                    format!("{h}:{port}")
                }
            })
            .collect();
        format!(
            "postgres://{}@{}/{}",
            self.user(),
            hosts.join(","),
            self.dbname()
        )
    }

    /// A libpq `key=value` string with every parameter except secrets, for child processes.
    pub fn to_conninfo_without_secrets(&self) -> String {
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<String> = Vec::new();
        // Last occurrence wins, as in libpq.
        for (k, v) in self.params.iter().rev() {
            if SECRET_KEYS.contains(&k.as_str()) || !seen.insert(k.clone()) {
                continue;
            }
            out.push(format!("{k}={}", quote(v)));
        }
        out.reverse();
        out.join(" ")
    }

    /// A copy naming another database on the same server.
    pub fn with_dbname(&self, db: &str) -> Self {
        let mut c = self.clone();
        c.set("dbname", db);
        c
    }
}

fn current_os_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            // SAFETY: getpwuid returns a pointer into static storage or null; we copy at once.
            unsafe {
                let pw = libc::getpwuid(libc::geteuid());
                if pw.is_null() {
                    "postgres".to_string()
                } else {
                    std::ffi::CStr::from_ptr((*pw).pw_name)
                        .to_string_lossy()
                        .into_owned()
                }
            }
        })
}

fn quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:,@".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

fn decode(s: &str) -> Result<String> {
    crate::units::percent_decode(s).ok_or_else(|| {
        Error::config("bad percent-encoding in the database URL").with_hint(ENCODE_HINT)
    })
}

/// Messages about a URL never quote pieces of it: a misplaced character in a password would
/// otherwise put part of the password in the message.
const ENCODE_HINT: &str = "percent-encode special characters in the user name and password \
     (@ as %40, / as %2F, ? as %3F, : as %3A, # as %23)";

fn parse_url(rest: &str) -> Result<Vec<(String, String)>> {
    let mut params = Vec::new();
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = main.split_once('/').unwrap_or((main, ""));
    if path.contains('@') || query.contains('@') {
        return Err(
            Error::config("the database URL has an '@' after its host part").with_hint(ENCODE_HINT),
        );
    }
    // The password may contain '@' if unencoded: split at the last one.
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if let Some(ui) = userinfo {
        let (u, p) = match ui.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (ui, None),
        };
        if !u.is_empty() {
            params.push(("user".into(), decode(u)?));
        }
        if let Some(p) = p {
            params.push(("password".into(), decode(p)?));
        }
    }
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostlist.split(',') {
            let (h, p) = if let Some(inner) = spec.strip_prefix('[') {
                let (h, after) = inner
                    .split_once(']')
                    .ok_or_else(|| Error::config("unclosed '[' in the database URL host"))?;
                (h.to_string(), after.strip_prefix(':').unwrap_or(""))
            } else {
                match spec.rsplit_once(':') {
                    Some((h, p)) => (decode(h)?, p),
                    None => (decode(spec)?, ""),
                }
            };
            if !p.is_empty() && p.parse::<u16>().is_err() {
                return Err(
                    Error::config("the database URL has an invalid port").with_hint(ENCODE_HINT)
                );
            }
            hosts.push(h);
            ports.push(p.to_string());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            params.push(("host".into(), hosts.join(",")));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            params.push(("port".into(), ports.join(",")));
        }
    }
    if !path.is_empty() {
        params.push(("dbname".into(), decode(path)?));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k)?.to_ascii_lowercase();
        let k = if k == "ssl" && v == "true" {
            params.push(("sslmode".into(), "require".into()));
            continue;
        } else {
            k
        };
        params.push((k, decode(v)?));
    }
    Ok(params)
}

fn parse_keyvalue(s: &str) -> Result<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(
                Error::config("a parameter without '=' in the connection string")
                    .with_hint("quote values that contain spaces: password='a b'"),
            );
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(Error::config(
                    "unterminated quoted value in the connection string",
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        params.push((key.to_ascii_lowercase(), value));
    }
    Ok(params)
}

/// The password for host/port/db/user from `.pgpass` text (`*` matches anything).
fn pgpass_match(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let ok = |pat: &str, v: &str| pat == "*" || pat == v;
        if ok(&fields[0], host)
            && ok(&fields[1], port)
            && ok(&fields[2], db)
            && ok(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = ConnInfo::parse(
            "postgres://app:s3cr%40t@db.example.com:6543/shop?sslmode=require&application_name=x",
        )
        .unwrap();
        assert_eq!(c.get("user"), Some("app"));
        assert_eq!(c.get("password"), Some("s3cr@t"));
        assert_eq!(c.host(), "db.example.com");
        assert_eq!(c.port(), 6543);
        assert_eq!(c.dbname(), "shop");
        assert_eq!(c.sslmode(), "require");
        assert_eq!(c.redacted(), "postgres://app@db.example.com:6543/shop");

        let s = ConnInfo::parse("postgresql://u@%2Ftmp%2Fsock:5433/d").unwrap();
        assert_eq!(s.host(), "/tmp/sock");
        assert!(s.is_unix_socket());

        let v6 = ConnInfo::parse("postgres://u:p@[::1]:5432/d").unwrap();
        assert_eq!(v6.host(), "::1");
        assert_eq!(v6.redacted(), "postgres://u@[::1]:5432/d");

        // An unencoded '@' in the password still parses.
        let at = ConnInfo::parse("postgres://u:p@ss@h/d").unwrap();
        assert_eq!(at.get("password"), Some("p@ss"));
        assert_eq!(at.host(), "h");
    }

    #[test]
    fn several_hosts_each_with_its_port() {
        let c = ConnInfo::parse(
            "postgres://u:pw@10.0.0.1:5433,db2.example.com:5434/shop?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(c.hosts(), ["10.0.0.1", "db2.example.com"]);
        assert_eq!(c.ports(), [5433, 5434]);
        assert_eq!(c.port(), 5433);
        assert_eq!(
            c.redacted(),
            "postgres://u@10.0.0.1:5433,db2.example.com:5434/shop"
        );
        // What a child (pg_receivewal, pg_basebackup) gets: libpq's own multi-host form.
        let s = c.to_conninfo_without_secrets();
        assert_eq!(
            s,
            "user=u host=10.0.0.1,db2.example.com port=5433,5434 dbname=shop target_session_attrs=read-write"
        );
        assert_eq!(ConnInfo::parse(&s).unwrap().ports(), [5433, 5434]);
        // One port serves every host; a host without one gets 5432.
        let one = ConnInfo::parse("host=a,b port=6000 dbname=d user=u").unwrap();
        assert_eq!(one.ports(), [6000, 6000]);
        assert_eq!(one.redacted(), "postgres://u@a:6000,b:6000/d");
        let some = ConnInfo::parse("postgres://u@a:6001,b/d").unwrap();
        assert_eq!(some.ports(), [6001, 5432]);
        let v6 = ConnInfo::parse("postgres://u@[::1]:5001,[::2]:5002/d").unwrap();
        assert_eq!(v6.redacted(), "postgres://u@[::1]:5001,[::2]:5002/d");
    }

    #[test]
    fn keyvalue_strings() {
        let c = ConnInfo::parse("host=/tmp port=5999 dbname='my db' user=me password='it\\'s'")
            .unwrap();
        assert_eq!(c.dbname(), "my db");
        assert_eq!(c.get("password"), Some("it's"));
        assert_eq!(c.port(), 5999);
        assert!(ConnInfo::parse("host=/tmp dbname='x").is_err());
        assert!(ConnInfo::parse("host").is_err());
    }

    #[test]
    fn child_conninfo_never_holds_the_password() {
        let c = ConnInfo::parse("postgres://u:hunter2@h:5432/d?sslmode=require&sslpassword=pw2")
            .unwrap();
        let s = c.to_conninfo_without_secrets();
        assert!(!s.contains("hunter2") && !s.contains("pw2"), "{s}");
        assert_eq!(s, "user=u host=h port=5432 dbname=d sslmode=require");
        // What we pass is what we parse.
        let back = ConnInfo::parse(&s).unwrap();
        assert_eq!(back.dbname(), "d");
        let q = ConnInfo::parse("dbname='a b' user=x")
            .unwrap()
            .to_conninfo_without_secrets();
        assert_eq!(ConnInfo::parse(&q).unwrap().dbname(), "a b");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn errors_never_quote_the_url() {
        // Each URL holds a password with a character that should have been percent-encoded.
        for (url, secret) in [
            ("postgres://app:Xq7/Zr9@db:5432/shop", ["Xq7", "Zr9"]),
            ("postgres://app:531/Kw8@db:5432/shop", ["531", "Kw8"]),
            ("postgres://app:Pj4?Vn2@db/shop", ["Pj4", "Vn2"]),
            ("postgres://app:Hb3%zzMm6@db/shop", ["Hb3", "Mm6"]),
            ("host=db password=Tt5 Yy6", ["Tt5", "Yy6"]),
        ] {
            let e = ConnInfo::parse(url).unwrap_err();
            let text = format!("{} {}", e.message(), e.hint().unwrap_or(""));
            for fragment in secret {
                assert!(!text.contains(fragment), "{url}: {text}");
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "mysql://x", "db.example.com", "postgres://h:notaport/d"] {
            assert!(ConnInfo::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn pgpass_rules() {
        let text = "# comment\nother:5432:*:u:no\nh:5432:d:u:yes\\:colon\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_match(text, "h", "5432", "d", "u").as_deref(),
            Some("yes:colon")
        );
        assert_eq!(
            pgpass_match(text, "z", "1", "d", "u").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_match("h:5432:d:u:p\n", "h", "5433", "d", "u"), None);
    }
}
