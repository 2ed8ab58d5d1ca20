//! Tests of the test server itself, driven by ureq 3 and, where a client must stay mid-request
//! while the server shuts down, by raw sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::server::{Reply, Script, TestServer, by_path, handler, os_threads_with_prefix};

const WAIT: Duration = Duration::from_secs(5);

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<(u16, String), ureq::Error> {
    let mut resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)?;
    let status = resp.status().as_u16();
    Ok((status, resp.body_mut().read_to_string()?))
}

#[test]
fn server_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TestServer>();
    assert_send_sync::<Script>();
}

#[test]
fn keep_alive_carries_two_requests_on_one_connection() {
    let server = TestServer::start(|_| Reply::Status(200));
    let agent = agent(WAIT);
    assert_eq!(post(&agent, &server.url("/a"), "{\"n\":1}").unwrap().0, 200);
    assert_eq!(post(&agent, &server.url("b"), "{\"n\":2}").unwrap().0, 200);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(server.request_count(), 2);
    assert_eq!(reqs[0].conn_id, reqs[1].conn_id);
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/a");
    assert_eq!(reqs[1].path, "/b");
    assert_eq!(reqs[0].body, b"{\"n\":1}");
    assert_eq!(reqs[1].header("CONTENT-TYPE"), Some("application/json"));
    assert!(reqs[0].headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert!(reqs[0].at <= reqs[1].at);
}

#[test]
fn connection_close_is_honoured() {
    let server = TestServer::start(|_| Reply::Status(204));
    let agent = agent(WAIT);
    for _ in 0..2 {
        let resp = agent
            .post(server.url("/"))
            .header("Connection", "close")
            .send("x")
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204);
    }
    let reqs = server.requests();
    assert_ne!(reqs[0].conn_id, reqs[1].conn_id);
    assert_eq!(server.connections_accepted(), 2);
}

#[test]
fn script_fails_twice_then_repeats_success() {
    let script = Script::new(vec![
        Reply::Status(500),
        Reply::StatusBody(502, "bad gateway".into()),
        Reply::StatusBody(200, "ok".into()),
    ]);
    let server = TestServer::start(script.handler());
    let agent = agent(WAIT);
    let got: Vec<(u16, String)> = (0..4)
        .map(|_| post(&agent, &server.url("/hook"), "{}").unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            (500, String::new()),
            (502, "bad gateway".to_string()),
            (200, "ok".to_string()),
            (200, "ok".to_string()),
        ]
    );
    assert_eq!(script.served(), 4);
}

#[test]
fn with_headers_sends_them() {
    let server = TestServer::start(|_| {
        Reply::WithHeaders(503, vec![("Retry-After".into(), "7".into())], "busy".into())
    });
    let agent = agent(WAIT);
    let mut resp = agent.post(server.url("/")).send("{}").unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "7");
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "busy");
}

#[test]
fn routes_by_path_ignoring_the_query() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let server = TestServer::start(by_path(vec![
        ("/ok", handler(|_| Reply::Status(200))),
        (
            "/count",
            handler(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                Reply::Status(201)
            }),
        ),
    ]));
    let agent = agent(WAIT);
    assert_eq!(post(&agent, &server.url("/ok?x=1"), "").unwrap().0, 200);
    assert_eq!(post(&agent, &server.url("/count"), "").unwrap().0, 201);
    assert_eq!(post(&agent, &server.url("/nope"), "").unwrap().0, 404);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(server.requests()[0].path, "/ok?x=1");
}

#[test]
fn delay_answers_slowly() {
    let server = TestServer::start(|_| {
        Reply::Delay(
            Duration::from_millis(200),
            Box::new(Reply::StatusBody(200, "late".into())),
        )
    });
    let agent = agent(WAIT);
    let start = Instant::now();
    assert_eq!(
        post(&agent, &server.url("/"), "").unwrap(),
        (200, "late".to_string())
    );
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn hang_runs_into_the_client_timeout() {
    let server = TestServer::start(|_| Reply::Hang);
    let agent = agent(Duration::from_millis(300));
    let start = Instant::now();
    let err = post(&agent, &server.url("/"), "{}").unwrap_err();
    assert!(matches!(err, ureq::Error::Timeout(_)), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    // Recorded before the handler ran, so the hung request is visible.
    assert!(server.wait_for_requests(1, WAIT));
    let start = Instant::now();
    drop(server);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn reset_closes_without_an_answer() {
    let script = Script::new(vec![Reply::Reset, Reply::Status(200)]);
    let server = TestServer::start(script.handler());
    let agent = agent(WAIT);
    let err = post(&agent, &server.url("/"), "{}").unwrap_err();
    assert!(
        matches!(err, ureq::Error::Io(_) | ureq::Error::Protocol(_)),
        "{err:?}"
    );
    assert_eq!(post(&agent, &server.url("/"), "{}").unwrap().0, 200);
    assert_eq!(server.request_count(), 2);
    assert_eq!(server.connections_accepted(), 2);
}

#[test]
fn huge_body_arrives_whole_and_the_connection_is_reused() {
    const LEN: usize = 5 * 1024 * 1024 + 3;
    let script = Script::new(vec![Reply::Huge(200, LEN), Reply::Status(200)]);
    let server = TestServer::start(script.handler());
    let agent = agent(WAIT);
    let mut resp = agent.post(server.url("/")).send("{}").unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp
        .body_mut()
        .with_config()
        .limit(LEN as u64 + 1)
        .read_to_vec()
        .unwrap();
    assert_eq!(body.len(), LEN);
    assert!(body.iter().all(|&b| b == b'x'));
    assert_eq!(post(&agent, &server.url("/"), "").unwrap().0, 200);
    let reqs = server.requests();
    assert_eq!(reqs[0].conn_id, reqs[1].conn_id);
}

#[test]
fn endless_streams_until_the_client_stops() {
    let server = TestServer::start(|_| Reply::Endless(200));
    let agent = agent(WAIT);
    let mut resp = agent.post(server.url("/")).send("{}").unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("content-length").is_none());
    let mut got = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(1024 * 1024)
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got.len(), 1024 * 1024);
    // A bounded read limit turns the endless body into an error, as a sender's cap would.
    let mut resp = agent.post(server.url("/")).send("{}").unwrap();
    let err = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .unwrap_err();
    assert!(matches!(err, ureq::Error::BodyExceedsLimit(_)), "{err:?}");
}

#[test]
fn chunked_request_bodies_are_decoded() {
    let server = TestServer::start(|_| Reply::Status(200));
    let agent = agent(WAIT);
    let payload = b"{\"chunked\":true}".repeat(1000);
    let mut reader = std::io::Cursor::new(payload.clone());
    let resp = agent
        .post(server.url("/"))
        .send(ureq::SendBody::from_reader(&mut reader))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let req = &server.requests()[0];
    assert_eq!(req.header("transfer-encoding"), Some("chunked"));
    assert_eq!(req.body, payload);
}

#[test]
fn pipelined_requests_on_a_raw_socket() {
    let server = TestServer::start(|r| Reply::StatusBody(200, r.path.clone()));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(
        b"POST /one HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\
          POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.ends_with("/two"), "{out}");
    let reqs = server.requests();
    assert_eq!(reqs[0].body, b"abc");
    assert_eq!(reqs[1].path, "/two");
}

#[test]
fn malformed_request_gets_400() {
    let server = TestServer::start(|_| Reply::Status(200));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"garbage\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert_eq!(server.request_count(), 0);
}

#[test]
fn drop_ends_busy_connections_and_joins_every_thread() {
    let server = TestServer::start(by_path(vec![
        ("/hang", handler(|_| Reply::Hang)),
        ("/endless", handler(|_| Reply::Endless(200))),
        (
            "/slow",
            handler(|_| Reply::Delay(Duration::from_secs(3600), Box::new(Reply::Status(200)))),
        ),
        ("/ok", handler(|_| Reply::Status(200))),
    ]));
    let prefix = server.thread_prefix();
    // Raw clients that never close, so only shutdown can end the server's threads.
    let mut clients = Vec::new();
    for path in ["/hang", "/endless", "/slow", "/ok"] {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        clients.push(s);
    }
    assert!(server.wait_for_requests(4, WAIT));
    // The idle keep-alive connection has answered and waits for a next request.
    let mut ok = [0u8; 15];
    clients[3].set_read_timeout(Some(WAIT)).unwrap();
    clients[3].read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"HTTP/1.1 200 OK");

    if let Some(before) = os_threads_with_prefix(&prefix) {
        assert_eq!(before, 5, "accept thread plus four connection threads");
    }
    let start = Instant::now();
    drop(server);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    if os_threads_with_prefix(&prefix).is_some() {
        // join() returning is the proof; /proc may list an exiting thread for a moment longer.
        let deadline = Instant::now() + Duration::from_secs(2);
        while os_threads_with_prefix(&prefix) != Some(0) && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(os_threads_with_prefix(&prefix), Some(0));
    }
    drop(clients);
}

#[test]
#[should_panic(expected = "a test server thread panicked")]
fn a_panicking_handler_fails_the_test() {
    let server = TestServer::start(|_| panic!("handler bug"));
    let agent = agent(WAIT);
    assert!(post(&agent, &server.url("/"), "").is_err());
    drop(server);
}
