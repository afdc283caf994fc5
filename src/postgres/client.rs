/*!
Our own connection to the source database: it proves the URL, the password and the database
before any child process starts (so those failures get clear messages of their own), and reads
what the manifest records about the server.

TLS follows libpq's `sslmode`: `disable`; `prefer`/`require` encrypt without checking the
certificate (libpq's meaning); `verify-ca` checks the chain; `verify-full` the chain and the host
name. Roots come from `sslrootcert` (a PEM file), or Mozilla's set for `sslrootcert=system` and
when no file is given.
*/

use std::sync::Arc;
use std::time::Duration;

use postgres::config::{SslMode, TargetSessionAttrs};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::conninfo::ConnInfo;
use crate::error::{Error, Result};

pub use postgres::Client;

/// What the manifest records about the source server.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    /// `server_version`, e.g. "16.4 (Debian 16.4-1.pgdg120+1)".
    pub version: String,
    /// `server_version_num`, e.g. 160004.
    pub version_num: u32,
    pub major: u32,
    /// From `pg_control_system()`; `None` where the role may not read it.
    pub system_identifier: Option<String>,
    pub database: String,
    pub user: String,
    /// `pg_database_size` of the database, the upper estimate for sizing uploads.
    pub database_size: Option<u64>,
    pub in_recovery: bool,
}

/// Opens a connection. `what` names the connection in messages ("the source database").
pub fn connect(ci: &ConnInfo, what: &str) -> Result<Client> {
    let mut cfg = postgres::Config::new();
    // Several hosts (a primary and its standbys): tried in order, as libpq does, each with
    // its own port, so that we reach the server pg_dump or pg_receivewal would.
    for h in ci.hosts() {
        if h.starts_with('/') {
            cfg.host_path(&h);
        } else {
            cfg.host(&h);
        }
    }
    for p in ci.ports() {
        cfg.port(p);
    }
    cfg.target_session_attrs(target_session_attrs(ci)?);
    cfg.user(&ci.user());
    cfg.dbname(&ci.dbname());
    if let Some(p) = ci.password() {
        cfg.password(p);
    }
    cfg.application_name(ci.get("application_name").unwrap_or("offsitedb"));
    if let Some(o) = ci.get("options") {
        cfg.options(o);
    }
    let timeout = ci
        .get("connect_timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .or_else(|| {
            std::env::var("PGCONNECT_TIMEOUT")
                .ok()
                .and_then(|t| t.parse().ok())
        })
        .filter(|t| *t > 0)
        .unwrap_or(15);
    cfg.connect_timeout(Duration::from_secs(timeout));
    let sslmode = ci.sslmode();
    let tls_mode = match sslmode.as_str() {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        "require" | "verify-ca" | "verify-full" => SslMode::Require,
        other => {
            return Err(Error::config(format!(
                "unknown sslmode {other:?} (use disable, prefer, require, verify-ca or verify-full)"
            )));
        }
    };
    if ci.is_unix_socket() {
        cfg.ssl_mode(SslMode::Disable);
    } else {
        cfg.ssl_mode(tls_mode);
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ci, &sslmode)?);
    // The driver's timeout covers the TCP connect only; a server (or a proxy) that accepts and
    // then says nothing would hang us. The whole handshake gets the same limit, like libpq's.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pg-connect".into())
        .spawn(move || {
            let _ = tx.send(cfg.connect(tls));
        })
        .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
    // libpq's connect_timeout is per host: a dead first host leaves the others their time.
    let hosts = ci.hosts().len() as u32;
    match rx.recv_timeout(Duration::from_secs(timeout) * hosts + Duration::from_millis(500)) {
        Ok(r) => r.map_err(|e| connect_error(ci, what, &e, timeout)),
        Err(_) => Err(Error::source_db(format!(
            "cannot connect to {what} {}: no answer within {timeout}s",
            ci.redacted()
        ))
        .with_hint(
            "check the host and port, and that a firewall lets this machine reach the server",
        )
        .transient()),
    }
}

/// libpq's `target_session_attrs` as the driver knows it. `primary` is `read-write` and
/// `standby` is `read-only` (the driver asks `transaction_read_only`, which a standby always
/// has); `prefer-standby` falls back to any server in libpq, so any server it is here.
fn target_session_attrs(ci: &ConnInfo) -> Result<TargetSessionAttrs> {
    let v = ci
        .get("target_session_attrs")
        .map(str::to_string)
        .or_else(|| std::env::var("PGTARGETSESSIONATTRS").ok())
        .unwrap_or_default();
    Ok(match v.as_str() {
        "" | "any" | "prefer-standby" => TargetSessionAttrs::Any,
        "read-write" | "primary" => TargetSessionAttrs::ReadWrite,
        "read-only" | "standby" => TargetSessionAttrs::ReadOnly,
        other => {
            return Err(Error::config(format!(
                "unknown target_session_attrs {other:?} (use any, read-write, read-only, primary, standby or prefer-standby)"
            )));
        }
    })
}

fn tls_config(ci: &ConnInfo, sslmode: &str) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("tls setup: {e}")))?;
    let rootcert = ci
        .get("sslrootcert")
        .map(str::to_string)
        .or_else(|| std::env::var("PGSSLROOTCERT").ok());
    let verify = matches!(sslmode, "verify-ca" | "verify-full");
    let config = if verify
        || rootcert.as_deref().is_some_and(|r| r != "system") && sslmode == "require"
    {
        let mut roots = rustls::RootCertStore::empty();
        match rootcert.as_deref() {
            Some(path) if path != "system" => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::config(format!(
                        "cannot read sslrootcert {path}: {}",
                        crate::error::describe_io(&e)
                    ))
                })?;
                for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                    let cert: CertificateDer = cert.map_err(|e| {
                        Error::config(format!(
                            "sslrootcert {path} is not a PEM certificate file: {e}"
                        ))
                    })?;
                    roots.add(cert).map_err(|e| {
                        Error::config(format!(
                            "sslrootcert {path} holds an unusable certificate: {e}"
                        ))
                    })?;
                }
            }
            _ => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::config(format!("tls roots: {e}")))?;
        if sslmode == "verify-full" {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                .with_no_client_auth()
        }
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(
                rustls::crypto::ring::default_provider(),
            )))
            .with_no_client_auth()
    };
    Ok(config)
}

/// `sslmode=require`: encryption without certificate checks, as libpq does.
#[derive(Debug)]
struct EncryptOnly(rustls::crypto::CryptoProvider);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Turns a connection failure into one line that says what happened and what to do.
fn connect_error(ci: &ConnInfo, what: &str, e: &postgres::Error, timeout: u64) -> Error {
    let err = connect_error_plain(ci, what, e, timeout);
    // A name that only exists inside a private network says so, whatever else went wrong.
    match super::provider::unreachable_hint(&ci.host()) {
        Some(h) if e.as_db_error().is_none() => err.with_hint(h),
        _ => err,
    }
}

fn connect_error_plain(ci: &ConnInfo, what: &str, e: &postgres::Error, timeout: u64) -> Error {
    let target = ci.redacted();
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let msg = db.message();
        return match code {
            "28P01" => Error::source_db(format!("{what} {target} refused the password: {msg}"))
                .with_hint("check the password in the URL (or PGPASSWORD / ~/.pgpass)"),
            "28000" => Error::source_db(format!("{what} {target} refused the connection: {msg}"))
                .with_hint("check the user name, and that pg_hba.conf lets this host connect"),
            "3D000" => Error::source_db(format!("{what} {target}: {msg}"))
                .with_hint("check the database name at the end of the URL"),
            "53300" => Error::source_db(format!(
                "{what} {target} has no free connection slots: {msg}"
            ))
            .transient(),
            "57P03" => Error::source_db(format!(
                "{what} {target} is not accepting connections yet: {msg}"
            ))
            .transient(),
            _ => Error::source_db(format!(
                "{what} {target} refused the connection: {msg} ({code})"
            )),
        };
    }
    let chain = error_chain(e);
    let lower = chain.to_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        return Error::source_db(format!(
            "cannot connect to {what} {target}: no answer within {timeout}s"
        ))
        .with_hint(
            "check the host and port, and that a firewall lets this machine reach the server",
        )
        .transient();
    }
    if lower.contains("refused") {
        return Error::source_db(format!(
            "cannot connect to {what} {target}: connection refused"
        ))
        .with_hint("check the host and port, and that the server is running")
        .transient();
    }
    if lower.contains("failed to lookup")
        || lower.contains("name or service not known")
        || lower.contains("no such host")
        || lower.contains("failed to resolve")
    {
        return Error::source_db(format!(
            "cannot connect to {what} {target}: the host name does not resolve"
        ))
        .with_hint("check the host name in the URL");
    }
    if lower.contains("password missing") || lower.contains("password authentication") {
        return Error::source_db(format!(
            "{what} {target} asks for a password and none was given"
        ))
        .with_hint("put the password in the URL, or set PGPASSWORD, or add it to ~/.pgpass");
    }
    if lower.contains("tls") || lower.contains("certificate") || lower.contains("ssl") {
        return Error::source_db(format!(
            "cannot connect to {what} {target}: tls failed: {chain}"
        ))
        .with_hint("check sslmode and sslrootcert in the URL");
    }
    Error::source_db(format!("cannot connect to {what} {target}: {chain}"))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    let s = parts.join(": ");
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A query failure on an open connection, as a `Source` error.
pub fn query_error(what: &str, e: &postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::source_db(format!("{what}: {} ({})", db.message(), db.code().code())),
        None => Error::source_db(format!("{what}: {}", error_chain(e))),
    }
}

/// Reads what the manifest records about the server.
pub fn server_info(client: &mut Client) -> Result<ServerInfo> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4,
                    current_database()::text, current_user::text, pg_is_in_recovery()",
            &[],
        )
        .map_err(|e| query_error("cannot read the server version", &e))?;
    let version: String = row.get(0);
    let version_num: i32 = row.get(1);
    // Both may be refused to a restricted role; they are nice to have, not required.
    let system_identifier = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .ok()
        .map(|r| r.get::<_, String>(0));
    let database_size = client
        .query_one("SELECT pg_database_size(current_database())::int8", &[])
        .ok()
        .map(|r| r.get::<_, i64>(0) as u64);
    Ok(ServerInfo {
        version,
        version_num: version_num as u32,
        major: version_num as u32 / 10000,
        system_identifier,
        database: row.get(2),
        user: row.get(3),
        database_size,
        in_recovery: row.get(4),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_session_attrs_as_libpq_names_them() {
        let attrs = |s: &str| target_session_attrs(&ConnInfo::parse(s).unwrap());
        assert_eq!(attrs("host=a dbname=d").unwrap(), TargetSessionAttrs::Any);
        for (v, want) in [
            ("any", TargetSessionAttrs::Any),
            ("prefer-standby", TargetSessionAttrs::Any),
            ("read-write", TargetSessionAttrs::ReadWrite),
            ("primary", TargetSessionAttrs::ReadWrite),
            ("read-only", TargetSessionAttrs::ReadOnly),
            ("standby", TargetSessionAttrs::ReadOnly),
        ] {
            assert_eq!(
                attrs(&format!("host=a,b target_session_attrs={v}")).unwrap(),
                want,
                "{v}"
            );
        }
        let e = attrs("host=a target_session_attrs=writable").unwrap_err();
        assert!(e.message().contains("unknown target_session_attrs"), "{e}");
    }
}
