//! The operations endpoints, on the one address `[http] listen` names:
//! `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (the broker answers, partitions are assigned, every routed
//! plugin is loaded).

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// Says why eddy is not ready, or `Ok` when it is. May block briefly.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), Vec<String>> + Send + Sync>;

/// How long a readiness answer is served again before the check runs anew.
const READINESS_TTL: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Endpoints {
    metrics: PrometheusHandle,
    readiness: ReadinessCheck,
    /// The last answer and when it was made. Held across a check, so
    /// requests that come meanwhile wait for it instead of starting their
    /// own: a `/readyz` flood runs one check a second, on one blocking
    /// thread, whatever the number of requests.
    last: Arc<tokio::sync::Mutex<Option<(Instant, Readiness)>>>,
}

type Readiness = Result<(), Vec<String>>;

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
        .with_state(Endpoints {
            metrics,
            readiness,
            last: Arc::default(),
        });
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
    let mut last = endpoints.last.lock().await;
    let answer = match &*last {
        Some((at, answer)) if at.elapsed() < READINESS_TTL => answer.clone(),
        _ => {
            let check = endpoints.readiness.clone();
            let answer = tokio::task::spawn_blocking(move || check())
                .await
                .unwrap_or_else(|e| Err(vec![format!("the readiness check failed: {e}")]));
            *last = Some((Instant::now(), answer.clone()));
            answer
        }
    };
    drop(last);
    match answer {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", reasons.join("\n")),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_readyz_flood_runs_one_check_a_second() {
        let checks = Arc::new(AtomicUsize::new(0));
        let readiness: ReadinessCheck = {
            let checks = checks.clone();
            Arc::new(move || {
                checks.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
                Err(vec!["no partitions assigned yet".to_string()])
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics, readiness, async move {
            let _ = stopped.await;
        }));
        let requests: Vec<_> = (0..50)
            .map(|_| {
                let addr = addr.clone();
                tokio::task::spawn_blocking(move || {
                    let error = probe(&addr, "/readyz").unwrap_err();
                    format!("{error:#}")
                })
            })
            .collect();
        for request in requests {
            let answer = request.await.unwrap();
            assert!(
                answer.contains("503") && answer.contains("no partitions"),
                "{answer}"
            );
        }
        let checks = checks.load(Ordering::SeqCst);
        assert!(checks <= 2, "50 requests at once ran {checks} checks");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
