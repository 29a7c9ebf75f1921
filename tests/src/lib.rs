//! End-to-end tests live in `tests/`. The library holds what they share
//! with the bench (`xtask`): an OTLP/HTTP receiver's request reading.

use std::io::Read;
use std::net::TcpStream;

/// Reads one HTTP request from `stream`: its head, then `Content-Length`
/// bytes of body, which it returns; `None` if the connection ends first or
/// the head has no length.
pub fn read_request_body(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut chunk = [0; 64 * 1024];
    let head_end = loop {
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        received.extend_from_slice(&chunk[..read]);
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())?;
    while received.len() < head_end + length {
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        received.extend_from_slice(&chunk[..read]);
    }
    Some(received[head_end..head_end + length].to_vec())
}
