/*!
Who may act: the dashboard is read-only for everyone who can reach it, and its actions ("back up
now", "drill now") exist only when `[server] token` (or `OFFSITEDB_SERVER_TOKEN`) is set.

- The API takes `Authorization: Bearer <token>`, compared in constant time, and never a cookie
  (so another site cannot make a browser act through it).
- The pages take a sign-in form (POST /login with the token) that sets an HttpOnly,
  SameSite=Strict session cookie: an issue time and an HMAC of the token under a key made at
  start (the cookie never holds the token; a restart signs everyone out), valid for
  [`SESSION_FOR`].
- Every action form carries a CSRF field, an HMAC of the session; and every POST whose `Origin`
  is present and not this host, or whose `Sec-Fetch-Site` is `cross-site`, is refused before
  anything else ([`cross_site`]).
*/

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::error::{Error, Result};

/// The session cookie's name.
pub const COOKIE: &str = "offsitedb_session";
/// How long a sign-in lasts.
pub const SESSION_FOR: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// Shorter tokens are refused at start: the token is all that guards the actions.
pub const TOKEN_MIN: usize = 16;

pub struct Auth {
    token: Option<Secret>,
    key: [u8; 32],
}

/// Equal, in time that does not depend on where they differ (both are hashed first, so the
/// length does not show either).
fn same(a: &[u8], b: &[u8]) -> bool {
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    let diff = x
        .iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q));
    std::hint::black_box(diff) == 0
}

impl Auth {
    /// With `token` (none: read-only). A token shorter than [`TOKEN_MIN`] is refused.
    pub fn new(token: Option<Secret>) -> Result<Auth> {
        if let Some(t) = &token
            && t.expose().chars().count() < TOKEN_MIN
        {
            return Err(Error::config(format!(
                "the dashboard's token ([server] token or {}) is shorter than {TOKEN_MIN} characters",
                crate::config::SERVER_TOKEN_ENV
            ))
            .with_hint("make one with: openssl rand -hex 32"));
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| Error::internal(format!("no randomness for the session key: {e}")))?;
        Ok(Auth { token, key })
    }

    /// Actions exist: a token is configured.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        crate::units::hex(&m.finalize().into_bytes())
    }

    /// The API's check: `Authorization: Bearer <token>`.
    pub fn bearer(&self, header: Option<&str>) -> bool {
        let (Some(token), Some(h)) = (&self.token, header) else {
            return false;
        };
        let Some(given) = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
        else {
            return false;
        };
        same(given.trim().as_bytes(), token.expose().as_bytes())
    }

    /// Whether `given` (the sign-in form's field) is the token.
    pub fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| same(given.as_bytes(), t.expose().as_bytes()))
    }

    /// A new session cookie's value, issued at `now` (unix seconds).
    pub fn session(&self, now: i64) -> Option<String> {
        let token = self.token.as_ref()?;
        let at = now.to_string();
        Some(format!(
            "{at}.{}",
            self.mac(&[b"session", at.as_bytes(), token.expose().as_bytes()])
        ))
    }

    /// The session in a `Cookie:` header, if it is one of ours and has not expired.
    pub fn valid_session(&self, cookie_header: Option<&str>, now: i64) -> Option<String> {
        let value = cookie_header?.split(';').find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })?;
        let (at, _) = value.split_once('.')?;
        let issued: i64 = at.parse().ok()?;
        if now < issued || now - issued > SESSION_FOR.as_secs() as i64 {
            return None;
        }
        let expected = self.session(issued)?;
        same(value.as_bytes(), expected.as_bytes()).then_some(value)
    }

    /// The CSRF field of forms shown to `session`.
    pub fn csrf(&self, session: &str) -> String {
        self.mac(&[b"csrf", session.as_bytes()])
    }

    pub fn csrf_ok(&self, session: &str, given: &str) -> bool {
        same(self.csrf(session).as_bytes(), given.as_bytes())
    }
}

/// Why a POST is refused as cross-site, if it is: an `Origin` that is present and not this
/// host (`Host`), or `Sec-Fetch-Site: cross-site`.
pub fn cross_site(
    origin: Option<&str>,
    host: Option<&str>,
    fetch_site: Option<&str>,
) -> Option<String> {
    if fetch_site.is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return Some("a cross-site request (Sec-Fetch-Site: cross-site)".into());
    }
    let origin = origin?;
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (authority, host) {
        (Some(a), Some(h)) if a.eq_ignore_ascii_case(h.trim()) => None,
        _ => Some(format!(
            "a request from another origin ({origin}, this is {})",
            host.unwrap_or("an unnamed host")
        )),
    }
}

/// The warnings of a dashboard listening on `addr`.
pub fn exposure(addr: &std::net::SocketAddr, token: bool) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    Some(if token {
        format!(
            "the dashboard on {addr} is not on loopback and has no TLS: its token and session cookie travel in clear; put it behind a reverse proxy that terminates TLS"
        )
    } else {
        format!(
            "the dashboard on {addr} is not on loopback and has no token: it is readable (read-only) by anyone who can reach it; set [server] token to enable actions, and bind 127.0.0.1 or filter the port to keep it private"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(Some(Secret::new("correct horse battery staple"))).unwrap()
    }

    #[test]
    fn short_tokens_are_refused_with_the_fix() {
        let e = Auth::new(Some(Secret::new("short"))).err().unwrap();
        assert!(e.message().contains("shorter than 16"), "{e:?}");
        assert!(e.hint().unwrap().contains("openssl rand"));
        assert!(!Auth::new(None).unwrap().enabled());
    }

    #[test]
    fn bearer_tokens() {
        let a = auth();
        assert!(a.bearer(Some("Bearer correct horse battery staple")));
        assert!(!a.bearer(Some("Bearer correct horse battery stapl")));
        assert!(!a.bearer(Some("correct horse battery staple")));
        assert!(!a.bearer(None));
        assert!(!Auth::new(None).unwrap().bearer(Some("Bearer x")));
    }

    #[test]
    fn sessions_hold_no_token_expire_and_are_bound_to_the_key() {
        let a = auth();
        let s = a.session(1000).unwrap();
        assert!(!s.contains("horse"));
        let header = format!("x=1; {COOKIE}={s}");
        assert_eq!(a.valid_session(Some(&header), 1001), Some(s.clone()));
        let late = 1000 + SESSION_FOR.as_secs() as i64 + 1;
        assert_eq!(a.valid_session(Some(&header), late), None);
        // Another process (another key) does not take it; nor an edited issue time.
        assert_eq!(auth().valid_session(Some(&header), 1001), None);
        let forged = format!("{COOKIE}=2000.{}", s.split_once('.').unwrap().1);
        assert_eq!(a.valid_session(Some(&forged), 2001), None);
        assert!(a.csrf_ok(&s, &a.csrf(&s)));
        assert!(!a.csrf_ok(&s, &a.csrf(&a.session(1001).unwrap())));
    }

    #[test]
    fn cross_site_requests() {
        let h = Some("127.0.0.1:8080");
        assert_eq!(cross_site(None, h, None), None);
        assert_eq!(cross_site(Some("http://127.0.0.1:8080"), h, None), None);
        assert_eq!(cross_site(None, h, Some("same-origin")), None);
        assert!(cross_site(Some("http://evil.example"), h, None).is_some());
        assert!(cross_site(Some("null"), h, None).is_some());
        assert!(cross_site(None, h, Some("cross-site")).is_some());
        assert!(cross_site(Some("http://127.0.0.1:8080"), None, None).is_some());
    }

    #[test]
    fn exposure_warnings() {
        let lo: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(exposure(&lo, false), None);
        assert!(exposure(&any, false).unwrap().contains("read-only"));
        assert!(exposure(&any, true).unwrap().contains("reverse proxy"));
    }
}
