//! A programmable HTTP/1.1 server on 127.0.0.1 for integration tests, built on std only.
//!
//! ```ignore
//! let script = Script::new(vec![Reply::Status(500), Reply::Status(200)]);
//! let server = TestServer::start(script.handler());
//! // ... point the sender at server.url("/hook") ...
//! assert!(server.wait_for_requests(2, Duration::from_secs(5)));
//! assert_eq!(server.requests()[1].header("webhook-id"), Some("msg_..."));
//! ```
//!
//! What it does:
//! - Binds an ephemeral port. One accept thread, plus one thread per TCP connection.
//! - Speaks HTTP/1.1 keep-alive: many requests per connection, pipelining included. It closes
//!   after a response when the request says `Connection: close`, when an HTTP/1.0 request does
//!   not ask for keep-alive, or when the reply itself closes (see [`Reply`]).
//! - Reads bodies framed by `Content-Length` or `Transfer-Encoding: chunked` (trailers are
//!   skipped), answers `Expect: 100-continue`, and refuses heads over 64 KiB (431) and bodies
//!   over 64 MiB (413).
//! - Records every request *before* asking the handler, so a request answered with
//!   [`Reply::Hang`] is already visible to [`TestServer::requests`].
//! - `Drop` sets a shutdown flag, wakes the accept thread with a connection to itself, and
//!   joins it; the accept thread joins every connection thread. Connection sockets use 50 ms
//!   read and write timeouts so each blocked thread notices the flag promptly, and a
//!   [`Reply::Delay`] wait is cut short by shutdown. No thread outlives the server.
//! - Counts the bytes it writes in answer to each request ([`TestServer::bytes_answered`]), so a
//!   test can tell how much of a large reply a client could have read.
//! - If a handler panicked, `Drop` panics too (unless the test is already panicking), so a
//!   broken handler cannot pass silently.
//! - Thread names are `ts<N>-acc` and `ts<N>-c<conn>`, with `N` unique per server in the
//!   process, so a test can count this server's OS threads while other tests run in parallel
//!   (see [`TestServer::thread_prefix`] and [`os_threads_with_prefix`]).
//!
//! Not supported: TLS, HTTP/2, responses to `HEAD` beyond omitting the body.
#![allow(dead_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often a blocked connection thread wakes to check the shutdown flag.
const POLL: Duration = Duration::from_millis(50);
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;
const STREAM_CHUNK: usize = 16 * 1024;

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The status with an empty body.
    Status(u16),
    /// The status with a `text/plain` body.
    StatusBody(u16, String),
    /// The status, these headers written verbatim, and the body. `Content-Length` is added
    /// unless given; a `Connection: close` header makes the server close after the response.
    WithHeaders(u16, Vec<(String, String)>, String),
    /// Waits, then does the inner reply. Shutdown cuts the wait short and drops the
    /// connection unanswered.
    Delay(Duration, Box<Reply>),
    /// Never answers: holds the connection until the client closes it or the server shuts
    /// down.
    Hang,
    /// Closes the socket without answering. With std alone this is a FIN, not an RST (std
    /// cannot set `SO_LINGER` to 0), so the client sees the connection end before any response
    /// byte, an "unexpected EOF" rather than "connection reset".
    Reset,
    /// The status line and headers without `Content-Length`, with `Connection: close`, then
    /// body bytes forever, until the client goes away or the server shuts down.
    Endless(u16),
    /// The status with a `Content-Length` body of this many `x` bytes.
    Huge(u16, usize),
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method, such as `POST`.
    pub method: String,
    /// The request target as sent, query string included.
    pub path: String,
    /// Headers in arrival order, names lowercased, values with surrounding whitespace trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was chunked.
    pub body: Vec<u8>,
    /// When the whole request had been read.
    pub at: Instant,
    /// Which TCP connection carried it, numbered from 0 in accept order; equal ids prove
    /// keep-alive reuse.
    pub conn_id: u64,
}

impl Recorded {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8, lossily.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

/// A shareable request handler, as taken by [`by_path`].
pub type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// Wraps a closure as a [`Handler`].
pub fn handler(f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Handler {
    Arc::new(f)
}

/// Routes by exact path (query string ignored); anything else gets 404.
pub fn by_path(
    routes: Vec<(&'static str, Handler)>,
) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |req: &Recorded| {
        routes
            .iter()
            .find(|(p, _)| *p == req.path_only())
            .map_or(Reply::Status(404), |(_, h)| h(req))
    }
}

/// Replies in the given order, then repeats the last one forever. Cheap to clone; clones
/// share the position.
#[derive(Clone)]
pub struct Script {
    inner: Arc<ScriptInner>,
}

struct ScriptInner {
    replies: Vec<Reply>,
    served: AtomicUsize,
}

impl Script {
    /// # Panics
    ///
    /// If `replies` is empty.
    pub fn new(replies: Vec<Reply>) -> Self {
        assert!(!replies.is_empty(), "a Script needs at least one reply");
        Self {
            inner: Arc::new(ScriptInner {
                replies,
                served: AtomicUsize::new(0),
            }),
        }
    }

    /// The next reply.
    pub fn next_reply(&self) -> Reply {
        let i = self.inner.served.fetch_add(1, Ordering::SeqCst);
        let last = self.inner.replies.len() - 1;
        self.inner.replies[i.min(last)].clone()
    }

    /// How many replies have been handed out.
    pub fn served(&self) -> usize {
        self.inner.served.load(Ordering::SeqCst)
    }

    /// A handler for [`TestServer::start`] (or [`handler`]) that plays this script.
    pub fn handler(&self) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
        let script = self.clone();
        move |_: &Recorded| script.next_reply()
    }
}

/// The server. See the module docs.
pub struct TestServer {
    addr: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

struct Shared {
    handler: Box<dyn Fn(&Recorded) -> Reply + Send + Sync>,
    shutdown: AtomicBool,
    requests: Mutex<Vec<Recorded>>,
    // Signalled on every recorded request and on shutdown.
    changed: Condvar,
    connections: AtomicU64,
    thread_panicked: AtomicBool,
    /// Per answer that has ended: the request's path and the bytes written.
    answered: Mutex<Vec<(String, u64)>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Recorded>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    fn record(&self, req: Recorded) {
        self.lock().push(req);
        self.changed.notify_all();
    }

    /// Sleeps for `d`; returns false early if the server shuts down.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut guard = self.lock();
        loop {
            if self.is_shutdown() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl TestServer {
    /// Binds 127.0.0.1 on an ephemeral port and starts serving; `handler` picks the reply to
    /// each request.
    ///
    /// # Panics
    ///
    /// If the port cannot be bound or the accept thread cannot start.
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        let id = NEXT_SERVER_ID.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            shutdown: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            connections: AtomicU64::new(0),
            thread_panicked: AtomicBool::new(false),
            answered: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("ts{id}-acc"))
            .spawn(move || accept_loop(listener, accept_shared, id))
            .expect("spawn the test server's accept thread");
        TestServer {
            addr,
            id,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// `http://127.0.0.1:PORT/path`; a missing leading `/` is added.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().clone()
    }

    /// How many requests have been recorded.
    pub fn request_count(&self) -> usize {
        self.shared.lock().len()
    }

    /// Waits until at least `n` requests are recorded or `timeout` passes; true if they were.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let guard = self.shared.lock();
        let (guard, _) = self
            .shared
            .changed
            .wait_timeout_while(guard, timeout, |reqs| reqs.len() < n)
            .unwrap_or_else(PoisonError::into_inner);
        guard.len() >= n
    }

    /// The bytes (head and body) the server wrote in answer to each request
    /// for `path` (query string ignored) whose answer has ended, in the
    /// order they ended. An answer ends when it is written, or when the
    /// client goes away or the server shuts down while writing it: then this
    /// is how much the client could have read.
    pub fn bytes_answered(&self, path: &str) -> Vec<u64> {
        self.shared
            .answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(p, _)| p.split('?').next() == Some(path))
            .map(|(_, n)| *n)
            .collect()
    }

    /// How many TCP connections were accepted.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The prefix of this server's thread names, such as `ts7-`.
    pub fn thread_prefix(&self) -> String {
        format!("ts{}-", self.id)
    }
}

impl Drop for TestServer {
    /// Stops accepting, ends every connection (in-flight replies included), and joins every
    /// thread the server started.
    fn drop(&mut self) {
        {
            // Setting the flag under the lock means a thread between its flag check and its
            // condvar wait cannot miss this notification.
            let _guard = self.shared.lock();
            self.shared.shutdown.store(true, Ordering::SeqCst);
            self.shared.changed.notify_all();
        }
        // accept() has no timeout in std: a connection to ourselves wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            if t.join().is_err() {
                self.shared.thread_panicked.store(true, Ordering::SeqCst);
            }
        }
        if self.shared.thread_panicked.load(Ordering::SeqCst) && !thread::panicking() {
            panic!("a test server thread panicked (see its message above)");
        }
    }
}

/// How many of this process's OS threads have names starting with `prefix`, or `None` where
/// `/proc/self/task` is unavailable. Names are truncated by the OS to 15 bytes.
pub fn os_threads_with_prefix(prefix: &str) -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let count = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count();
    Some(count)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, server_id: u64) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if shared.is_shutdown() {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(_) => {
                // e.g. out of file descriptors: back off instead of spinning.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let conn_id = shared.connections.fetch_add(1, Ordering::SeqCst);
        reap_finished(&mut conns, &shared);
        let conn_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("ts{server_id}-c{conn_id}"))
            .spawn(move || serve_connection(stream, conn_id, conn_shared));
        match spawned {
            Ok(h) => conns.push(h),
            // The stream moved into the failed closure is dropped, closing the connection.
            Err(e) => eprintln!("test server: cannot spawn a connection thread: {e}"),
        }
    }
    for h in conns {
        if h.join().is_err() {
            shared.thread_panicked.store(true, Ordering::SeqCst);
        }
    }
}

/// Joins finished connection threads so a long test does not accumulate handles.
fn reap_finished(conns: &mut Vec<JoinHandle<()>>, shared: &Shared) {
    let mut i = 0;
    while i < conns.len() {
        if conns[i].is_finished() {
            if conns.swap_remove(i).join().is_err() {
                shared.thread_panicked.store(true, Ordering::SeqCst);
            }
        } else {
            i += 1;
        }
    }
}

/// What the connection should do after a reply.
enum After {
    KeepAlive,
    /// Finish sending, then close.
    Close,
    /// Drop the socket at once.
    Abort,
}

/// Why no request could be read.
enum ReadFail {
    /// EOF, a socket error, or shutdown: nothing to answer.
    Gone,
    /// Malformed or too large: answer with this status and close.
    Bad(u16),
}

struct Request {
    method: String,
    path: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    shared: Arc<Shared>,
    /// Bytes written on this connection so far.
    written: u64,
}

fn serve_connection(stream: TcpStream, conn_id: u64, shared: Arc<Shared>) {
    if stream.set_read_timeout(Some(POLL)).is_err() || stream.set_write_timeout(Some(POLL)).is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        shared,
        written: 0,
    };
    loop {
        let req = match conn.read_request() {
            Ok(req) => req,
            Err(ReadFail::Gone) => return,
            Err(ReadFail::Bad(status)) => {
                let _ = conn.write_head(status, &[], Some(0), true);
                let _ = conn.stream.shutdown(Shutdown::Write);
                return;
            }
        };
        let client_close = wants_close(&req);
        let is_head = req.method == "HEAD";
        let recorded = Recorded {
            method: req.method,
            path: req.path,
            headers: req.headers,
            body: req.body,
            at: Instant::now(),
            conn_id,
        };
        conn.shared.record(recorded.clone());
        let reply = (conn.shared.handler)(&recorded);
        let before = conn.written;
        let after = conn.respond(reply, client_close, is_head);
        conn.shared
            .answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((recorded.path, conn.written - before));
        match after {
            After::KeepAlive => {}
            After::Close => {
                let _ = conn.stream.shutdown(Shutdown::Write);
                return;
            }
            After::Abort => return,
        }
    }
}

fn wants_close(req: &Request) -> bool {
    let connection = req
        .headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    if connection.iter().any(|t| t == "close") {
        return true;
    }
    req.version == "HTTP/1.0" && !connection.iter().any(|t| t == "keep-alive")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    /// Reads more bytes into the buffer; false on EOF, socket error or shutdown.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.shared.is_shutdown() {
                return false;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if is_transient(&e) => {}
                Err(_) => return false,
            }
        }
    }

    /// Takes one CRLF-terminated line (without the CRLF) from the buffer.
    fn line(&mut self) -> Result<String, ReadFail> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadFail::Bad(431));
            }
            if !self.fill() {
                return Err(ReadFail::Gone);
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, ReadFail> {
        while self.buf.len() < n {
            if !self.fill() {
                return Err(ReadFail::Gone);
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_request(&mut self) -> Result<Request, ReadFail> {
        let head_end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadFail::Bad(431));
            }
            if !self.fill() {
                return Err(ReadFail::Gone);
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);

        let mut lines = head.split("\r\n");
        let mut parts = lines.next().unwrap_or("").split(' ');
        let (Some(method), Some(path), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ReadFail::Bad(400));
        };
        if method.is_empty() || !version.starts_with("HTTP/1.") {
            return Err(ReadFail::Bad(400));
        }
        let mut headers = Vec::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(ReadFail::Bad(400));
            };
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let chunked =
            get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let content_length = match get("content-length") {
            Some(v) => Some(v.parse::<usize>().map_err(|_| ReadFail::Bad(400))?),
            None => None,
        };
        if content_length.is_some_and(|n| n > MAX_BODY) {
            return Err(ReadFail::Bad(413));
        }
        if get("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|_| ReadFail::Gone)?;
        }
        let body = if chunked {
            self.read_chunked()?
        } else {
            self.take(content_length.unwrap_or(0))?
        };
        Ok(Request {
            method: method.to_string(),
            path: path.to_string(),
            version: version.to_string(),
            headers,
            body,
        })
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, ReadFail> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line()?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| ReadFail::Bad(400))?;
            if body.len() + size > MAX_BODY {
                return Err(ReadFail::Bad(413));
            }
            if size == 0 {
                // Trailer fields, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.take(size)?);
            if self.take(2)? != b"\r\n" {
                return Err(ReadFail::Bad(400));
            }
        }
    }

    /// Writes everything, waiting out write timeouts; fails on a socket error or shutdown.
    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.shared.is_shutdown() {
                return Err(ErrorKind::ConnectionAborted.into());
            }
            match self.stream.write(bytes) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n as u64;
                    bytes = &bytes[n..];
                }
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_head(
        &mut self,
        status: u16,
        headers: &[(String, String)],
        content_length: Option<usize>,
        close: bool,
    ) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if let Some(len) = content_length {
            if !has("content-length") && !bodiless(status) {
                head.push_str(&format!("Content-Length: {len}\r\n"));
            }
        }
        if close && !has("connection") {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        self.write_all(head.as_bytes())
    }

    fn respond(&mut self, reply: Reply, client_close: bool, is_head: bool) -> After {
        let done = |close: bool, r: io::Result<()>| match r {
            Ok(()) if close => After::Close,
            Ok(()) => After::KeepAlive,
            Err(_) => After::Abort,
        };
        let mut reply = reply;
        loop {
            match reply {
                Reply::Delay(d, inner) => {
                    if !self.shared.sleep(d) {
                        return After::Abort;
                    }
                    reply = *inner;
                }
                Reply::Status(status) => {
                    let r = self.write_head(status, &[], Some(0), client_close);
                    return done(client_close, r);
                }
                Reply::StatusBody(status, body) => {
                    let headers = [("Content-Type".to_string(), "text/plain".to_string())];
                    let r = self.write_with_body(
                        status,
                        &headers,
                        body.as_bytes(),
                        client_close,
                        is_head,
                    );
                    return done(client_close, r);
                }
                Reply::WithHeaders(status, headers, body) => {
                    let close = client_close
                        || headers.iter().any(|(n, v)| {
                            n.eq_ignore_ascii_case("connection")
                                && v.to_ascii_lowercase().contains("close")
                        });
                    let r = self.write_with_body(status, &headers, body.as_bytes(), close, is_head);
                    return done(close, r);
                }
                Reply::Hang => {
                    self.hang();
                    return After::Abort;
                }
                Reply::Reset => return After::Abort,
                Reply::Endless(status) => {
                    let headers = [(
                        "Content-Type".to_string(),
                        "application/octet-stream".to_string(),
                    )];
                    if self.write_head(status, &headers, None, true).is_ok() {
                        let chunk = [b'x'; STREAM_CHUNK];
                        while self.write_all(&chunk).is_ok() {}
                    }
                    return After::Abort;
                }
                Reply::Huge(status, len) => {
                    let mut r = self.write_head(status, &[], Some(len), client_close);
                    if !is_head && !bodiless(status) {
                        let chunk = [b'x'; STREAM_CHUNK];
                        let mut left = len;
                        while r.is_ok() && left > 0 {
                            let n = left.min(STREAM_CHUNK);
                            r = self.write_all(&chunk[..n]);
                            left -= n;
                        }
                    }
                    return done(client_close, r);
                }
            }
        }
    }

    fn write_with_body(
        &mut self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
        close: bool,
        is_head: bool,
    ) -> io::Result<()> {
        self.write_head(status, headers, Some(body.len()), close)?;
        if is_head || bodiless(status) {
            return Ok(());
        }
        self.write_all(body)
    }

    /// Holds the connection, discarding input, until the client closes it or shutdown.
    fn hang(&mut self) {
        let mut sink = [0u8; 4096];
        while !self.shared.is_shutdown() {
            match self.stream.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(_) => return,
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Statuses whose responses never carry a body (RFC 9110 §6.4.1).
fn bodiless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
