/*!
The JSON API under `/api/v1`: the same structs the pages render ([`super::data`]), serialized.
Errors are `{"error": "...", "hint": "..."}` with 400 (a malformed name), 401 (no or a wrong
token), 404 (no such source, snapshot or path; actions when no token is configured), 409 (a job
is already running) or 5xx (the repository or the state file cannot be read).

Actions (`POST /api/v1/sources/{name}/backup`, `.../drill`) take `Authorization: Bearer <token>`
only; a session cookie is never looked at here.
*/

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::server::{App, blocking};
use crate::daemon::control::{Action, Requested};
use crate::error::{Error, ErrorKind};

pub(super) fn router() -> Router<App> {
    Router::new()
        .route("/sources", get(sources))
        .route("/sources/{name}", get(source))
        .route("/sources/{name}/snapshots", get(snapshots))
        .route("/sources/{name}/snapshots/{id}", get(snapshot))
        .route("/sources/{name}/drills", get(drills))
        .route("/sources/{name}/runs", get(runs))
        .route("/sources/{name}/backup", post(backup))
        .route("/sources/{name}/drill", post(drill))
        .route("/fleet", get(fleet))
        .route("/reports", get(reports))
        .route("/reports/{month}", get(report))
        .fallback(not_found)
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_string_pretty(v) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body + "\n",
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot write the answer: {e}"),
            None,
        ),
    }
}

/// `{"error": ..., "hint": ...}`.
pub(super) fn error(status: StatusCode, message: &str, hint: Option<&str>) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<&'a str>,
    }
    let body = serde_json::to_string(&Body {
        error: message,
        hint,
    })
    .unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body + "\n",
    )
        .into_response()
}

/// The HTTP status of a library error.
pub(super) fn status_of(e: &Error) -> StatusCode {
    match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Config => StatusCode::BAD_REQUEST,
        ErrorKind::Storage => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn answer<T: Serialize>(r: crate::error::Result<T>) -> Response {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => error(status_of(&e), e.message(), e.hint()),
    }
}

pub(super) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such API path",
        Some("the API's paths are under /api/v1: /api/v1/sources, /api/v1/reports"),
    )
}

async fn sources(State(app): State<App>) -> Response {
    answer(blocking(&app, |c| c.data.overview()).await)
}

async fn source(State(app): State<App>, Path(name): Path<String>) -> Response {
    answer(blocking(&app, move |c| c.data.source(&name)).await)
}

async fn snapshots(State(app): State<App>, Path(name): Path<String>) -> Response {
    answer(blocking(&app, move |c| c.data.snapshots(&name)).await)
}

async fn snapshot(State(app): State<App>, Path((name, id)): Path<(String, String)>) -> Response {
    answer(blocking(&app, move |c| c.data.snapshot(&name, &id)).await)
}

async fn drills(State(app): State<App>, Path(name): Path<String>) -> Response {
    answer(blocking(&app, move |c| c.data.drills(&name)).await)
}

async fn runs(State(app): State<App>, Path(name): Path<String>) -> Response {
    answer(blocking(&app, move |c| c.data.runs(&name)).await)
}

/// The workers and every scheduled job (`offsitedb fleet --json`).
async fn fleet(State(app): State<App>) -> Response {
    answer(blocking(&app, |c| c.data.fleet()).await)
}

async fn reports(State(app): State<App>) -> Response {
    answer(blocking(&app, |c| c.data.reports()).await)
}

/// A month's report as JSON (the stored one, else drawn now).
async fn report(State(app): State<App>, Path(month): Path<String>) -> Response {
    answer(blocking(&app, move |c| c.data.report(&month)).await)
}

async fn backup(State(app): State<App>, Path(name): Path<String>, h: HeaderMap) -> Response {
    act(app, name, Action::Backup, h).await
}

async fn drill(State(app): State<App>, Path(name): Path<String>, h: HeaderMap) -> Response {
    act(app, name, Action::Drill, h).await
}

/// Queues `action` for `name`, for a caller with the token.
async fn act(app: App, name: String, action: Action, h: HeaderMap) -> Response {
    if !app.auth.enabled() {
        return error(
            StatusCode::NOT_FOUND,
            "actions are disabled: this dashboard has no token",
            Some(
                "set token under [server] in offsitedb.toml (or OFFSITEDB_SERVER_TOKEN) and restart serve",
            ),
        );
    }
    let given = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !app.auth.bearer(given) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            if given.is_some() {
                "wrong token"
            } else {
                "this action needs the dashboard's token"
            },
            Some("send Authorization: Bearer <the [server] token>"),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    // The source must exist (404) before we say anything about its jobs.
    let checked = {
        let name = name.clone();
        blocking(&app, move |c| c.data.snapshots(&name).map(|_| ())).await
    };
    if let Err(e) = checked {
        return error(status_of(&e), e.message(), e.hint());
    }
    match app.data.control().request(&name, action) {
        Requested::Queued => {
            #[derive(Serialize)]
            struct Queued<'a> {
                queued: bool,
                source: &'a str,
                action: &'a str,
                message: String,
            }
            json(
                StatusCode::ACCEPTED,
                &Queued {
                    queued: true,
                    source: &name,
                    action: action.label(),
                    message: super::pages::queued_message(&name, action),
                },
            )
        }
        Requested::Busy => error(
            StatusCode::CONFLICT,
            &format!("a job of {name} is already running or queued"),
            Some("wait for it to finish: GET /api/v1/sources/{name}/runs shows it"),
        ),
        Requested::NotRun => error(
            StatusCode::CONFLICT,
            &format!("serve does not run {name}'s jobs: it has no schedule"),
            Some(
                "add schedule = \"daily at 03:00\" to its [[source]], or run `offsitedb run` by hand",
            ),
        ),
    }
}
