//! `msh report` writes a run as one HTML file; `msh ui` serves the same page on localhost,
//! redrawn as trials finish (the page long-polls `/api/wait`), with trial details. Both
//! only read the store, so they can follow a run that `msh run` is writing.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use clap::Args;
use msh::report::{self, Snapshot};
use msh::store::Store;

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
    run: PathBuf,
}

type Shared = Arc<Served>;

/// An error page for a request that failed (the store could not be read).
fn failure(e: anyhow::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("msh ui: {e:#}")).into_response()
}

impl Served {
    fn snapshot(&self) -> anyhow::Result<Snapshot> {
        snapshot(&self.store, &self.run)
    }
}

async fn page(State(served): State<Shared>) -> Response {
    match served.snapshot() {
        Ok(s) => Html(report::document(&s, true)).into_response(),
        Err(e) => failure(e),
    }
}

async fn fragment(State(served): State<Shared>) -> Response {
    match served.snapshot() {
        Ok(s) => Html(report::body(&s)).into_response(),
        Err(e) => failure(e),
    }
}

#[derive(serde::Deserialize)]
struct Since {
    finished: usize,
}

/// Answers when the count of finished trials differs from `finished` or the run has
/// ended, and otherwise after 25 seconds.
async fn wait(State(served): State<Shared>, Query(since): Query<Since>) -> Response {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let (finished, ended) = match report::progress(&served.store) {
            Ok(progress) => progress,
            Err(e) => return failure(e.into()),
        };
        if finished != since.finished || ended || Instant::now() >= deadline {
            return Json(serde_json::json!({ "finished": finished, "ended": ended })).into_response();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn trial(State(served): State<Shared>, UrlPath(id): UrlPath<u64>) -> Response {
    match served.snapshot() {
        Ok(s) => match report::trial_detail(&s, id) {
            Some(html) => Html(html).into_response(),
            None => (StatusCode::NOT_FOUND, format!("the run has no trial {id}")).into_response(),
        },
        Err(e) => failure(e),
    }
}

async fn trials_json(State(served): State<Shared>) -> Response {
    match served.snapshot() {
        Ok(s) => Json(s.trials).into_response(),
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
    snapshot(&store, &args.run)?;
    let served: Shared = Arc::new(Served { store, run: args.run.clone() });
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
