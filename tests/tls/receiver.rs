//! A real HTTPS receiver on 127.0.0.1 for the TLS tests: rustls over std's
//! `TcpListener`, HTTP/1.1 keep-alive with `Content-Length` bodies, one
//! thread per connection. It records every request (with the SNI name the
//! client sent, whether it presented a certificate, and which connection
//! carried it) and every connection whose handshake failed, with rustls's
//! error. Shared with the crate's unit tests (`src/webhook/tls/tests.rs`
//! includes this file by path).
//!
//! The accept loop polls a non-blocking listener and connection sockets use
//! 50 ms read timeouts, so every thread sees the stop flag promptly; `Drop`
//! sets it and joins them all. After a failed handshake the server reads
//! until the client closes (at most 2 s), so its alert reaches the client
//! before the socket closes, not a reset.
#![allow(dead_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

const POLL: Duration = Duration::from_millis(50);
const MAX_HEAD: usize = 64 * 1024;

/// One request, as received.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The TCP connection that carried it, numbered from 0 in accept order.
    pub(crate) conn: u64,
    /// The server name the client sent (SNI), if any.
    pub(crate) sni: Option<String>,
    /// Whether the client presented a certificate.
    pub(crate) client_certificate: bool,
    /// Headers, names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    config: Mutex<Option<Arc<ServerConfig>>>,
    requests: Mutex<Vec<Request>>,
    refused: Mutex<Vec<String>>,
    status: AtomicU16,
    next_conn: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The receiver; stopped and joined on drop.
pub(crate) struct TlsReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TlsReceiver {
    /// Listens on an ephemeral port of 127.0.0.1 and answers 204.
    pub(crate) fn start(config: Arc<ServerConfig>) -> TlsReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        *lock(&state.config) = Some(config);
        state.status.store(204, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let (s, flag) = (Arc::clone(&state), Arc::clone(&stop));
        let accept = thread::Builder::new()
            .name("tls-accept".into())
            .spawn(move || accept_loop(listener, s, flag))
            .expect("spawn");
        TlsReceiver {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://{host}:{port}{path}`.
    pub(crate) fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    /// Later connections use this configuration (a renewed certificate).
    pub(crate) fn set_config(&self, config: Arc<ServerConfig>) {
        *lock(&self.state.config) = Some(config);
    }

    /// Later requests get this status.
    pub(crate) fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        lock(&self.state.requests).clone()
    }

    /// rustls's error for each connection whose handshake failed.
    pub(crate) fn refused(&self) -> Vec<String> {
        lock(&self.state.refused).clone()
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> u64 {
        self.state.next_conn.load(Ordering::SeqCst)
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>, stop: Arc<AtomicBool>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let id = state.next_conn.fetch_add(1, Ordering::SeqCst);
                let (s, flag) = (Arc::clone(&state), Arc::clone(&stop));
                let spawned = thread::Builder::new()
                    .name(format!("tls-conn-{id}"))
                    .spawn(move || serve(stream, id, &s, &flag));
                conns.push(spawned.expect("spawn"));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Whether an I/O error only means "nothing yet": the read timeout.
fn is_poll(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn serve(stream: TcpStream, id: u64, state: &State, stop: &AtomicBool) {
    let config = lock(&state.config).clone().expect("config");
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, stream);
    // Handshake, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls.conn.is_handshaking() {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            return;
        }
        match tls.conn.complete_io(&mut tls.sock) {
            Ok(_) => {}
            Err(e) if is_poll(&e) => {}
            Err(e) => return refuse(tls, e, state),
        }
    }
    let sni = tls.conn.server_name().map(str::to_owned);
    let client_certificate = tls.conn.peer_certificates().is_some();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // One request: the head, then `content-length` bytes of body.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD || !read_some(&mut tls, &mut buf, &mut chunk, stop, state) {
                return;
            }
        };
        let (headers, length) = parse_head(&buf[..head_end]);
        while buf.len() < head_end + length {
            if !read_some(&mut tls, &mut buf, &mut chunk, stop, state) {
                return;
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        lock(&state.requests).push(Request {
            conn: id,
            sni: sni.clone(),
            client_certificate,
            headers,
            body,
        });
        let status = state.status.load(Ordering::SeqCst);
        let answer = format!("HTTP/1.1 {status} Test\r\ncontent-length: 0\r\n\r\n");
        if tls
            .write_all(answer.as_bytes())
            .and_then(|()| tls.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Reads more into `buf`; false at the end of the connection, on an error,
/// or at shutdown.
fn read_some(
    tls: &mut StreamOwned<ServerConnection, TcpStream>,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    stop: &AtomicBool,
    state: &State,
) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        match tls.read(chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if is_poll(&e) => {}
            Err(e) => {
                // A client certificate rejected after the handshake (TLS 1.3).
                if let Some(tls_error) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
                {
                    lock(&state.refused).push(tls_error.to_string());
                }
                return false;
            }
        }
    }
}

/// Records a failed handshake; the alert is already written. Reads until the
/// client hangs up, so closing cannot reset the connection before the client
/// has read the alert.
fn refuse(tls: StreamOwned<ServerConnection, TcpStream>, e: io::Error, state: &State) {
    lock(&state.refused).push(e.to_string());
    let mut sock = tls.sock;
    let _ = sock.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if is_poll(&e) => {}
            Err(_) => break,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> (Vec<(String, String)>, usize) {
    let text = String::from_utf8_lossy(head);
    let headers: Vec<(String, String)> = text
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    (headers, length)
}
