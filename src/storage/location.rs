/*!
Repository locations: `s3://bucket/prefix?endpoint=...&region=...&path_style=...`, `file:///path`,
or a plain path. Parsing is a pure function with a table of cases; provider conventions (B2, R2,
AWS) fill in the region and addressing style when the URL leaves them out.
*/

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3(S3Location),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Host and optional port, as it appears in the Host header.
    pub host: String,
    pub region: String,
    /// `https://host/bucket/key` rather than `https://bucket.host/key`.
    pub path_style: bool,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(s) => {
                write!(f, "s3://{}", s.bucket)?;
                if !s.prefix.is_empty() {
                    write!(f, "/{}", s.prefix)?;
                }
                write!(f, " at {}://{}", s.scheme, s.host)
            }
        }
    }
}

impl Location {
    /// The URL that parses back to this location, with everything spelled out (endpoint,
    /// region, addressing style): for a configuration written for another process.
    pub fn to_url(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::S3(s) => {
                let mut u = format!("s3://{}", s.bucket);
                if !s.prefix.is_empty() {
                    u.push('/');
                    u.push_str(&s.prefix);
                }
                format!(
                    "{u}?endpoint={}://{}&region={}&path_style={}",
                    s.scheme, s.host, s.region, s.path_style
                )
            }
        }
    }
}

const URL_HELP: &str =
    "use s3://BUCKET/PREFIX?endpoint=https://HOST&region=REGION, file:///PATH, or a plain path";

impl Location {
    /// Parses a repository URL. `env_region` is AWS_REGION / AWS_DEFAULT_REGION, if set.
    pub fn parse(url: &str, env_region: Option<&str>) -> Result<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::config("the repository URL is empty").with_hint(URL_HELP));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return parse_s3(rest, env_region).map(Location::S3);
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(Error::config(format!(
                    "file URL {url:?} must have an absolute path (file:///path)"
                )));
            }
            return Ok(Location::Local(PathBuf::from(percent_decode(path)?)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(
                Error::config(format!("unsupported repository URL scheme {scheme:?}"))
                    .with_hint(URL_HELP),
            );
        }
        let p = PathBuf::from(url);
        let abs = if p.is_absolute() {
            p
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io(format!("cannot read the current directory: {e}")))?
                .join(p)
        };
        Ok(Location::Local(abs))
    }
}

fn parse_s3(rest: &str, env_region: Option<&str>) -> Result<S3Location> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.contains('@') || bucket.contains(':') {
        // Never echo it: this is where people paste KEY:SECRET@.
        return Err(Error::config("the repository URL has credentials or a port before the bucket name")
            .with_hint("put credentials in access_key_id / secret_access_key (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), and the host in ?endpoint=https://HOST"));
    }
    if bucket.len() < 3
        || bucket.len() > 63
        || !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(Error::config(format!(
            "invalid bucket name {bucket:?}: 3 to 63 characters of a-z, 0-9, '-' and '.'"
        ))
        .with_hint(URL_HELP));
    }
    let prefix = prefix.trim_matches('/').to_string();
    if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
        return Err(Error::config(format!("invalid prefix {prefix:?}")));
    }

    let mut endpoint = None;
    let mut region = None;
    let mut path_style = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        match k {
            "endpoint" => endpoint = Some(v),
            "region" => region = Some(v),
            "path_style" | "force_path_style" => {
                path_style = Some(match v.as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => {
                        return Err(Error::config(format!(
                            "path_style must be true or false, not {v:?}"
                        )));
                    }
                })
            }
            _ => {
                return Err(Error::config(format!(
                    "unknown repository URL parameter {k:?} (known: endpoint, region, path_style)"
                )));
            }
        }
    }

    let (scheme, host) = match &endpoint {
        Some(e) => {
            let (scheme, hostpart) = e.split_once("://").ok_or_else(|| {
                Error::config(
                    "the endpoint must start with https:// (or http:// for a local test server)",
                )
            })?;
            if scheme != "https" && scheme != "http" {
                return Err(Error::config(format!(
                    "endpoint scheme must be https or http, not {scheme:?}"
                )));
            }
            let host = hostpart.trim_end_matches('/');
            if host.is_empty() || host.contains('/') || host.contains('@') {
                return Err(Error::config(
                    "the endpoint must be a scheme and host only, like https://s3.example.com",
                )
                .with_hint(
                    "credentials go in access_key_id / secret_access_key, not in the endpoint",
                ));
            }
            (scheme.to_string(), host.to_ascii_lowercase())
        }
        None => {
            let r = region
                .clone()
                .or(env_region.map(str::to_string))
                .unwrap_or_else(|| "us-east-1".into());
            ("https".to_string(), format!("s3.{r}.amazonaws.com"))
        }
    };

    let region = region
        .or_else(|| region_from_host(&host))
        .or(env_region.map(str::to_string))
        .unwrap_or_else(|| "us-east-1".into());
    // AWS prefers virtual-hosted addressing; every other service we target takes path style,
    // which also keeps dotted bucket names valid under TLS.
    let path_style = path_style.unwrap_or(endpoint.is_some() && !host.ends_with(".amazonaws.com"));

    Ok(S3Location {
        bucket: bucket.to_string(),
        prefix,
        scheme,
        host,
        region,
        path_style,
    })
}

/// The region a well-known provider encodes in its endpoint host.
fn region_from_host(host: &str) -> Option<String> {
    let h = host.split(':').next().unwrap_or(host);
    if h.ends_with(".r2.cloudflarestorage.com") {
        return Some("auto".into());
    }
    for suffix in [".backblazeb2.com", ".amazonaws.com"] {
        if let Some(head) = h.strip_suffix(suffix) {
            // s3.us-west-004.backblazeb2.com, s3.eu-central-1.amazonaws.com
            let region = head.rsplit('.').next()?;
            let region = region.strip_prefix("s3-").unwrap_or(region);
            if region != "s3" && !region.is_empty() {
                return Some(region.to_string());
            }
        }
    }
    None
}

fn percent_decode(s: &str) -> Result<String> {
    crate::units::percent_decode(s)
        .ok_or_else(|| Error::config(format!("bad percent-encoding in {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(url: &str) -> S3Location {
        match Location::parse(url, None).unwrap() {
            Location::S3(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn to_url_parses_back_to_the_same_location() {
        for url in [
            "s3://my-backups/offsitedb?endpoint=https://s3.us-west-004.backblazeb2.com",
            "s3://bkt/a/b/?region=eu-central-1",
            "s3://bkt?endpoint=http://127.0.0.1:9000&region=us-east-1",
            "/var/backups/repo",
        ] {
            let l = Location::parse(url, None).unwrap();
            assert_eq!(Location::parse(&l.to_url(), None).unwrap(), l, "{url}");
        }
    }

    #[test]
    fn s3_urls() {
        // (url, bucket, prefix, scheme, host, region, path_style)
        let cases = [
            (
                "s3://my-backups/offsitedb?endpoint=https://s3.us-west-004.backblazeb2.com",
                "my-backups",
                "offsitedb",
                "https",
                "s3.us-west-004.backblazeb2.com",
                "us-west-004",
                true,
            ),
            (
                "s3://bkt?endpoint=https://acc123.r2.cloudflarestorage.com",
                "bkt",
                "",
                "https",
                "acc123.r2.cloudflarestorage.com",
                "auto",
                true,
            ),
            (
                "s3://bkt/a/b/?region=eu-central-1",
                "bkt",
                "a/b",
                "https",
                "s3.eu-central-1.amazonaws.com",
                "eu-central-1",
                false,
            ),
            (
                "s3://bkt/p?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=false",
                "bkt",
                "p",
                "http",
                "127.0.0.1:9000",
                "us-east-1",
                false,
            ),
            (
                "s3://bkt/p?endpoint=http%3A%2F%2Flocalhost%3A8333",
                "bkt",
                "p",
                "http",
                "localhost:8333",
                "us-east-1",
                true,
            ),
        ];
        for (url, bucket, prefix, scheme, host, region, path_style) in cases {
            let s = s3(url);
            assert_eq!(
                (
                    s.bucket.as_str(),
                    s.prefix.as_str(),
                    s.scheme.as_str(),
                    s.host.as_str(),
                    s.region.as_str(),
                    s.path_style
                ),
                (bucket, prefix, scheme, host, region, path_style),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "",
            "s3://B",
            "s3://UPPER/x",
            "s3://bkt/x?endpoint=ftp://h",
            "s3://bkt/x?endpoint=h",
            "s3://bkt/x?endpoint=https://h/path",
            "s3://bkt/x?colour=blue",
            "s3://bkt/../x",
            "gs://bkt/x",
            "file://relative",
        ] {
            let e = Location::parse(url, None).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Config, "{url}");
        }
    }

    #[test]
    fn credentials_pasted_into_the_url_are_never_echoed() {
        for url in [
            "s3://AKIAXYZ:Sup3rS3cret@bucket/prefix",
            "s3://bkt/p?endpoint=https://AKIAXYZ:Sup3rS3cret@s3.example.com",
            "s3://bkt/p?endpoint=AKIAXYZ:Sup3rS3cret@s3.example.com",
        ] {
            let e = Location::parse(url, None).unwrap_err();
            let text = format!("{} {}", e.message(), e.hint().unwrap_or(""));
            assert!(
                !text.contains("Sup3rS3cret") && !text.contains("AKIAXYZ"),
                "{text}"
            );
        }
    }

    #[test]
    fn local_paths() {
        assert_eq!(
            Location::parse("file:///var/backups/x", None).unwrap(),
            Location::Local("/var/backups/x".into())
        );
        assert_eq!(
            Location::parse("/srv/repo", None).unwrap(),
            Location::Local("/srv/repo".into())
        );
        match Location::parse("rel/repo", None).unwrap() {
            Location::Local(p) => assert!(p.is_absolute() && p.ends_with("rel/repo")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn env_region_fills_in_for_custom_endpoints() {
        let loc =
            Location::parse("s3://bkt?endpoint=https://minio.lan", Some("eu-west-3")).unwrap();
        let Location::S3(s) = loc else { panic!() };
        assert_eq!(s.region, "eu-west-3");
    }
}
