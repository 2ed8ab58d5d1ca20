//! A small HTTP/1.1 server for `hookpool listen`: one thread per connection,
//! keep-alive, bodies framed by `Content-Length`, the head parsed by
//! `httparse`.
//!
//! Why not tiny_http 0.12: its connection thread pool can queue a new
//! connection without waking a thread when several arrive at once, and that
//! connection then waits until another keep-alive connection closes (15 s with
//! ureq's defaults). `hookpool send` opens one connection per worker at once.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Interrupt;
use crate::run::TICK;

const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// Connections served at once; more are answered 503 and closed.
const MAX_CONNECTIONS: usize = 256;
/// An idle keep-alive connection is closed after this long.
const IDLE: Duration = Duration::from_secs(60);

/// One request, read in full.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Names in lowercase, values trimmed.
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    /// The first value of a header (name in lowercase), or "".
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The answer to one request.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn new(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// Serves until `stop` is set, then waits for every connection thread (each
/// notices within [`TICK`]). `max_body` larger bodies get 413.
pub(crate) fn serve<H>(
    listener: &TcpListener,
    stop: &Interrupt,
    max_body: usize,
    handler: &H,
) -> io::Result<()>
where
    H: Fn(Request) -> Response + Sync,
{
    listener.set_nonblocking(true)?;
    let active = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        while !stop.is_set() {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Out of file descriptors, say: back off instead of spinning.
                Err(_) => {
                    std::thread::sleep(TICK);
                    continue;
                }
            };
            if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                let mut stream = stream;
                let busy = Response::new(503, "too many connections\n").header("Retry-After", "1");
                let _ = stream.set_nonblocking(false);
                let _ = write_response(&mut stream, &busy, false);
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let active = &active;
            let spawned = std::thread::Builder::new()
                .name("listen-conn".into())
                .spawn_scoped(scope, move || {
                    let _ = connection(stream, stop, max_body, handler);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                active.fetch_sub(1, Ordering::SeqCst);
                eprintln!("hookpool: cannot start a connection thread: {e}");
            }
        }
    });
    Ok(())
}

/// Serves the requests of one connection until it closes, goes idle, or
/// `stop` is set.
fn connection<H>(
    stream: TcpStream,
    stop: &Interrupt,
    max_body: usize,
    handler: &H,
) -> io::Result<()>
where
    H: Fn(Request) -> Response,
{
    // Accepted sockets may inherit the listener's non-blocking mode.
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TICK))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        stop,
    };
    loop {
        let head_len = match conn.read_head()? {
            Some(n) => n,
            None => return Ok(()),
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = parsed.parse(&conn.buf[..head_len]) else {
            return conn.fail(400, "malformed request");
        };
        let method = parsed.method.unwrap_or_default().to_owned();
        let path = parsed.path.unwrap_or_default().to_owned();
        let http10 = parsed.version == Some(0);
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).trim().to_owned();
                (h.name.to_ascii_lowercase(), value)
            })
            .collect();
        conn.buf.drain(..head_len);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if get("transfer-encoding").is_some() {
            return conn.fail(411, "send the body with a Content-Length");
        }
        let length = match get("content-length").map(str::parse::<usize>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return conn.fail(400, "bad Content-Length"),
        };
        if length > max_body {
            return conn.fail(413, "body too large");
        }
        if get("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
            conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        if !conn.fill_to(length)? {
            return Ok(());
        }
        let body: Vec<u8> = conn.buf.drain(..length).collect();
        let connection = get("connection").unwrap_or("").to_ascii_lowercase();
        let keep_alive = !stop.is_set()
            && if http10 {
                connection.contains("keep-alive")
            } else {
                !connection.contains("close")
            };
        let response = handler(Request {
            method,
            path,
            headers,
            body,
        });
        write_response(&mut conn.stream, &response, keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    stop: &'a Interrupt,
}

impl Conn<'_> {
    /// Reads until the buffer holds a whole head; returns its length, or
    /// `None` when the connection ends, idles out or `stop` is set.
    fn read_head(&mut self) -> io::Result<Option<usize>> {
        let started = Instant::now();
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(i + 4));
            }
            if self.buf.len() > MAX_HEAD {
                self.fail(431, "request head too large")?;
                return Ok(None);
            }
            if !self.read_more(started)? {
                return Ok(None);
            }
        }
    }

    /// Reads until the buffer holds `n` bytes; false if the connection ends first.
    fn fill_to(&mut self, n: usize) -> io::Result<bool> {
        let started = Instant::now();
        while self.buf.len() < n {
            if !self.read_more(started)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One read; false on EOF, on `stop`, or after [`IDLE`] without data.
    fn read_more(&mut self, since: Instant) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.stop.is_set() || since.elapsed() > IDLE {
                return Ok(false);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Answers a request that cannot be served, and closes.
    fn fail(&mut self, status: u16, why: &str) -> io::Result<()> {
        write_response(
            &mut self.stream,
            &Response::new(status, format!("{why}\n")),
            false,
        )
    }
}

fn write_response(stream: &mut TcpStream, response: &Response, keep_alive: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        response.status,
        reason(response.status),
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&response.body);
    stream.write_all(head.as_bytes())?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}
