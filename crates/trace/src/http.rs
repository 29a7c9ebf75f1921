//! The span exporter's HTTP client: eddy's own, blocking, plain HTTP/1.1
//! with timeouts, on the export thread. The collector is expected beside
//! eddy (an OpenTelemetry Collector sidecar or node agent, which forwards
//! over TLS), so no TLS stack comes in for it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

/// Longest the collector may take to accept a connection, and to answer.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// The exporter's HTTP client: one plain HTTP/1.1 POST per batch, with
/// timeouts, on the export thread.
#[derive(Debug)]
pub(super) struct PlainHttp;

#[async_trait::async_trait]
impl HttpClient for PlainHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        post(&request)
    }
}

fn post(request: &Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    let uri = request.uri();
    let host = uri.host().ok_or("the endpoint names no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let address = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, CONNECT_WAIT)?;
    stream.set_read_timeout(Some(ANSWER_WAIT))?;
    stream.set_write_timeout(Some(ANSWER_WAIT))?;
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n");
    for (name, value) in request.headers() {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let body = request.body();
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    // Only the status matters: the answer's body may be chunked, and an
    // export's partial success is not acted on.
    let mut answer = Vec::with_capacity(256);
    let mut chunk = [0; 256];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let read = stream.read(&mut chunk)?;
        if read == 0 || answer.len() > 8192 {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
    let line = String::from_utf8_lossy(&answer);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "the collector's answer is not HTTP: {:?}",
                line.lines().next()
            )
        })?;
    Ok(Response::builder().status(status).body(Bytes::new())?)
}
