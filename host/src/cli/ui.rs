//! `msh report` writes a run as one HTML file; `msh ui` serves the same page on localhost,
//! kept up to date as trials finish (the page long-polls `/api/wait`, which answers with
//! only what changed), with trial details. Both only read the store, so they can follow a
//! run that `msh run` is writing. The dashboard reads the run once, then only what changes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::report::{self, Snapshot};
use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use clap::Args;
use msh_store::Store;

#[derive(Debug, Args)]
pub struct ReportArgs {
    run: PathBuf,
    /// Where to write the page (default: RUN/report.html).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn snapshot(store: &Store, run: &Path) -> anyhow::Result<Snapshot> {
    Snapshot::read(store)?.with_context(|| format!("{}: the store has no run record yet", run.display()))
}

pub fn write_report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let store = super::inspect::open(&args.run)?;
    let page = report::document(&snapshot(&store, &args.run)?, false);
    let output = args.output.unwrap_or_else(|| args.run.join("report.html"));
    std::fs::write(&output, page).with_context(|| format!("cannot write {}", output.display()))?;
    println!("{}", output.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct UiArgs {
    run: PathBuf,
    /// The port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 8321)]
    port: u16,
}

struct Served {
    store: Store,
    /// The run as last read, brought up to date by each request (`Snapshot::update`).
    snapshot: Mutex<Snapshot>,
    /// The page and the plots as last drawn, with the snapshot version they show: they
    /// are drawn again only once the run has moved.
    drawn: Mutex<Drawn>,
}

#[derive(Default)]
struct Drawn {
    page: Option<(u64, String)>,
    plots: Option<(u64, String)>,
}

type Shared = Arc<Served>;

/// An error page for a request that failed (the store could not be read).
fn failure(e: anyhow::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("msh ui: {e:#}")).into_response()
}

impl Served {
    /// The run now: the snapshot, updated with what changed since the last request.
    fn current(&self) -> anyhow::Result<MutexGuard<'_, Snapshot>> {
        // A request that panicked left the snapshot whole (updates replace trials one by one).
        let mut snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        snapshot.update(&self.store)?;
        Ok(snapshot)
    }
}

impl Served {
    /// The page (`plots` false) or the plots as they are now, drawn again only if the run
    /// has moved since they were last drawn.
    fn drawn(&self, plots: bool) -> anyhow::Result<String> {
        let snapshot = self.current()?;
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        let slot = if plots { &mut drawn.plots } else { &mut drawn.page };
        match slot {
            Some((version, html)) if *version == snapshot.version => Ok(html.clone()),
            _ => {
                let html = if plots { report::plots(&snapshot) } else { report::document(&snapshot, true) };
                *slot = Some((snapshot.version, html.clone()));
                Ok(html)
            }
        }
    }
}

async fn page(State(served): State<Shared>) -> Response {
    match served.drawn(false) {
        Ok(html) => Html(html).into_response(),
        Err(e) => failure(e),
    }
}

/// The plots, which the page redraws now and then (the table follows `/api/wait`).
async fn fragment(State(served): State<Shared>) -> Response {
    match served.drawn(true) {
        Ok(html) => Html(html).into_response(),
        Err(e) => failure(e),
    }
}

#[derive(serde::Deserialize)]
struct Since {
    /// The finish log's position the page holds (its `data-position`).
    since: u64,
}

/// Answers when trials have finished since position `since` of the finish log, or the run
/// has ended, and otherwise after 25 seconds, with what changed: the rows of the trials
/// that finished since then and of those that run or wait, the new position, and the
/// run's summary (counts, stages, best).
async fn wait(State(served): State<Shared>, Query(since): Query<Since>) -> Response {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let answer = || -> anyhow::Result<Option<String>> {
            let position = served.store.finished_since(u64::MAX)?.1;
            let ended = report::ended(&served.store)?;
            if position == since.since && !ended && Instant::now() < deadline {
                return Ok(None);
            }
            let (finished, position) = served.store.finished_since(since.since)?;
            let snapshot = served.current()?;
            let open = snapshot.trials.iter().filter(|t| !t.status.is_finished());
            let rows = report::rows_json(&snapshot, finished.iter().chain(open));
            Ok(Some(format!(
                "{{\"position\":{position},\"ended\":{ended},\"finished\":{},\"rows\":{rows},\"summary\":{}}}",
                snapshot.finished(),
                serde_json::to_string(&report::summary(&snapshot))?
            )))
        };
        match answer() {
            Ok(Some(body)) => return ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Ok(None) => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => return failure(e),
        }
    }
}

async fn trial(State(served): State<Shared>, UrlPath(id): UrlPath<u64>) -> Response {
    match served.current() {
        Ok(s) => match report::trial_detail(&s, id) {
            Some(html) => Html(html).into_response(),
            None => (StatusCode::NOT_FOUND, format!("the run has no trial {id}")).into_response(),
        },
        Err(e) => failure(e),
    }
}

#[derive(serde::Deserialize)]
struct Window {
    /// The first trial (by place in id order) and how many: a client can page through a
    /// large run instead of taking every trial at once.
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn trials_json(State(served): State<Shared>, Query(window): Query<Window>) -> Response {
    match served.current() {
        Ok(s) => {
            let rest = s.trials.get(window.offset..).unwrap_or_default();
            Json(&rest[..window.limit.unwrap_or(rest.len()).min(rest.len())]).into_response()
        }
        Err(e) => failure(e),
    }
}

/// Answers only requests addressed to this server by its loopback name (`Host:
/// 127.0.0.1:PORT` or `localhost:PORT`), so that a web page whose own name was rebound to
/// 127.0.0.1 (DNS rebinding) cannot read the run; and refuses requests that another site's
/// page sends (an `Origin` other than this server).
async fn loopback_only(State(port): State<u16>, request: Request, next: Next) -> Response {
    match refusal(port, request.headers()) {
        Some(refused) => refused.into_response(),
        None => next.run(request).await,
    }
}

/// Why `loopback_only` refuses a request with these headers, if it does.
fn refusal(port: u16, headers: &axum::http::HeaderMap) -> Option<(StatusCode, &'static str)> {
    let names = [format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !host.is_some_and(|host| names.iter().any(|n| n == host)) {
        return Some((StatusCode::MISDIRECTED_REQUEST, "msh ui answers requests for 127.0.0.1 or localhost only\n"));
    }
    let foreign = |origin: &axum::http::HeaderValue| {
        !origin.to_str().is_ok_and(|o| names.iter().any(|n| o == format!("http://{n}")))
    };
    if headers.get(header::ORIGIN).is_some_and(foreign) {
        return Some((StatusCode::FORBIDDEN, "msh ui refuses requests from other sites' pages\n"));
    }
    None
}

pub fn serve(args: UiArgs) -> anyhow::Result<ExitCode> {
    let store = super::inspect::open(&args.run)?;
    let snapshot = Mutex::new(snapshot(&store, &args.run)?);
    let served: Shared = Arc::new(Served { store, snapshot, drawn: Mutex::default() });
    // Drawn once before it listens: the first visitor gets the page at once.
    served.drawn(false)?;
    let routes = Router::new()
        .route("/", get(page))
        .route("/fragment", get(fragment))
        .route("/api/wait", get(wait))
        .route("/api/trials", get(trials_json))
        .route("/trial/{id}", get(trial))
        .with_state(served);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
        let listener = match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                bail!("{address} is taken (another program listens there); choose another with --port")
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {address}")),
        };
        let bound = listener.local_addr()?;
        let app = routes.layer(middleware::from_fn_with_state(bound.port(), loopback_only));
        println!("msh ui: {} at http://{bound}/ (Ctrl-C stops)", args.run.display());
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the dashboard server stopped")
    })?;
    Ok(ExitCode::SUCCESS)
}
