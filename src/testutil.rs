//! Test support shared by the unit tests of several modules (compiled for tests only).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

/// The `common_ack` a stock WeHub server answers a report with.
pub(crate) const COMMON_ACK: &str = r#"{"error_code":0,"ack_type":"common_ack"}"#;

/// A loopback HTTP/1.1 server (see [`http_server`]) and what it saw.
pub(crate) struct TestServer {
    /// `http://<addr><path>`.
    pub url: Url,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
    /// Connections that ended (closed by the client, or by the server after `close_after`).
    pub closed: Arc<AtomicUsize>,
    /// Each request's head (request line and headers), in arrival order.
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Starts a loopback HTTP/1.1 server that answers every request with `200` and `answer`, reads
/// bodies by `Content-Length`, keeps connections alive until `close_after` requests were
/// served on one (then answers with `connection: close` and closes), and records what it saw.
pub(crate) async fn http_server(
    path: &str,
    answer: &'static str,
    close_after: usize,
) -> TestServer {
    gated_http_server(path, answer, close_after, None).await
}

/// [`http_server`] that, with a `gate`, takes one permit from it before each answer (so a test
/// can hold a request in flight).
pub(crate) async fn gated_http_server(
    path: &str,
    answer: &'static str,
    close_after: usize,
    gate: Option<Arc<tokio::sync::Semaphore>>,
) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}{path}", listener.local_addr().unwrap())).unwrap();
    let server = TestServer {
        url,
        accepted: Arc::new(AtomicUsize::new(0)),
        closed: Arc::new(AtomicUsize::new(0)),
        heads: Arc::new(Mutex::new(Vec::new())),
    };
    let (accepted, closed, heads) = (
        server.accepted.clone(),
        server.closed.clone(),
        server.heads.clone(),
    );
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (closed, heads, gate) = (closed.clone(), heads.clone(), gate.clone());
            tokio::spawn(async move {
                serve(&mut conn, answer, close_after, &heads, gate.as_deref()).await;
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    server
}

/// One connection of [`http_server`], until either side closes it.
async fn serve(
    conn: &mut tokio::net::TcpStream,
    answer: &str,
    close_after: usize,
    heads: &Mutex<Vec<String>>,
    gate: Option<&tokio::sync::Semaphore>,
) {
    let mut seen = Vec::new();
    let mut served = 0;
    let mut chunk = [0u8; 4096];
    loop {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if seen.len() < end + 4 + length {
                break;
            }
            seen.drain(..end + 4 + length);
            heads.lock().unwrap().push(head);
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            served += 1;
            let close = served >= close_after;
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}\r\n{answer}",
                answer.len(),
                if close { "connection: close\r\n" } else { "" }
            );
            if conn.write_all(reply.as_bytes()).await.is_err() || close {
                return;
            }
        }
    }
}
