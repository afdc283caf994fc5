/*!
The HTTP side of `serve`: one listener answers `/metrics` and `/healthz` (Prometheus text, as
before), the dashboard's pages and its JSON API. axum on a current-thread tokio runtime, on a
thread of its own; handlers that read the repository or the state file run on tokio's blocking
pool so one slow bucket listing does not stall the others. It stops (gracefully, then at most
[`STOP_LIMIT`] later) once the daemon's shutdown flag is set.

Every response says `Connection: close` (one request per connection: nothing keeps a connection
open across a shutdown, and scrapers read to the end) and carries a strict
Content-Security-Policy: the pages have no scripts and load nothing from elsewhere. Every POST
from another site is refused here, before any handler ([`super::auth::cross_site`]).
*/

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::warn;

use super::{api, auth, data, pages};
use crate::config::Settings;
use crate::daemon::control::Control;
use crate::daemon::metrics;
use crate::error::{Error, Result};

/// How long a stopping server waits for requests in flight.
pub const STOP_LIMIT: Duration = Duration::from_secs(5);

/// What the handlers share.
pub struct Context {
    pub data: data::Data,
    pub auth: auth::Auth,
    pub metrics: metrics::Shared,
}

pub(super) type App = Arc<Context>;

impl Context {
    pub fn new(
        settings: Arc<Settings>,
        metrics: metrics::Shared,
        control: Arc<Control>,
        state_at: crate::state::StateAt,
    ) -> Result<Context> {
        let auth = auth::Auth::new(settings.server_token())?;
        Ok(Context {
            data: data::Data::new(settings, metrics.clone(), control, state_at)?,
            auth,
            metrics,
        })
    }
}

/// Serves on `listener` from a new thread until `stop` is set.
pub fn start(
    listener: std::net::TcpListener,
    ctx: Context,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(format!("cannot read the listening address: {e}")))?;
    if let Some(w) = auth::exposure(&addr, ctx.auth.enabled()) {
        warn!("{w}");
    }
    let setup = |e: std::io::Error| Error::io(format!("cannot set up the HTTP listener: {e}"));
    listener.set_nonblocking(true).map_err(setup)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        // Page reads run here (repository listings, report rendering): a few at a time, so a
        // flood of requests queues instead of starving the backups of threads and descriptors.
        .max_blocking_threads(4)
        .build()
        .map_err(setup)?;
    let listener = {
        let _in = rt.enter();
        tokio::net::TcpListener::from_std(listener).map_err(setup)?
    };
    let app = router(Arc::new(ctx));
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                let server =
                    axum::serve(listener, app).with_graceful_shutdown(stopped(stop.clone()));
                let task = tokio::spawn(std::future::IntoFuture::into_future(server));
                stopped(stop).await;
                let _ = tokio::time::timeout(STOP_LIMIT, task).await;
            });
            rt.shutdown_timeout(STOP_LIMIT);
        })
        .map_err(|e| Error::internal(format!("cannot start the HTTP thread: {e}")))
}

async fn stopped(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/", get(pages::overview))
        .route("/sources/{name}", get(pages::source))
        .route("/sources/{name}/snapshots/{id}", get(pages::snapshot))
        .route("/sources/{name}/{action}", post(pages::act))
        .route("/fleet", get(pages::fleet))
        .route("/reports", get(pages::reports))
        .route("/reports/{file}", get(pages::report_file))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .nest("/api/v1", api::router())
        .fallback(fallback)
        .layer(middleware::from_fn(guard))
        .with_state(app)
}

async fn metrics_text(State(app): State<App>) -> Response {
    let body = app.metrics.lock().map(|m| m.render()).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
        .into_response()
}

async fn fallback(req: Request) -> Response {
    if req.uri().path().starts_with("/api/") {
        api::error(
            StatusCode::NOT_FOUND,
            "no such API path",
            Some("the API's paths are under /api/v1: /api/v1/sources, /api/v1/reports"),
        )
    } else {
        pages::not_found()
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Refuses cross-site POSTs, and adds the headers every response carries.
async fn guard(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut res = if req.method() == Method::POST
        && let Some(why) = auth::cross_site(
            header_str(req.headers(), header::ORIGIN),
            header_str(req.headers(), header::HOST),
            header_str(
                req.headers(),
                header::HeaderName::from_static("sec-fetch-site"),
            ),
        ) {
        warn!(path = %req.uri().path(), "refused {why}");
        let what = format!("refused: {why}");
        if api {
            api::error(
                StatusCode::FORBIDDEN,
                &what,
                Some("actions are taken from this dashboard's own pages, or with the API token"),
            )
        } else {
            pages::refused(StatusCode::FORBIDDEN, &what)
        }
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "connection", "close");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    set(h, "x-frame-options", "DENY");
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    res
}

/// Runs `f` on the blocking pool (it reads the repository or the state file).
pub(super) async fn blocking<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&Context) -> Result<T> + Send + 'static,
) -> Result<T> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .unwrap_or_else(|e| Err(Error::internal(format!("a request's task failed: {e}"))))
}
