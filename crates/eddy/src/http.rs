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
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::Semaphore;

/// Bucket bounds of the duration histograms, in seconds: 50 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();

/// Installs the Prometheus recorder of the metrics `eddy_core::metrics`
/// names (once per process) and returns its handle.
pub fn install_metrics() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
            }
            handle
        })
        .clone()
}

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

/// What keeps a slow or greedy client from holding the endpoint.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request's head must have arrived this long after the connection
    /// opened or its last answer was written; else the connection is closed.
    pub header_read_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it opens.
    pub max_connections: usize,
    /// Connections accepted per second, in bursts of up to a tenth of it;
    /// more wait in the kernel's backlog, so a flood of requests costs eddy
    /// no more than that many.
    pub accepts_per_second: u32,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 64,
            accepts_per_second: 100,
        }
    }
}

/// How long requests in flight at shutdown may take to be answered.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Serves the endpoints on `listener` until `shutdown` resolves, with the
/// default [`ConnectionLimits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    readiness: ReadinessCheck,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(
        listener,
        metrics,
        readiness,
        shutdown,
        ConnectionLimits::default(),
    )
    .await
}

/// Serves the endpoints on `listener` until `shutdown` resolves, over
/// HTTP/1.1, within `limits`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    readiness: ReadinessCheck,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
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
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let open = GracefulShutdown::new();
    let mut pace = Pace::new(limits.accepts_per_second);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = async {
                pace.next().await;
                listener.accept().await
            } => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: the next accept may work.
                tracing::warn!("the HTTP endpoint cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(
                "{} HTTP connections are open: closing a new one",
                limits.max_connections
            );
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = open.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that went away or was too slow: nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    if tokio::time::timeout(SHUTDOWN_WAIT, open.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still unanswered at shutdown were dropped");
    }
    Ok(())
}

/// A token bucket: `rate` a second, in bursts of up to a tenth of it.
struct Pace {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Pace {
    fn new(rate: u32) -> Pace {
        let rate = f64::from(rate.max(1));
        let burst = (rate / 10.0).max(1.0);
        Pace {
            rate,
            burst,
            tokens: burst,
            at: tokio::time::Instant::now(),
        }
    }

    /// Waits until one more may go, and takes it.
    async fn next(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.at = tokio::time::Instant::now();
        }
        self.tokens -= 1.0;
    }
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

    /// Serves the endpoints on a free port within `limits`; the readiness
    /// check counts its runs in `checks` and takes 200 ms.
    async fn start(
        limits: ConnectionLimits,
        checks: Arc<AtomicUsize>,
    ) -> (String, tokio::sync::oneshot::Sender<()>, JoinHandle) {
        let readiness: ReadinessCheck = Arc::new(move || {
            checks.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            Err(vec!["no partitions assigned yet".to_string()])
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve_with(listener, metrics, readiness, shutdown, limits));
        (addr, stop, server)
    }

    type JoinHandle = tokio::task::JoinHandle<anyhow::Result<()>>;

    /// A client that sends the start of a request head and then nothing.
    fn slow_client(addr: &str) -> TcpStream {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: ")
            .unwrap();
        stream
    }

    /// `/healthz` from a blocking thread, with how long it took.
    async fn healthz(addr: &str) -> (anyhow::Result<String>, Duration) {
        let addr = addr.to_string();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            (probe(&addr, "/healthz"), started.elapsed())
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_client_is_cut_off_and_holds_no_one_up() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(500),
            max_connections: 8,
            ..ConnectionLimits::default()
        };
        let (addr, stop, server) = start(limits, Arc::default()).await;
        let mut slow = slow_client(&addr);

        let (answer, took) = healthz(&addr).await;
        assert_eq!(answer.unwrap(), "ok");
        assert!(took < Duration::from_millis(400), "took {took:?}");

        // The server closes the slow connection once its head is overdue.
        let started = Instant::now();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let read = slow.read_to_end(&mut rest);
        let waited = started.elapsed();
        let still_open = read.as_ref().is_err_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        });
        assert!(!still_open, "the slow connection stayed open: {read:?}");
        assert!(waited < Duration::from_secs(2), "closed after {waited:?}");

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_limit_are_closed_until_room_is_made() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(1),
            max_connections: 4,
            ..ConnectionLimits::default()
        };
        let (addr, stop, server) = start(limits, Arc::default()).await;
        let slow: Vec<TcpStream> = (0..4).map(|_| slow_client(&addr)).collect();

        let (refused, took) = healthz(&addr).await;
        let refused = format!("{:#}", refused.unwrap_err());
        // Closed unanswered: an empty answer, a reset since the request was
        // never read, or (closed before the request was written) a broken
        // pipe.
        assert!(
            refused.contains("answered \"\"")
                || refused.contains("reset")
                || refused.contains("Broken pipe"),
            "{refused}"
        );
        assert!(took < Duration::from_millis(500), "refused after {took:?}");

        // The slow ones are cut off after a second; then there is room.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (answer, _) = healthz(&addr).await;
        assert_eq!(answer.unwrap(), "ok");
        drop(slow);

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_requests_is_paced() {
        let limits = ConnectionLimits {
            accepts_per_second: 20,
            ..ConnectionLimits::default()
        };
        let (addr, stop, server) = start(limits, Arc::default()).await;
        let started = Instant::now();
        for _ in 0..30 {
            let (answer, _) = healthz(&addr).await;
            assert_eq!(answer.unwrap(), "ok");
        }
        // 20 a second, two at once: the 30 take about 1.4 s, not a few ms.
        let took = started.elapsed();
        assert!(
            took > Duration::from_millis(1200),
            "30 requests took {took:?}"
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_readyz_flood_runs_one_check_a_second() {
        let checks = Arc::new(AtomicUsize::new(0));
        let (addr, stop, server) = start(ConnectionLimits::default(), checks.clone()).await;
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
