/*!
Where the database lives, from its host name and from how it answers, and what that changes:

- Neon: a pooled host (`ep-...-pooler.REGION.aws.neon.tech`) goes through PgBouncer in
  transaction mode, which pg_dump cannot use; the direct host is the same name without `-pooler`,
  so it is switched, with a note.
- Fly.io: `*.internal` and `*.flycast` names exist only inside Fly's private network; when one does
  not resolve or answer, the error says so and gives both ways out.
- Hosted providers (Neon, Supabase, Render, AWS RDS, Azure, DigitalOcean, Aiven, Crunchy Bridge,
  Timescale, Railway) require TLS: `sslmode` defaults to `require` there when the URL does
  not say. `verify-full` with `sslrootcert=FILE` checks the certificate and the host name.

All of it is read from the name alone; how the server answers (a pooler in front) is
[`super::pooler`].
*/

use super::ConnInfo;

/// A hosted provider recognised from the host name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Neon,
    Fly,
    Supabase,
    Render,
    Rds,
    Azure,
    DigitalOcean,
    Aiven,
    Crunchy,
    Timescale,
    Railway,
    Other,
}

impl Provider {
    pub fn of_host(host: &str) -> Provider {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        let ends = |s: &str| h.ends_with(s);
        if ends(".neon.tech") {
            Provider::Neon
        } else if is_fly_private(&h) || ends(".fly.dev") {
            Provider::Fly
        } else if ends(".supabase.co") || ends(".supabase.com") {
            Provider::Supabase
        } else if ends(".render.com") {
            Provider::Render
        } else if ends(".rds.amazonaws.com") {
            Provider::Rds
        } else if ends(".postgres.database.azure.com") {
            Provider::Azure
        } else if ends(".ondigitalocean.com") {
            Provider::DigitalOcean
        } else if ends(".aivencloud.com") {
            Provider::Aiven
        } else if ends(".db.postgresbridge.com") {
            Provider::Crunchy
        } else if ends(".tsdb.cloud.timescale.com") {
            Provider::Timescale
        } else if ends(".rlwy.net") || ends(".railway.app") {
            Provider::Railway
        } else {
            Provider::Other
        }
    }

    /// Providers that accept only TLS connections from outside.
    fn requires_tls(self) -> bool {
        !matches!(self, Provider::Fly | Provider::Other)
    }
}

/// The connection OffsiteDB should use for `ci`, and a note for every change made.
pub fn prepare(ci: &ConnInfo) -> (ConnInfo, Vec<String>) {
    let mut out = ci.clone();
    let mut notes = Vec::new();
    let Some(host) = ci.get("host").map(str::to_string) else {
        return (out, notes);
    };
    if host.contains(',') {
        return (out, notes);
    }
    let provider = Provider::of_host(&host);
    if provider == Provider::Neon
        && let Some((first, rest)) = host.split_once('.')
        && let Some(direct) = first.strip_suffix("-pooler")
    {
        let direct = format!("{direct}.{rest}");
        notes.push(format!(
            "{host} is Neon's pooled endpoint (PgBouncer in transaction mode, which pg_dump cannot use): connecting to the direct endpoint {direct} instead"
        ));
        out.set("host", &direct);
    }
    if provider.requires_tls()
        && ci.get("sslmode").is_none()
        && std::env::var_os("PGSSLMODE").is_none()
    {
        out.set("sslmode", "require");
    }
    (out, notes)
}

/// Fly's private names: `APP.flycast`, `APP.internal` and its `REGION.APP.internal`,
/// `top1.nearest.of.APP.internal` forms; not AWS's `*.ec2.internal` / `*.compute.internal` or
/// Google Cloud's `*.c.PROJECT.internal`.
fn is_fly_private(h: &str) -> bool {
    h.ends_with(".flycast")
        || (h.ends_with(".internal")
            && !h.ends_with(".ec2.internal")
            && !h.ends_with(".compute.internal")
            && !h.contains(".c."))
}

/// A hint for a host that did not resolve or answer, when its name says why.
pub fn unreachable_hint(host: &str) -> Option<String> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    if is_fly_private(&h) {
        Some(format!(
            "{host} is a Fly.io private address: it resolves only inside Fly's private network. Either run OffsiteDB as a Fly app in the same organization (docs/DEPLOY.md), or give the database a public address (fly ips allocate-v4 -a APP, expose port 5432) and use APP.fly.dev; for a one-off, fly proxy 5432 -a APP and connect to localhost"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(url: &str) -> (String, String, Vec<String>) {
        let (c, notes) = prepare(&ConnInfo::parse(url).unwrap());
        (
            c.get("host").unwrap_or("").to_string(),
            c.get("sslmode").unwrap_or("").to_string(),
            notes,
        )
    }

    #[test]
    fn neon_pooled_hosts_become_direct_and_keep_tls() {
        let (host, ssl, notes) = prep(
            "postgres://u:p@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb?sslmode=require",
        );
        assert_eq!(host, "ep-cool-darkness-123456.us-east-2.aws.neon.tech");
        assert_eq!(ssl, "require");
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("direct endpoint ep-cool-darkness-123456.us-east-2.aws.neon.tech")
        );
        assert!(!notes[0].contains(":p@"));
        // A direct Neon host is left alone, and gets TLS when the URL does not say.
        let (host, ssl, notes) = prep("postgres://u@ep-x-1.eu-central-1.aws.neon.tech/db");
        assert_eq!(
            (host.as_str(), ssl.as_str()),
            ("ep-x-1.eu-central-1.aws.neon.tech", "require")
        );
        assert!(notes.is_empty());
        // An explicit sslmode wins.
        let (_, ssl, _) = prep("postgres://u@ep-x-1.aws.neon.tech/db?sslmode=verify-full");
        assert_eq!(ssl, "verify-full");
    }

    #[test]
    fn providers_from_host_names() {
        for (host, p) in [
            ("db.abcdefgh.supabase.co", Provider::Supabase),
            ("aws-0-eu-central-1.pooler.supabase.com", Provider::Supabase),
            ("dpg-abc-a.oregon-postgres.render.com", Provider::Render),
            ("mydb.c9akciq32.eu-west-1.rds.amazonaws.com", Provider::Rds),
            ("srv.postgres.database.azure.com", Provider::Azure),
            (
                "db-postgresql-nyc1-1.b.db.ondigitalocean.com",
                Provider::DigitalOcean,
            ),
            ("pg-1.aivencloud.com", Provider::Aiven),
            ("p.abc.db.postgresbridge.com", Provider::Crunchy),
            ("x.y.tsdb.cloud.timescale.com", Provider::Timescale),
            // A self-hosted server on EC2 is not a provider that forces TLS.
            ("ec2-1-2-3-4.compute-1.amazonaws.com", Provider::Other),
            ("ip-10-0-0-5.ec2.internal", Provider::Other),
            ("db.us-central1-a.c.my-project.internal", Provider::Other),
            ("roundhouse.proxy.rlwy.net", Provider::Railway),
            ("my-db.internal", Provider::Fly),
            ("my-db.flycast", Provider::Fly),
            ("db.example.com", Provider::Other),
            ("127.0.0.1", Provider::Other),
        ] {
            assert_eq!(Provider::of_host(host), p, "{host}");
        }
        // TLS by default for hosted providers, not for Fly's private network or unknown hosts.
        assert_eq!(
            prep("postgres://u@db.abc.supabase.co/postgres").1,
            "require"
        );
        assert_eq!(prep("postgres://u@my-db.internal:5432/app").1, "");
        assert_eq!(prep("postgres://u@db.example.com/app").1, "");
    }

    #[test]
    fn fly_private_names_explain_themselves() {
        let h = unreachable_hint("my-db.internal").unwrap();
        assert!(
            h.contains("Fly.io private address") && h.contains("fly ips allocate-v4"),
            "{h}"
        );
        assert!(unreachable_hint("top2.nearest.of.my-db.internal.").is_some());
        assert!(unreachable_hint("my-db.flycast").is_some());
        assert!(unreachable_hint("db.example.com").is_none());
        assert!(unreachable_hint("ip-10-0-0-5.ec2.internal").is_none());
    }
}
