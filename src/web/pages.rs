/*!
The dashboard's pages, rendered on the server with maud (every value escaped): the overview, a
source, a snapshot, the reports, and the sign-in form. No script and nothing loaded from
elsewhere; readable on a phone; usable by keyboard alone (a skip link, real links and buttons,
a visible focus ring, headings in order, table headers with `scope`). A source's state is a
colour *and* a word.

Numbers are marked up for machines too (`<data value>`, `<time datetime>`), so a test or a
scraper reads exactly what the API returns.
*/

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use jiff::Timestamp;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::data::{Level, SourceDetail, SourceOverview};
use super::server::{App, blocking};
use super::{auth, style};
use crate::catalog::Status;
use crate::daemon::control::{Action, Requested};
use crate::error::Error;

/// Who is looking: whether actions exist, and the signed-in session's CSRF field.
struct Viewer {
    actions: bool,
    csrf: Option<String>,
}

fn now_secs() -> i64 {
    Timestamp::now().as_second()
}

fn viewer(app: &App, h: &HeaderMap) -> Viewer {
    let session = app.auth.valid_session(
        h.get(header::COOKIE).and_then(|v| v.to_str().ok()),
        now_secs(),
    );
    Viewer {
        actions: app.auth.enabled(),
        csrf: session.map(|s| app.auth.csrf(&s)),
    }
}

fn page(title: &str, v: &Viewer, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · OffsiteDB" }
                style { (maud::PreEscaped(style::css())) }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a href="/" { "Overview" }
                        a href="/reports" { "Reports" }
                        a href="/fleet" { "Workers" }
                    }
                    @if v.actions {
                        @if let Some(csrf) = &v.csrf {
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Sign out" }
                            }
                        } @else {
                            a href="/login" { "Sign in" }
                        }
                    }
                }
                main id="main" { (body) }
                footer.muted { "OffsiteDB " (crate::VERSION) }
            }
        }
    }
}

fn html_response(status: StatusCode, m: Markup) -> Response {
    (status, Html(m.into_string())).into_response()
}

fn error_page(e: &Error) -> Response {
    let status = super::api::status_of(e);
    let title = if status == StatusCode::NOT_FOUND {
        "Not found"
    } else {
        "Error"
    };
    html_response(
        status,
        page(
            title,
            &Viewer {
                actions: false,
                csrf: None,
            },
            html! {
                h1 { (title) }
                p.msg.bad { (e.message()) }
                @if let Some(h) = e.hint() { p { "Hint: " (h) } }
                p { a href="/" { "Back to the overview" } }
            },
        ),
    )
}

pub(super) fn not_found() -> Response {
    error_page(&Error::not_found("no such page"))
}

pub(super) fn refused(status: StatusCode, why: &str) -> Response {
    html_response(
        status,
        page(
            "Refused",
            &Viewer {
                actions: false,
                csrf: None,
            },
            html! {
                h1 { "Refused" }
                p.msg.bad { (why) }
                p { a href="/" { "Back to the overview" } }
            },
        ),
    )
}

fn when(t: Option<Timestamp>) -> Markup {
    match t {
        Some(t) => {
            let t = t.round(jiff::Unit::Second).unwrap_or(t);
            html! { time datetime=(t.to_string()) { (t.strftime("%Y-%m-%d %H:%M:%S UTC")) } }
        }
        None => html! { span.muted { "never" } },
    }
}

fn bytes(n: u64) -> Markup {
    html! { data.n-bytes value=(n) { (crate::units::bytes(n)) } }
}

fn seconds(s: Option<f64>, class: &str) -> Markup {
    match s {
        Some(s) => html! { data class=(class) value=(s) { (format!("{s:.1} s")) } },
        None => html! { span.muted { "none" } },
    }
}

fn level_class(l: Level) -> &'static str {
    match l {
        Level::Green => "green",
        Level::Amber => "amber",
        Level::Red => "red",
    }
}

fn state(s: &SourceOverview) -> Markup {
    let l = s.health.level;
    html! { span class={"state " (level_class(l))} data-level=(level_class(l)) { (l.word()) } }
}

fn status_word(s: Status) -> Markup {
    let class = match s {
        Status::Sealed => "state green",
        Status::NotDrilled => "state amber",
        Status::DrillFailed | Status::Damaged => "state red",
    };
    html! { span class=(class) { (s.label()) } }
}

fn spark(s: &SourceOverview) -> Markup {
    let values: Vec<(f64, crate::report::doc::Tone)> = s
        .restore_times
        .iter()
        .map(|p| (p.seconds, crate::report::doc::Tone::Good))
        .collect();
    if values.is_empty() {
        return html! {};
    }
    let label = format!(
        "tested restore times of the last {} drilled snapshots, from {:.1} s to {:.1} s",
        values.len(),
        values.iter().map(|v| v.0).fold(f64::MAX, f64::min),
        values.iter().map(|v| v.0).fold(0.0, f64::max)
    );
    // The report's sparkline (the same drawing as the report's charts), labelled for readers.
    html! { span role="img" aria-label=(label) { (maud::PreEscaped(crate::report::chart::sparkline(&values, 120.0, 24.0))) } }
}

/// Achieved against promised, in words: "4 d (objective 1 d 6 h: MISSED)".
fn objective(achieved: Option<f64>, promised: Option<f64>, met: Option<bool>) -> Markup {
    let say = |s: f64| crate::units::spoken(std::time::Duration::from_secs_f64(s.max(0.0)));
    html! {
        (achieved.map(say).unwrap_or_else(|| "not measured".into()))
        @if let Some(p) = promised {
            " (objective " (say(p)) ": "
            @match met {
                Some(true) => span.green { "met" },
                Some(false) => span.amber { "MISSED" },
                None => span.muted { "not measured" },
            }
            ")"
        }
    }
}

fn objectives(s: &SourceOverview) -> Markup {
    let o = &s.objectives;
    html! {
        "recovery point " (objective(o.achieved_rpo_seconds, o.rpo_seconds, o.rpo_met))
        br;
        "slowest restore " (objective(o.achieved_rto_seconds, o.rto_seconds, o.rto_met))
    }
}

/// The restore-time chart of a source's page: the report's chart of its recent drills.
fn restore_chart(d: &SourceDetail) -> Markup {
    use crate::report::doc::{Chart, ChartKind, Point, Threshold, Tone, Unit};
    let mut points: Vec<Point> = d
        .drills
        .iter()
        .filter_map(|l| {
            Some(Point {
                x: l.started?.as_second() as f64,
                y: l.total_seconds?,
                tone: if l.result == "passed" {
                    Tone::Good
                } else {
                    Tone::Bad
                },
            })
        })
        .collect();
    points.sort_by(|a, b| a.x.total_cmp(&b.x));
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return html! {};
    };
    let pad = ((last.x - first.x) * 0.05).max(3600.0);
    let chart = Chart {
        title: format!("Tested restore time of {}'s recent drills", d.source.name),
        kind: ChartKind::Line,
        unit: Unit::Seconds,
        x_range: (first.x - pad, last.x + pad),
        threshold: d.source.objectives.rto_seconds.map(|y| Threshold {
            y,
            label: format!(
                "objective {}",
                crate::units::spoken(std::time::Duration::from_secs_f64(y))
            ),
        }),
        points,
        empty: String::new(),
    };
    crate::report::html::chart_svg(&chart)
}

pub(super) async fn overview(State(app): State<App>, h: HeaderMap) -> Response {
    let v = viewer(&app, &h);
    let o = match blocking(&app, |c| c.data.overview()).await {
        Ok(o) => o,
        Err(e) => return error_page(&e),
    };
    html_response(
        StatusCode::OK,
        page(
            "Overview",
            &v,
            html! {
                h1 { "Backups" }
                @if let Some(e) = &o.repository_error {
                    p.msg.bad { "The repository cannot be read: " (e) }
                }
                @if o.sources.is_empty() {
                    p { "No sources yet: add a [[source]] to offsitedb.toml." }
                } @else {
                    div.table {
                        table.cards {
                            caption.muted { "Every source, its state and why, from the repository and this machine's history." }
                            thead { tr {
                                th scope="col" { "Source" }
                                th scope="col" { "State" }
                                th scope="col" { "Last backup" }
                                th scope="col" { "Next run" }
                                th scope="col" class="num" { "Snapshots" }
                                th scope="col" class="num" { "Stored" }
                                th scope="col" class="num" { "Tested restore" }
                                th scope="col" { "Restore times" }
                                th scope="col" { "Objectives, last 30 days" }
                            } }
                            tbody {
                                @for s in &o.sources {
                                    tr id={"source-" (s.name)} data-source=(s.name) {
                                        th scope="row" { a href={"/sources/" (s.name)} { (s.name) } }
                                        td data-label="State" {
                                            (state(s))
                                            ul.reasons { @for r in &s.health.reasons { li { (r.text) } } }
                                        }
                                        td data-label="Last backup" { (when(s.last_backup)) }
                                        td data-label="Next run" { (when(s.next_run)) }
                                        td.num data-label="Snapshots" { data.n-snapshots value=(s.snapshots) { (s.snapshots) } }
                                        td.num data-label="Stored" { (bytes(s.stored_bytes)) }
                                        td.num data-label="Tested restore" { (seconds(s.tested_restore_seconds, "n-restore")) }
                                        td data-label="Restore times" { (spark(s)) }
                                        td data-label="Objectives" { (objectives(s)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @for w in &o.warnings { p.muted { "Warning: " (w) } }
            },
        ),
    )
}

#[derive(Deserialize)]
pub(super) struct MsgQuery {
    msg: Option<String>,
}

/// The message after an action: only these fixed texts are shown (nothing from the URL is).
fn message(code: &str, name: &str) -> Option<(bool, String)> {
    Some(match code {
        "backup" => (true, queued_message(name, Action::Backup)),
        "drill" => (true, queued_message(name, Action::Drill)),
        "busy" => (
            false,
            format!("A job of {name} is already running or queued: nothing was started."),
        ),
        "notrun" => (
            false,
            format!("serve does not run {name}'s jobs (it has no schedule)."),
        ),
        "signedin" => (true, "Signed in.".to_string()),
        _ => return None,
    })
}

/// What the dashboard says when an action was queued.
pub(super) fn queued_message(name: &str, action: Action) -> String {
    match action {
        Action::Backup => format!(
            "Backup of {name} started: backup, drill and prune run now; the runs below show them as they go."
        ),
        Action::Drill => {
            format!("Drill of {name}'s newest snapshot started; the runs below show it as it goes.")
        }
    }
}

fn actions(v: &Viewer, d: &SourceDetail) -> Markup {
    let s = &d.source;
    if !v.actions || !s.scheduled {
        return html! {};
    }
    html! {
        section aria-labelledby="actions" {
            h2 id="actions" { "Actions" }
            @if let Some(csrf) = &v.csrf {
                div.actions {
                    form method="post" action={"/sources/" (s.name) "/backup"} {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Back up now" }
                    }
                    @if s.snapshots > 0 {
                        form method="post" action={"/sources/" (s.name) "/drill"} {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Drill now" }
                        }
                    }
                }
                @if s.running { p.muted { "A job of " (s.name) " is running." } }
            } @else {
                p { a href={"/login?next=/sources/" (s.name)} { "Sign in" } " to back up or drill now." }
            }
        }
    }
}

pub(super) async fn source(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<MsgQuery>,
    h: HeaderMap,
) -> Response {
    let v = viewer(&app, &h);
    let n = name.clone();
    let d = match blocking(&app, move |c| c.data.source(&n)).await {
        Ok(d) => d,
        Err(e) => return error_page(&e),
    };
    let s = &d.source;
    let msg = q.msg.as_deref().and_then(|c| message(c, &name));
    html_response(
        StatusCode::OK,
        page(
            &s.name,
            &v,
            html! {
                h1 { "Source " (s.name) " " (state(s)) }
                @if let Some((ok, text)) = &msg {
                    p class={"msg" @if !ok { " bad" }} role="status" { (text) }
                }
                ul.reasons { @for r in &s.health.reasons { li { (r.text) } } }
                dl {
                    dt { "Kind" } dd { (s.kind.as_deref().unwrap_or("unknown (not configured here)")) }
                    dt { "Schedule" } dd { (s.schedule.as_deref().unwrap_or("none")) }
                    dt { "Last backup" } dd { (when(s.last_backup)) }
                    dt { "Next run" } dd { (when(s.next_run)) }
                    dt { "Snapshots" } dd { data.n-snapshots value=(s.snapshots) { (s.snapshots) } }
                    dt { "Stored" } dd { (bytes(s.stored_bytes)) }
                    dt { "Tested restore time" } dd { (seconds(s.tested_restore_seconds, "n-restore")) }
                    dt { "Objectives, last 30 days" } dd { (objectives(s)) }
                }
                (actions(&v, &d))
                section aria-labelledby="restore-times" {
                    h2 id="restore-times" { "Restore times" }
                    @if s.restore_times.is_empty() {
                        p.muted { "No drill has passed yet." }
                    } @else {
                        (restore_chart(&d))
                        div.table { table {
                            thead { tr { th scope="col" { "Snapshot" } th scope="col" class="num" { "Tested restore" } } }
                            tbody { @for p in s.restore_times.iter().rev() { tr {
                                th scope="row" { a href={"/sources/" (s.name) "/snapshots/" (p.snapshot)} { (p.snapshot) } }
                                td.num { (seconds(Some(p.seconds), "n-point")) }
                            } } }
                        } }
                    }
                }
                section aria-labelledby="snapshots" {
                    h2 id="snapshots" { "Snapshots" }
                    @if d.snapshots.is_empty() { p.muted { "None yet." } } @else {
                        div.table { table {
                            thead { tr {
                                th scope="col" { "Snapshot" } th scope="col" { "Taken" }
                                th scope="col" class="num" { "Duration" } th scope="col" class="num" { "Stored" }
                                th scope="col" { "Status" } th scope="col" class="num" { "Drills" }
                                th scope="col" class="num" { "Tested restore" }
                            } }
                            tbody { @for x in &d.snapshots { tr {
                                th scope="row" { a href={"/sources/" (s.name) "/snapshots/" (x.id)} { (x.id) } }
                                td { (when(Some(x.created))) }
                                td.num { (seconds(Some(x.duration_seconds), "n-duration")) }
                                td.num { (bytes(x.stored_bytes)) }
                                td { (status_word(x.status)) }
                                td.num { (x.drills) }
                                td.num { (seconds(x.tested_restore_seconds, "n-restore")) }
                            } } }
                        } }
                    }
                }
                section aria-labelledby="drills" {
                    h2 id="drills" { "Drills" }
                    @if d.drills.is_empty() { p.muted { "None yet." } } @else {
                        div.table { table {
                            thead { tr {
                                th scope="col" { "Drill" } th scope="col" { "Snapshot" } th scope="col" { "Result" }
                                th scope="col" class="num" { "Restore time" } th scope="col" { "Tables that did not match" }
                                th scope="col" { "Problems" }
                            } }
                            tbody { @for x in &d.drills { tr {
                                th scope="row" { (x.drill) }
                                td { a href={"/sources/" (s.name) "/snapshots/" (x.snapshot)} { (x.snapshot) } }
                                td { span class={"state " @if x.result == "passed" { "green" } @else { "red" }} { (x.result) } }
                                td.num { (seconds(x.total_seconds, "n-drill")) }
                                td { @if x.mismatches.is_empty() { span.muted { "none (" (x.tables) " checked)" } } @else {
                                    ul { @for t in &x.mismatches { li {
                                        (t.schema) "." (t.name) ": " (t.expected_rows) " rows expected, "
                                        (t.restored_rows.map_or("not restored".to_string(), |r| format!("{r} restored")))
                                        @if t.digest_ok == Some(false) { ", content differs" }
                                    } } }
                                } }
                                td { @for p in &x.problems { div { (p) } } }
                            } } }
                        } }
                    }
                }
                section aria-labelledby="runs" {
                    h2 id="runs" { "Runs on this machine" }
                    @if d.runs.is_empty() { p.muted { "None yet." } } @else {
                        div.table { table {
                            thead { tr {
                                th scope="col" { "Started" } th scope="col" { "Step" } th scope="col" { "Result" }
                                th scope="col" class="num" { "Seconds" } th scope="col" { "Snapshot" } th scope="col" { "Error" }
                            } }
                            tbody { @for r in &d.runs { tr data-job=(r.job.as_str()) data-result=(r.result.as_str()) {
                                th scope="row" { (when(Some(r.started))) }
                                td { (r.job.as_str()) }
                                td { (r.result.as_str()) }
                                td.num { (r.seconds.map(|s| format!("{s:.1}")).unwrap_or_default()) }
                                td { (r.snapshot.as_deref().unwrap_or("")) }
                                td { (r.error.as_deref().unwrap_or("")) }
                            } } }
                        } }
                    }
                }
            },
        ),
    )
}

pub(super) async fn snapshot(
    State(app): State<App>,
    Path((name, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    let v = viewer(&app, &h);
    let d = match blocking(&app, move |c| c.data.snapshot(&name, &id)).await {
        Ok(d) => d,
        Err(e) => return error_page(&e),
    };
    let (s, f) = (&d.summary, &d.facts);
    html_response(
        StatusCode::OK,
        page(
            &format!("{} {}", s.source, s.id),
            &v,
            html! {
                p { a href={"/sources/" (s.source)} { "← " (s.source) } }
                h1 { "Snapshot " (s.id) " " (status_word(s.status)) }
                @if let Some(r) = &s.status_reason { p { (r) } }
                @for w in &s.warnings { p.msg.bad { (w) } }
                dl {
                    dt { "Source" } dd { (s.source) " (" (f.kind) ")" }
                    dt { "Database" } dd { (f.database) " on " (f.host) }
                    @if !f.server_version.is_empty() { dt { "Server" } dd { "PostgreSQL " (f.server_version) ", pg_dump " (f.dump_version) } }
                    dt { "Taken" } dd { (when(Some(f.started))) " to " (when(Some(f.finished))) }
                    dt { "Sizes" } dd { (bytes(f.plain_bytes)) " dumped, " (bytes(f.compressed_bytes)) " compressed (" (f.compression) "), " (bytes(f.stored_bytes)) " stored" }
                    dt { "Encryption" } dd { (f.encryption) ", key id " (f.key_id) }
                    dt { "Data object" } dd { code { (f.data_object) } }
                    dt { "Verified by" } dd { (f.verification) @if let Some(n) = &f.verification_note { " (" (n) ")" } }
                    @if let (Some(n), Some(b)) = (f.files, f.file_bytes) { dt { "Files" } dd { (n) " files, " (bytes(b)) } }
                    dt { "Tested restore time" } dd { (seconds(s.tested_restore_seconds, "n-restore")) }
                }
                section aria-labelledby="restore" {
                    h2 id="restore" { "Restore it" }
                    p { "With OffsiteDB (the target database must exist and be empty):" }
                    pre { code { (d.restore.offsitedb) } }
                    p { "With OffsiteDB decrypting only:" }
                    pre { code { (d.restore.decrypt) } }
                    p { "Without OffsiteDB (the key file and Python's cryptography package):" }
                    pre { code { @for (i, c) in d.restore.without_offsitedb.iter().enumerate() { @if i > 0 { "\n" } (c) } } }
                }
                section aria-labelledby="tables" {
                    h2 id="tables" { "Tables" }
                    @if d.tables.is_empty() { p.muted { "No tables recorded." } } @else {
                        div.table { table {
                            thead { tr { th scope="col" { "Table" } th scope="col" class="num" { "Rows" } th scope="col" { "Content digest" } } }
                            tbody { @for t in &d.tables { tr {
                                th scope="row" { (t.schema) "." (t.name) }
                                td.num { data.n-rows value=(t.rows) { (t.rows) } }
                                td { @if t.digest { "recorded" } @else { span.muted { "rows only" } } }
                            } } }
                        } }
                    }
                }
                section aria-labelledby="drill-records" {
                    h2 id="drill-records" { "Drills" }
                    @if d.drills.is_empty() { p.muted { "Not drilled yet." } }
                    @for r in &d.drills {
                        h3 { "Drill " (r.drill_id) ": " span class={"state " @if r.passed() { "green" } @else { "red" }} { @if r.passed() { "passed" } @else { "failed" } } }
                        p { "Restored into " (r.target) " (PostgreSQL " (r.server_version) "), download "
                            (format!("{:.1}", r.timings.download)) " s, restore " (format!("{:.1}", r.timings.restore))
                            " s, verify " (format!("{:.1}", r.timings.verify)) " s, total " (seconds(Some(r.timings.total), "n-drill")) "." }
                        @if !r.problems.is_empty() { ul { @for p in &r.problems { li { (p) } } } }
                        @let bad: Vec<_> = r.tables.iter().filter(|t| !t.ok()).collect();
                        @if bad.is_empty() { p.muted { "Every table matched (" (r.tables.len()) " checked)." } } @else {
                            div.table { table {
                                thead { tr { th scope="col" { "Table" } th scope="col" class="num" { "Expected rows" } th scope="col" class="num" { "Restored rows" } th scope="col" { "Content" } } }
                                tbody { @for t in bad { tr {
                                    th scope="row" { (t.schema) "." (t.name) }
                                    td.num { (t.expected_rows) }
                                    td.num { (t.restored_rows.map_or("not restored".to_string(), |r| r.to_string())) }
                                    td { (match t.digest_ok { Some(true) => "same", Some(false) => "differs", None => "not compared" }) }
                                } } }
                            } }
                        }
                    }
                }
            },
        ),
    )
}

pub(super) async fn reports(State(app): State<App>, h: HeaderMap) -> Response {
    let v = viewer(&app, &h);
    let r = match blocking(&app, |c| c.data.reports()).await {
        Ok(r) => r,
        Err(e) => return error_page(&e),
    };
    html_response(
        StatusCode::OK,
        page(
            "Reports",
            &v,
            html! {
                h1 { "Restore Drill Reports" }
                p.muted { "One per month: every source's verdict, tested restore times and recovery point against its objectives. serve stores each month in the repository once it has ended; the running month is drawn as it stands." }
                @if r.is_empty() {
                    p { "No backups yet, so no report." }
                } @else {
                    div.table { table {
                        thead { tr { th scope="col" { "Month" } th scope="col" { "State" } th scope="col" { "Open" } } }
                        tbody { @for x in &r { tr {
                            th scope="row" { a href={"/reports/" (x.month)} { (x.month) } }
                            td { @if x.stored { "stored in the repository (" (bytes(x.bytes.unwrap_or(0))) ")" } @else if x.partial { "so far (the month is running)" } @else { "not stored yet: drawn from the repository" } }
                            td { a href={"/reports/" (x.month)} { "view" } " · " a href={"/reports/" (x.month) ".pdf"} { "PDF" } " · " a href={"/reports/" (x.month) ".json"} { "JSON" } }
                        } } }
                    } }
                }
            },
        ),
    )
}

/// `/fleet`: the workers (one alone on a state file; several sharing a PostgreSQL state) and
/// every scheduled job: who runs it, when it is due, how it last ended.
pub(super) async fn fleet(State(app): State<App>, h: HeaderMap) -> Response {
    let v = viewer(&app, &h);
    let f = match blocking(&app, |c| c.data.fleet()).await {
        Ok(f) => f,
        Err(e) => return error_page(&e),
    };
    let ago = |t: Timestamp| {
        let s = f.at.duration_since(t).as_secs().max(0) as u64;
        format!(
            "{} ago",
            crate::units::duration(std::time::Duration::from_secs(s))
        )
    };
    html_response(
        StatusCode::OK,
        page(
            "Workers",
            &v,
            html! {
                h1 { "Workers" }
                p.muted { "From " (f.state) ". Each scheduled job is leased by one worker at a time; a worker that stops renewing its lease loses the job to another." }
                div.table { table {
                    thead { tr { th scope="col" { "Worker" } th scope="col" { "State" } th scope="col" { "Labels" } th scope="col" { "Last heartbeat" } th scope="col" { "Running" } } }
                    tbody { @for w in &f.workers { tr {
                        th scope="row" { (w.row.name) " " span.muted { (w.row.host) " pid " (w.row.pid) } }
                        td { @if w.alive { "alive" } @else { strong { "silent" } } }
                        td { @if w.row.labels.is_empty() { "-" } @else { (w.row.labels.join(", ")) } }
                        td { (ago(w.row.seen)) }
                        td { @if w.row.running.is_empty() { "-" } @else { (w.row.running.join(", ")) } }
                    } } }
                } }
                h2 { "Scheduled jobs" }
                div.table { table {
                    thead { tr { th scope="col" { "Source" } th scope="col" { "Job" } th scope="col" { "Schedule" } th scope="col" { "Now" } th scope="col" { "Requires" } th scope="col" { "Last run" } } }
                    tbody { @for j in &f.jobs { tr {
                        th scope="row" { (j.row.source) }
                        td { (j.row.kind) }
                        td { (j.row.schedule) }
                        td { @if let Some(w) = &j.running_on { "running on " (w) } @else if j.row.kind == "backup" || j.row.kind == "base" { "due " (j.row.due.strftime("%Y-%m-%d %H:%M:%S UTC")) } @else { "waiting for a worker" } }
                        td { @if j.row.requires.is_empty() { "-" } @else { (j.row.requires.join(", ")) } }
                        td { @if let Some(r) = &j.last { (r.result) " " (r.finished.map(ago).unwrap_or_default()) @if let Some(w) = &r.worker { " on " (w) } } @else { "-" } }
                    } } }
                } }
            },
        ),
    )
}

/// `/reports/2026-11` (the report's own HTML page), `/reports/2026-11.pdf`, `/reports/2026-11.json`.
pub(super) async fn report_file(State(app): State<App>, Path(file): Path<String>) -> Response {
    use crate::ops::report::Format;
    let (month, format) = match file.rsplit_once('.') {
        Some((m, "pdf")) => (m.to_string(), Format::Pdf(crate::report::pdf::Paper::A4)),
        Some((m, "json")) => (m.to_string(), Format::Json),
        Some(_) => return error_page(&Error::not_found(format!("no report {file:?}"))),
        None => (file.clone(), Format::Html),
    };
    let m = month.clone();
    let bytes = match blocking(&app, move |c| {
        let r = c.data.report(&m)?;
        crate::ops::report::render(&r, format)
    })
    .await
    {
        Ok(b) => b,
        Err(e) => return error_page(&e),
    };
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if format != Format::Html {
        // `month` passed Period::month: digits and a dash only.
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"offsitedb-report-{month}.{}\"",
            format.extension()
        )) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    resp
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

/// Only a path of this site (no `//host`, no scheme) is followed after signing in.
fn local_path(next: Option<&str>) -> String {
    match next {
        // Visible ASCII only: browsers drop tabs and line breaks, so "/\t/evil" would become
        // "//evil", another site.
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

fn login_page(status: StatusCode, next: &str, failed: bool) -> Response {
    html_response(
        status,
        page(
            "Sign in",
            &Viewer {
                actions: true,
                csrf: None,
            },
            html! {
                h1 { "Sign in" }
                @if failed { p.msg.bad role="alert" { "Wrong token." } }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    p {
                        label for="token" { "Token (the [server] token of offsitedb.toml)" } br;
                        input id="token" name="token" type="password" autocomplete="current-password" required;
                    }
                    p { button type="submit" { "Sign in" } }
                }
            },
        ),
    )
}

pub(super) async fn login_form(State(app): State<App>, Query(q): Query<NextQuery>) -> Response {
    if !app.auth.enabled() {
        return not_found();
    }
    login_page(StatusCode::OK, &local_path(q.next.as_deref()), false)
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

pub(super) async fn login(
    State(app): State<App>,
    f: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if !app.auth.enabled() {
        return not_found();
    }
    let Ok(Form(f)) = f else {
        return login_page(StatusCode::BAD_REQUEST, "/", true);
    };
    let next = local_path(f.next.as_deref());
    if !app.auth.token_matches(&f.token) {
        tracing::warn!("dashboard sign-in with a wrong token");
        return login_page(StatusCode::UNAUTHORIZED, &next, true);
    }
    let session = app.auth.session(now_secs()).unwrap_or_default();
    let cookie = format!(
        "{}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        auth::COOKIE,
        auth::SESSION_FOR.as_secs()
    );
    let mut r = Redirect::to(&next).into_response();
    if let Ok(v) = cookie.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    csrf: Option<String>,
}

/// The signed-in session, when the form's CSRF field is its own.
fn checked_session(app: &App, h: &HeaderMap, f: &CsrfForm) -> Option<String> {
    let s = app.auth.valid_session(
        h.get(header::COOKIE).and_then(|v| v.to_str().ok()),
        now_secs(),
    )?;
    app.auth
        .csrf_ok(&s, f.csrf.as_deref().unwrap_or(""))
        .then_some(s)
}

pub(super) async fn logout(
    State(app): State<App>,
    h: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !app.auth.enabled() {
        return not_found();
    }
    if checked_session(&app, &h, &f).is_none() {
        return refused(StatusCode::FORBIDDEN, "not signed in, or the form is stale");
    }
    let mut r = Redirect::to("/").into_response();
    let gone = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::COOKIE
    );
    if let Ok(v) = gone.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// "Back up now" and "Drill now" from a source's page.
pub(super) async fn act(
    State(app): State<App>,
    Path((name, action)): Path<(String, String)>,
    h: HeaderMap,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let action = match action.as_str() {
        "backup" => Action::Backup,
        "drill" => Action::Drill,
        _ => return not_found(),
    };
    if !app.auth.enabled() {
        return not_found();
    }
    let f = f.map(|Form(f)| f).unwrap_or(CsrfForm { csrf: None });
    if checked_session(&app, &h, &f).is_none() {
        return refused(
            StatusCode::FORBIDDEN,
            "sign in first (or the form is stale: reload the page)",
        );
    }
    let n = name.clone();
    if let Err(e) = blocking(&app, move |c| c.data.snapshots(&n).map(|_| ())).await {
        return error_page(&e);
    }
    let code = match app.data.control().request(&name, action) {
        Requested::Queued => action.label(),
        Requested::Busy => "busy",
        Requested::NotRun => "notrun",
    };
    Redirect::to(&format!("/sources/{name}?msg={code}")).into_response()
}
