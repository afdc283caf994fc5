//! The dashboard and its JSON API, on a daemon started in this process (port 0) over a real
//! SeaweedFS bucket and a real source cluster: two sources, one whose drills pass and one whose
//! drill genuinely fails (a CHECK that needs a database setting pg_dump does not carry, as in
//! tests/it/drill.rs). The pages show what the API returns; unknown names are 404s; actions need
//! the token, and cross-site POSTs are refused even with a valid session; the whole thing in a
//! real headless browser (Debian's chromium driven by playwright-core).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{ACCESS_KEY, Repo, SECRET_KEY, Source, project_dir};

const TOKEN: &str = "dashboard-token-5f1c9a7e2b";

/// An HTTP answer.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request on its own connection (the server closes it after the answer).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(port: u16, path: &str) -> Resp {
    http(port, "GET", path, &[], "")
}

/// The `value` of the first element with class `class` in `html` (`<data class value>`).
fn data_value(html: &str, class: &str) -> Option<String> {
    let at = html.find(&format!("class=\"{class}\""))?;
    let rest = &html[at..];
    let v = rest.find("value=\"")? + 7;
    let end = rest[v..].find('"')?;
    Some(rest[v..v + end].to_string())
}

/// The overview's row of `source`.
fn row<'a>(html: &'a str, source: &str) -> &'a str {
    let start = html
        .find(&format!("data-source=\"{source}\""))
        .unwrap_or_else(|| panic!("no row for {source}:\n{html}"));
    let end = html[start..].find("</tr>").unwrap() + start;
    &html[start..end]
}

/// A daemon with two sources, `shop` (drills pass) and `broken` (its drill fails), each backed
/// up once by `offsitedb run` before the daemon starts.
pub struct Fixture {
    pub repo: Repo,
    _src: Source,
    pub running: Option<offsitedb::daemon::Running>,
    pub port: u16,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop();
        }
    }
}

pub fn fixture(token: Option<&str>) -> Fixture {
    let src = Source::start();
    src.create_db(
        "shop",
        "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 500) g",
    );
    crate::drill::guarded_database(&src, "");
    let s = Repo::s3("dash").with_config("");
    let state = s.cli.state_dir().join("state.db");
    // Everything in the file: the daemon runs in this process, with this process's environment.
    std::fs::write(
        s.config_path(),
        format!(
            "[repository]\nurl = \"{}\"\nkey_file = \"master.key\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
             secret_access_key = \"{SECRET_KEY}\"\n\n[state]\npath = \"{}\"\n\n{}\
             [[source]]\nname = \"shop\"\nurl = \"{}\"\nschedule = \"0 0 1 1 *\"\n\n\
             [[source]]\nname = \"broken\"\nurl = \"{}\"\nschedule = \"0 0 1 1 *\"\n",
            s.url,
            state.display(),
            token.map_or(String::new(), |t| format!("[server]\ntoken = \"{t}\"\n\n")),
            src.url("shop"),
            src.url("app"),
        ),
    )
    .unwrap();
    s.cli.ok(&["run", "shop"]);
    let r = s.cli.run(&["run", "broken"]);
    assert_eq!(r.code, 12, "the drill of broken must fail:\n{r:?}");
    let settings = offsitedb::config::Settings::load(
        offsitedb::config::Overrides {
            config: Some(s.config_path()),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let running =
        offsitedb::daemon::spawn(settings, TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let port = running.addr.port();
    Fixture {
        repo: s,
        _src: src,
        running: Some(running),
        port,
    }
}

/// Waits until `f` holds (a job the dashboard started ran to its end).
fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn runs(port: u16, source: &str, job: &str, result: &str) -> usize {
    let r = get(port, &format!("/api/v1/sources/{source}/runs"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["job"] == job && x["result"] == result)
        .count()
}

#[test]
fn the_api_and_the_pages_show_what_the_backups_made_and_actions_need_the_token() {
    let f = fixture(Some(TOKEN));
    let (port, s) = (f.port, &f.repo);

    // The API lists what the backups made, as `list` sees it.
    let o = get(port, "/api/v1/sources");
    assert_eq!(o.status, 200, "{}", o.body);
    assert_eq!(o.header("content-type"), Some("application/json"));
    let o = o.json();
    let sources = o["sources"].as_array().unwrap();
    let names: Vec<&str> = sources
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop", "broken"]);
    let listed = s.list(Some("shop"));
    let shop = &sources[0];
    assert_eq!(shop["health"]["level"], "green", "{shop:#}");
    assert_eq!(shop["snapshots"], 1);
    assert_eq!(shop["stored_bytes"], listed[0].stored_bytes);
    assert_eq!(
        shop["tested_restore_seconds"].as_f64(),
        listed[0].tested_restore_seconds
    );
    let broken = &sources[1];
    assert_eq!(broken["health"]["level"], "red", "{broken:#}");
    assert_eq!(broken["health"]["word"], "Failing");
    let why = broken["health"]["reasons"].to_string();
    assert!(
        why.contains("the last drill") && why.contains("failed"),
        "{why}"
    );
    assert_eq!(broken["last_drill"]["passed"], false);
    let snaps = get(port, "/api/v1/sources/shop/snapshots").json();
    let ids: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, s.ids(Some("shop")));

    // The overview page shows the same numbers and states, in words too.
    let page = get(port, "/");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    for x in sources {
        let name = x["name"].as_str().unwrap();
        let r = row(&page.body, name);
        assert!(
            r.contains(&format!(
                "data-level=\"{}\"",
                x["health"]["level"].as_str().unwrap()
            )),
            "{r}"
        );
        assert!(r.contains(x["health"]["word"].as_str().unwrap()), "{r}");
        assert_eq!(
            data_value(r, "n-snapshots"),
            Some(x["snapshots"].to_string()),
            "{r}"
        );
        assert_eq!(
            data_value(r, "n-bytes"),
            Some(x["stored_bytes"].to_string()),
            "{r}"
        );
        assert_eq!(
            data_value(r, "n-restore").map(|v| v.parse::<f64>().unwrap()),
            x["tested_restore_seconds"].as_f64(),
            "{r}"
        );
    }
    // No actions for a visitor who has not signed in.
    assert!(!page.body.contains("Back up now"));

    // A snapshot: its tables, rows, and the documented restore commands.
    let id = &ids[0];
    let snap = get(port, &format!("/api/v1/sources/shop/snapshots/{id}")).json();
    assert_eq!(snap["tables"][0]["name"], "orders");
    assert_eq!(snap["tables"][0]["rows"], 500);
    let restore = format!("offsitedb restore {id} --source shop --to postgres://...");
    assert_eq!(snap["restore"]["offsitedb"], restore.as_str());
    let html = get(port, &format!("/sources/shop/snapshots/{id}"));
    assert_eq!(html.status, 200);
    assert!(html.body.contains(&restore), "{}", html.body);
    assert!(html.body.contains(&format!(
        "offsitedb decrypt {id} --source shop | gunzip | pg_restore"
    )));
    // The failed drill's page names it, in red and in words.
    let b = get(port, "/sources/broken");
    assert!(
        b.body.contains("state red") && b.body.contains("Failing"),
        "{}",
        b.body
    );
    let drills = get(port, "/api/v1/sources/broken/drills").json();
    assert_eq!(drills[0]["result"], "failed", "{drills:#}");
    assert!(
        drills[0]["problems"].to_string().contains("guarded"),
        "{drills:#}"
    );

    // Unknown and malformed names, unknown paths: JSON errors, never a panic.
    for path in [
        "/api/v1/sources/nope",
        "/api/v1/sources/nope/snapshots",
        "/api/v1/sources/nope/runs",
        "/api/v1/sources/shop/snapshots/20200101T000000Z-aaaaaa",
        "/api/v1/sources/shop/snapshots/not-an-id",
        "/api/v1/nothing",
    ] {
        let r = get(port, path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{path}: {}", r.body);
    }
    let r = get(port, "/api/v1/sources/-bad");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("invalid source name")
    );
    assert_eq!(get(port, "/sources/nope").status, 404);
    assert_eq!(get(port, "/reports").status, 200);
    // Nothing stored yet: the running month (and the last one) are drawn on demand.
    let reports = get(port, "/api/v1/reports").json();
    assert!(
        reports
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["stored"] == false),
        "{reports}"
    );
    assert_eq!(get(port, "/healthz").body, "ok\n");

    // Actions through the API need the token, and only the token.
    let backups = || runs(port, "shop", "backup", "ok");
    assert_eq!(backups(), 1);
    let api_backup = "/api/v1/sources/shop/backup";
    let r = http(port, "POST", api_backup, &[], "");
    assert_eq!(r.status, 401, "{}", r.body);
    let r = http(
        port,
        "POST",
        api_backup,
        &[("Authorization", "Bearer wrong-token-wrong-token")],
        "",
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "wrong token");

    // Signing in: a wrong token is refused; the right one sets a session cookie without it.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = http(port, "POST", "/login", &form, "token=nope&next=/");
    assert_eq!(r.status, 401);
    let r = http(
        port,
        "POST",
        "/login",
        &form,
        &format!("token={TOKEN}&next=/sources/shop"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/sources/shop"));
    let set = r.header("set-cookie").unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(TOKEN), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = http(port, "GET", "/sources/shop", &[("Cookie", &cookie)], "");
    assert!(page.body.contains("Back up now"), "{}", page.body);
    let at = page.body.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &page.body[at..at + page.body[at..].find('"').unwrap()];
    // The API never takes the cookie.
    let r = http(port, "POST", api_backup, &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 401, "{}", r.body);
    // Cross-site POSTs are refused even with a valid session and CSRF field.
    let body = format!("csrf={csrf}");
    for extra in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let r = http(
            port,
            "POST",
            "/sources/shop/backup",
            &[form[0], ("Cookie", &cookie), extra],
            &body,
        );
        assert_eq!(r.status, 403, "{extra:?}: {}", r.body);
        let r = http(
            port,
            "POST",
            api_backup,
            &[("Authorization", &format!("Bearer {TOKEN}")), extra],
            "",
        );
        assert_eq!(r.status, 403, "{extra:?}: {}", r.body);
    }
    // A form without the session's CSRF field, or without a session, is refused.
    let r = http(
        port,
        "POST",
        "/sources/shop/backup",
        &[form[0], ("Cookie", &cookie)],
        "csrf=00",
    );
    assert_eq!(r.status, 403);
    let r = http(port, "POST", "/sources/shop/backup", &form, &body);
    assert_eq!(r.status, 403);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        runs(port, "shop", "backup", "running"),
        0,
        "a refused request ran"
    );
    assert_eq!(backups(), 1, "a refused request ran a backup");

    // With the token: a backup runs and shows in the runs and the snapshots.
    let r = http(
        port,
        "POST",
        api_backup,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["queued"], true);
    wait_for(Duration::from_secs(120), "the requested backup", || {
        backups() == 2 && runs(port, "shop", "drill", "ok") == 2
    });
    wait_for(
        Duration::from_secs(30),
        "the new snapshot in the API",
        || get(port, "/api/v1/sources/shop").json()["source"]["snapshots"] == 2,
    );
    // Drill now, from the page (same origin, session and CSRF field).
    let drills_before = runs(port, "shop", "drill", "ok");
    let origin = format!("http://127.0.0.1:{port}");
    wait_for(Duration::from_secs(60), "the job to end", || {
        !get(port, "/api/v1/sources/shop").json()["source"]["running"]
            .as_bool()
            .unwrap()
    });
    let r = http(
        port,
        "POST",
        "/sources/shop/drill",
        &[
            form[0],
            ("Cookie", &cookie),
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &body,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/sources/shop?msg=drill"));
    let msg = http(
        port,
        "GET",
        "/sources/shop?msg=drill",
        &[("Cookie", &cookie)],
        "",
    );
    assert!(msg.body.contains("Drill of shop"), "{}", msg.body);
    wait_for(Duration::from_secs(120), "the requested drill", || {
        runs(port, "shop", "drill", "ok") > drills_before
    });
}

#[test]
fn without_a_token_the_dashboard_is_read_only() {
    let s = Repo::local().with_config(
        "[[source]]\nname = \"app\"\nurl = \"postgres://u@127.0.0.1:1/app\"\nschedule = \"0 0 1 1 *\"\n",
    );
    let settings = offsitedb::config::Settings::load(
        offsitedb::config::Overrides {
            config: Some(s.config_path()),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let running =
        offsitedb::daemon::spawn(settings, TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let port = running.addr.port();
    let page = get(port, "/sources/app");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("Back up now") && !page.body.contains("Sign in"));
    // No backup yet: amber, said in words.
    let o = get(port, "/api/v1/sources").json();
    assert_eq!(o["sources"][0]["health"]["level"], "amber", "{o:#}");
    let bearer = format!("Bearer {TOKEN}");
    for (path, headers) in [
        (
            "/api/v1/sources/app/backup",
            vec![("Authorization", bearer.as_str())],
        ),
        ("/api/v1/sources/app/drill", vec![]),
        ("/sources/app/backup", vec![]),
        ("/login", vec![]),
    ] {
        let r = http(port, "POST", path, &headers, "token=x");
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    assert_eq!(get(port, "/login").status, 404);
    running.stop().unwrap();
}

/// Where the browser test's screenshots are kept for the docs.
fn artifacts() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_dir().join("target"))
        .join("test-artifacts/dashboard")
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let node = "node";
    let script = project_dir().join("tests/browser/dashboard.mjs");
    let fix = "run scripts/test.sh (it installs chromium, and playwright-core into tests/browser/node_modules)";
    assert!(
        std::process::Command::new(node)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "node is missing: {fix}"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: {fix}"
    );
    assert!(
        project_dir()
            .join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is missing from tests/browser/node_modules: {fix}"
    );
    let f = fixture(Some(TOKEN));
    let expected = get(f.port, "/api/v1/sources").body;
    let shots = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(node)
        .arg(&script)
        .env("DASHBOARD_URL", format!("http://127.0.0.1:{}", f.port))
        .env("DASHBOARD_TOKEN", TOKEN)
        .env("DASHBOARD_EXPECT", &expected)
        .env("DASHBOARD_SHOTS", shots.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node {} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let keep = artifacts();
    std::fs::create_dir_all(&keep).unwrap();
    let mut copied = 0;
    for e in std::fs::read_dir(shots.path()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, keep.join(p.file_name().unwrap())).unwrap();
        copied += 1;
    }
    assert_eq!(
        copied, 4,
        "screenshots: overview and source page, desktop and phone"
    );
}

/// `GET path` as bytes, with the response's headers (a PDF is not text).
fn get_bytes(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, out[split + 4..].to_vec())
}

/// The reports page lists the running month, which opens as the report's HTML, its PDF (that
/// verifies with the repository's key) and its JSON, with the verdicts the backups earned; the
/// overview's objectives are the report's measures.
#[test]
fn reports_are_listed_viewed_and_downloaded() {
    let f = fixture(None);
    let month = jiff::Timestamp::now().strftime("%Y-%m").to_string();
    let list = get(f.port, "/api/v1/reports").json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["month"] == month.as_str() && r["partial"] == true && r["stored"] == false),
        "{list}"
    );
    let page = get(f.port, "/reports");
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains(&format!("href=\"/reports/{month}.pdf\"")),
        "{}",
        page.body
    );

    let json = get(f.port, &format!("/api/v1/reports/{month}")).json();
    let verdict = |name: &str| {
        json["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {json}"))["verdict"]
            .clone()
    };
    assert_eq!(verdict("shop")["kind"], "passed", "{json}");
    assert_eq!(verdict("broken")["kind"], "failed", "{json}");
    assert_eq!(
        verdict("broken")["headline"],
        "1 of 1 snapshot could not be restored"
    );

    let html = get(f.port, &format!("/reports/{month}"));
    assert_eq!(html.status, 200);
    assert!(
        html.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        html.body.contains("1 of 1 snapshot could not be restored"),
        "{}",
        html.body
    );

    let (status, head, pdf) = get_bytes(f.port, &format!("/reports/{month}.pdf"));
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/pdf"),
        "{head}"
    );
    assert!(
        head.contains(&format!("filename=\"offsitedb-report-{month}.pdf\"")),
        "{head}"
    );
    assert!(pdf.starts_with(b"%PDF-"));
    let file = f.repo.dir.path().join("downloaded.pdf");
    std::fs::write(&file, &pdf).unwrap();
    let ok = f.repo.cli.ok(&["report", "verify", file.to_str().unwrap()]);
    assert!(ok.stdout.contains("matches"), "{}", ok.stdout);
    // A running month's report says so, signed or not.
    assert!(
        ok.stdout.contains("so far (the month had not ended)"),
        "{}",
        ok.stdout
    );

    assert_eq!(get(f.port, "/reports/2026-13").status, 400);
    assert_eq!(get(f.port, "/reports/2026-11.exe").status, 404);
    assert_eq!(get(f.port, "/api/v1/reports/2999-01").status, 400);

    // The overview's objectives: the schedule's interval is the promise when no rpo is set.
    let sources = get(f.port, "/api/v1/sources").json();
    let shop = sources["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "shop")
        .unwrap()
        .clone();
    assert_eq!(shop["objectives"]["rpo_from"], "schedule", "{shop}");
    assert!(
        shop["objectives"]["achieved_rto_seconds"].as_f64().unwrap() > 0.0,
        "{shop}"
    );
    let overview = get(f.port, "/").body;
    assert!(
        row(&overview, "shop").contains("slowest restore"),
        "{overview}"
    );
}
