//! The operations endpoints, on the one address `[http] listen` names:
//! `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (the broker answers, partitions are assigned, every routed
//! plugin is loaded).

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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
    /// Connections open at once; one more closes the oldest that is not
    /// in a request, or is closed itself if every one is.
    pub max_connections: usize,
    /// Connections accepted per second from one client address, in bursts
    /// of up to a tenth of it; more are closed as soon as they open, so one
    /// client's flood costs eddy next to nothing and delays no one else.
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
    let open_now = Arc::new(Open::default());
    let open = GracefulShutdown::new();
    let mut peers = Peers::new(limits.accepts_per_second);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, peer)) if peers.admit(peer.ip(), std::time::Instant::now()) => stream,
            // Over its rate: closed at once, which costs next to nothing.
            Ok(_) => continue,
            Err(e) => {
                // Out of file descriptors, say: the next accept may work.
                tracing::warn!("the HTTP endpoint cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // Every connection is taken: the oldest that is not in a
            // request makes room. Clients that open connections and hold
            // them idle only push each other out; a probe, which asks at
            // once, is answered.
            Err(_) if open_now.evict_oldest_idle() => {
                let freed = connections.clone().acquire_owned();
                match tokio::time::timeout(EVICTION_WAIT, freed).await {
                    Ok(Ok(permit)) => permit,
                    _ => continue,
                }
            }
            Err(_) => {
                tracing::debug!(
                    "{} HTTP connections are open, all in requests: closing a new one",
                    limits.max_connections
                );
                continue;
            }
        };
        let (id, busy, evicted) = open_now.add();
        let service = {
            let (app, busy) = (app.clone(), busy.clone());
            hyper::service::service_fn(move |request| {
                let mut app = app.clone();
                let in_request = InRequest::enter(busy.clone());
                async move {
                    let answer = tower_service::Service::call(&mut app, request).await;
                    drop(in_request);
                    answer
                }
            })
        };
        let connection = open.watch(http.serve_connection(TokioIo::new(stream), service));
        let open_now = open_now.clone();
        tokio::spawn(async move {
            // A client that went away, was too slow or was pushed out:
            // nothing to report.
            tokio::select! {
                _ = connection => {}
                () = evicted.cancelled() => {}
            }
            open_now.remove(id);
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

/// Longest a new connection waits for the one it pushed out to close.
const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// The open connections, oldest first: whether each is in a request, and
/// how to close it.
#[derive(Default)]
struct Open {
    connections: std::sync::Mutex<std::collections::VecDeque<Connection>>,
    next_id: std::sync::atomic::AtomicU64,
}

struct Connection {
    id: u64,
    busy: Arc<AtomicBool>,
    evict: CancellationToken,
}

impl Open {
    fn list(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new connection: its id, its in-a-request flag and its eviction.
    fn add(&self) -> (u64, Arc<AtomicBool>, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (busy, evict) = (Arc::new(AtomicBool::new(false)), CancellationToken::new());
        self.list().push_back(Connection {
            id,
            busy: busy.clone(),
            evict: evict.clone(),
        });
        (id, busy, evict)
    }

    fn remove(&self, id: u64) {
        self.list().retain(|c| c.id != id);
    }

    /// Closes the oldest connection not in a request (waiting for its
    /// first request head, or idle between requests). `false` if every
    /// one is in a request.
    fn evict_oldest_idle(&self) -> bool {
        let list = self.list();
        let Some(at) = list
            .iter()
            .position(|c| !c.busy.load(Ordering::Relaxed) && !c.evict.is_cancelled())
        else {
            return false;
        };
        list[at].evict.cancel();
        true
    }
}

/// Marks a connection as in a request while it lives.
struct InRequest(Arc<AtomicBool>);

impl InRequest {
    fn enter(busy: Arc<AtomicBool>) -> InRequest {
        busy.store(true, Ordering::Relaxed);
        InRequest(busy)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Clients tracked at once for their rate; past it, those with a full
/// bucket (not seen for a while) are forgotten.
const MAX_PEERS: usize = 4096;

/// A token bucket per client address: `rate` connections a second, in
/// bursts of up to a tenth of it. One client flooding the endpoint is cut
/// to its rate without holding up anyone else (a probe comes from its own
/// address).
struct Peers {
    rate: f64,
    burst: f64,
    buckets: std::collections::HashMap<std::net::IpAddr, (f64, Instant)>,
}

impl Peers {
    fn new(rate: u32) -> Peers {
        let rate = f64::from(rate.max(1));
        Peers {
            rate,
            burst: (rate / 10.0).max(1.0),
            buckets: std::collections::HashMap::new(),
        }
    }

    /// Whether a connection from `peer` at `now` is within its rate (and
    /// counts it).
    fn admit(&mut self, peer: std::net::IpAddr, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        if self.buckets.len() >= MAX_PEERS && !self.buckets.contains_key(&peer) {
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= MAX_PEERS {
                return false;
            }
        }
        let (tokens, at) = self.buckets.entry(peer).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
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
    use std::sync::atomic::AtomicUsize;

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

    /// The attack: every connection taken by a client that sends nothing,
    /// renewed faster than its rate. Past its rate its connections are
    /// closed at once; within it, each new one pushes out the oldest idle
    /// one. So a probe, which asks at once, is answered every time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_idle_connections_cannot_starve_healthz() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 4,
            ..ConnectionLimits::default()
        };
        let (addr, stop, server) = start(limits, Arc::default()).await;
        let first: Vec<TcpStream> = (0..4).map(|_| slow_client(&addr)).collect();
        let flooding = Arc::new(AtomicBool::new(true));
        let flood = {
            let (addr, flooding) = (addr.clone(), flooding.clone());
            std::thread::spawn(move || {
                let mut held = std::collections::VecDeque::new();
                let mut opened = 0;
                while flooding.load(Ordering::Relaxed) && opened < 2_000 {
                    held.push_back(slow_client(&addr));
                    if held.len() > 64 {
                        held.pop_front();
                    }
                    opened += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                opened
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..10 {
            let (answer, took) = healthz_from_elsewhere(&addr).await;
            assert!(answer.ends_with("ok\n"), "{answer:?}");
            assert!(took < Duration::from_millis(500), "answered after {took:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        flooding.store(false, Ordering::Relaxed);
        let opened = flood.join().unwrap();
        assert!(opened > 50, "the flood opened only {opened} connections");
        // The first idle ones were pushed out long before their 5 s.
        for mut slow in first {
            slow.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut rest = Vec::new();
            let read = slow.read_to_end(&mut rest);
            assert!(
                read.is_ok()
                    || read
                        .as_ref()
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                "an idle connection stayed open: {read:?}"
            );
        }
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    /// `/healthz` asked from another client address than the tests' own
    /// (127.0.0.2: all of 127/8 is this machine), with how long it took.
    async fn healthz_from_elsewhere(addr: &str) -> (String, Duration) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let started = Instant::now();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: eddy\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await;
        (answer, started.elapsed())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_clients_flood_is_cut_to_its_rate_and_another_is_answered() {
        let limits = ConnectionLimits {
            accepts_per_second: 20,
            ..ConnectionLimits::default()
        };
        let (addr, stop, server) = start(limits, Arc::default()).await;
        let started = Instant::now();
        let mut answered = 0;
        for _ in 0..30 {
            if healthz(&addr).await.0.is_ok() {
                answered += 1;
            }
        }
        let took = started.elapsed().as_secs_f64();
        // A burst of 2, then 20 a second.
        let allowed = 2 + (took * 20.0).ceil() as usize;
        assert!(
            answered <= allowed && answered < 30,
            "{answered} of 30 answered in {took:.2} s at 20 a second"
        );
        let (answer, _) = healthz_from_elsewhere(&addr).await;
        assert!(answer.ends_with("ok\n"), "{answer:?}");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_readyz_flood_runs_one_check_a_second() {
        let checks = Arc::new(AtomicUsize::new(0));
        // Fifty at once from one address: within its rate here.
        let limits = ConnectionLimits {
            accepts_per_second: 10_000,
            ..ConnectionLimits::default()
        };
        let (addr, stop, server) = start(limits, checks.clone()).await;
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
