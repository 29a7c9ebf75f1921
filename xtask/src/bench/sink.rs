//! A span sink for `eddy-followup-traced`: takes OTLP/HTTP exports on
//! 127.0.0.1, answers 200 and keeps only their count and size, so the
//! scenario measures what exporting costs eddy, not a collector.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Sink {
    pub endpoint: String,
    exports: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    pub fn start() -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (exports, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (counted, sized) = (exports.clone(), bytes.clone());
        std::thread::Builder::new()
            .name("bench-span-sink".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    if let Some(size) = take(stream) {
                        counted.fetch_add(1, Ordering::Relaxed);
                        sized.fetch_add(size, Ordering::Relaxed);
                    }
                }
            })?;
        Ok(Sink {
            endpoint,
            exports,
            bytes,
        })
    }

    /// Exports taken, and their bytes, so far.
    pub fn taken(&self) -> (u64, u64) {
        (
            self.exports.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Reads one request and answers 200; the body's size.
fn take(mut stream: TcpStream) -> Option<u64> {
    let body = eddy_tests::read_request_body(&mut stream)?;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .ok()?;
    Some(body.len() as u64)
}
