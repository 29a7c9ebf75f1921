//! The operations endpoints, on the one address `[http] listen` names:
//! `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (the broker answers, partitions are assigned, every routed
//! plugin is loaded).

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// Says why eddy is not ready, or `Ok` when it is. May block briefly.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), Vec<String>> + Send + Sync>;

#[derive(Clone)]
struct Endpoints {
    metrics: PrometheusHandle,
    readiness: ReadinessCheck,
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    readiness: ReadinessCheck,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Endpoints { metrics, readiness });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed")
}

async fn render_metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        endpoints.metrics.render(),
    )
}

async fn ready(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let check = endpoints.readiness.clone();
    match tokio::task::spawn_blocking(move || check()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_string()),
        Ok(Err(reasons)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", reasons.join("\n")),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("readiness check failed: {e}\n"),
        ),
    }
}

/// `eddy health`: asks `http://addr/path` and fails unless it answers 200.
/// Written on a bare socket so the container image needs no curl.
pub fn probe(addr: &str, path: &str) -> anyhow::Result<String> {
    let target: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr:?} is not an address like 127.0.0.1:9464"))?;
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))
        .with_context(|| format!("nothing answers on {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status_line = response.lines().next().unwrap_or_default().to_string();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_string())
        .unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        bail!("{path} on {addr} answered {status_line:?}: {body}");
    }
    Ok(body)
}
