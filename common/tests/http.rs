//! The HTTP server driven by a real client (ureq) and, for what a client
//! library will not send (a stalled head, a stalled body, an oversized
//! chunked body), by raw sockets. Every server binds 127.0.0.1:0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::http::{Builder, HttpError, Limits, Request, Response, Server};
use common::metrics::{Buckets, LocalCounter, LocalHistogram, Metrics, PerThread};
use http::{Method, StatusCode};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn url(s: &Server, path: &str) -> String {
    format!("http://{}{path}", s.local_addr())
}

struct Got {
    status: u16,
    content_type: String,
    body: String,
}

fn get(s: &Server, path: &str, accept: Option<&str>) -> Got {
    let mut req = agent().get(&url(s, path));
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    into_got(req.call().expect("a response"))
}

fn post(s: &Server, path: &str, body: &str) -> Got {
    let r = agent()
        .post(&url(s, path))
        .header("Content-Type", "application/json")
        .send(body)
        .expect("a response");
    into_got(r)
}

fn into_got(mut r: http::Response<ureq::Body>) -> Got {
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Got {
        status: r.status().as_u16(),
        content_type,
        body: r.body_mut().read_to_string().expect("a body"),
    }
}

/// The error code of a JSON error body.
fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    v["error"]["code"].as_str().expect("a code").to_owned()
}

/// Sends `bytes` on a raw connection and reads until the server closes it
/// (or 10 s pass); what came back, and how long it took.
fn raw(addr: SocketAddr, bytes: &[u8]) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let t = Instant::now();
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Echo {
    text: String,
}

fn api(limits: Limits) -> Server {
    Builder::new()
        .limits(limits)
        .route(Method::POST, "/v1/echo/{id}", |req: Request| async move {
            match req.json::<Echo>() {
                Ok(e) => Response::json(
                    StatusCode::OK,
                    &serde_json::json!({"id": req.param("id"), "text": e.text}),
                ),
                Err(r) => r,
            }
        })
        .route(Method::GET, "/v1/echo/{id}", |req: Request| async move {
            Response::text(
                StatusCode::OK,
                format!("{}\n", req.param("id").unwrap_or("")),
            )
        })
        .route(Method::GET, "/panic", |_| async { panic!("a handler bug") })
        .route(Method::GET, "/slow", |_| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Response::text(StatusCode::OK, "late\n")
        })
        .bind(loopback())
        .expect("binds")
}

fn short_limits() -> Limits {
    Limits {
        max_body: 64,
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        handler_timeout: Duration::from_millis(500),
        ..Limits::default()
    }
}

#[test]
fn healthz_and_ready_follow_the_check() {
    let linked = Arc::new(AtomicBool::new(false));
    let check = linked.clone();
    let s = Builder::new()
        .ready(move || {
            if check.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("the uplink is not linked".into())
            }
        })
        .bind(loopback())
        .expect("binds");
    assert_eq!(get(&s, "/healthz", None).status, 200);
    let r = get(&s, "/ready", None);
    assert_eq!(r.status, 503);
    assert!(r.body.contains("the uplink is not linked"), "{}", r.body);
    linked.store(true, Ordering::Relaxed);
    assert_eq!(get(&s, "/ready", None).status, 200);
    // No metrics given: no /metrics.
    assert_eq!(get(&s, "/metrics", None).status, 404);
}

#[test]
fn json_routes_with_path_parameters() {
    let s = api(Limits::default());
    let r = post(&s, "/v1/echo/42", r#"{"text": "hi"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(v, serde_json::json!({"id": "42", "text": "hi"}));
    assert_eq!(get(&s, "/v1/echo/7", None).body, "7\n");
    for bad in [r#"{"text": "#, r#"{"text": "hi", "more": 1}"#, "[]"] {
        let r = post(&s, "/v1/echo/1", bad);
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(code(&r.body), "bad_json");
    }
    let r = get(&s, "/v2/nothing", None);
    assert_eq!((r.status, code(&r.body)), (404, "not_found".into()));
    let r = agent()
        .delete(&url(&s, "/v1/echo/1"))
        .call()
        .expect("a response");
    assert_eq!(r.status().as_u16(), 405);
    let allow = r.headers().get("allow").and_then(|v| v.to_str().ok());
    assert_eq!(allow, Some("POST, GET"));
}

#[test]
fn a_panicking_or_stuck_handler_gets_5xx_and_the_server_goes_on() {
    let s = api(short_limits());
    let r = get(&s, "/panic", None);
    assert_eq!((r.status, code(&r.body)), (500, "internal".into()));
    let t = Instant::now();
    let r = get(&s, "/slow", None);
    assert_eq!((r.status, code(&r.body)), (503, "timeout".into()));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(get(&s, "/v1/echo/1", None).status, 200);
}

#[test]
fn oversized_bodies_and_heads_are_refused() {
    let s = api(short_limits());
    let r = post(
        &s,
        "/v1/echo/1",
        &format!(r#"{{"text": "{}"}}"#, "x".repeat(100)),
    );
    assert_eq!((r.status, code(&r.body)), (413, "too_large".into()));
    // Chunked, so no Content-Length announces it: the limit still holds.
    let chunk = "y".repeat(100);
    let req = format!(
        "POST /v1/echo/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let (answer, _) = raw(s.local_addr(), req.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "z".repeat(32 << 10)
    );
    let (answer, _) = raw(s.local_addr(), big.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let (answer, _) = raw(s.local_addr(), b"NOT HTTP AT ALL\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(get(&s, "/healthz", None).status, 200);
}

#[test]
fn a_slow_client_times_out_and_others_are_served_meanwhile() {
    let s = api(short_limits());
    let addr = s.local_addr();
    // Half a request line, then nothing: closed at the header timeout.
    let head = std::thread::spawn(move || raw(addr, b"GET /healthz HTTP/1.1\r\nHost:"));
    // The whole head, half the body: 408 at the body timeout.
    let body = std::thread::spawn(move || {
        raw(
            addr,
            b"POST /v1/echo/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"text\":",
        )
    });
    assert_eq!(get(&s, "/healthz", None).status, 200);
    let (answer, took) = head.join().expect("head client");
    assert!(answer.is_empty(), "closed without an answer: {answer}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let (answer, took) = body.join().expect("body client");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // An idle keep-alive connection is closed at the header timeout too.
    let (answer, took) = raw(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn a_full_server_serves_the_next_client_once_a_slot_frees() {
    let s = Builder::new()
        .limits(Limits {
            max_connections: 1,
            ..short_limits()
        })
        .bind(loopback())
        .expect("binds");
    // Holds the only slot until the header timeout closes it.
    let mut idle = TcpStream::connect(s.local_addr()).expect("connect");
    idle.write_all(b"GET").expect("write");
    let t = Instant::now();
    assert_eq!(get(&s, "/healthz", None).status, 200);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "served at once: no limit? {waited:?}"
    );
}

#[test]
fn bind_failures_and_bad_routes_are_typed_errors() {
    let taken = std::net::TcpListener::bind(loopback()).expect("bind");
    let addr = taken.local_addr().expect("addr");
    match Builder::new().bind(addr) {
        Err(e @ HttpError::Bind { .. }) => {
            assert!(e.to_string().contains(&addr.to_string()), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let twice = Builder::new()
        .route(Method::GET, "/healthz", |_| async {
            Response::text(StatusCode::OK, "")
        })
        .bind(loopback());
    assert!(matches!(twice, Err(HttpError::Route(_))), "{twice:?}");
    let clash = Builder::new()
        .route(Method::GET, "/a/{x}", |_| async {
            Response::text(StatusCode::OK, "")
        })
        .route(Method::GET, "/a/{y}", |_| async {
            Response::text(StatusCode::OK, "")
        })
        .bind(loopback());
    assert!(matches!(clash, Err(HttpError::Route(_))), "{clash:?}");
}

#[test]
fn stop_closes_the_listener() {
    let s = Builder::new().bind(loopback()).expect("binds");
    let addr = s.local_addr();
    assert_eq!(get(&s, "/healthz", None).status, 200);
    s.stop();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after stop"
    );
}

/// Stats shaped like a gateway worker's.
#[repr(align(128))]
struct Worker {
    accepted: LocalCounter,
    open: LocalCounter,
    closes: [LocalCounter; 3],
    latency: LocalHistogram,
}

fn served_metrics() -> (Server, Arc<Worker>) {
    let buckets = Buckets::exponential(50, 2.0, 16, 1_000_000);
    let worker = Arc::new(Worker {
        accepted: LocalCounter::default(),
        open: LocalCounter::default(),
        closes: Default::default(),
        latency: LocalHistogram::new(&buckets),
    });
    let mut m = Metrics::new("gateway");
    m.registry().register_collector(Box::new(
        PerThread::new(vec![worker.clone()])
            .counter("accepted", "Connections accepted.", |w| w.accepted.get())
            .gauge("connections_open", "Client connections held.", |w| {
                w.open.get()
            })
            .gauge_by_thread(
                "worker_connections_open",
                "Client connections held, by worker thread.",
                "worker",
                |w| w.open.get(),
            )
            .counter_by(
                "closes",
                "Connections closed by reason.",
                "reason",
                ["client_eof", "idle_timeout", "drain"],
                |w, i| w.closes[i].get(),
            )
            .histogram(
                "send_ack_seconds",
                "Time from a SEND to its SEND_ACK.",
                &buckets,
                |w| &w.latency,
            ),
    ));
    // A library metric next to the collector, as the uplink would register.
    let linked: prometheus_client::metrics::gauge::Gauge = Default::default();
    linked.set(1);
    m.registry().register(
        "uplink_connected",
        "1 while the logic server is linked.",
        linked,
    );
    worker.accepted.add(3);
    worker.open.inc();
    worker.closes[1].inc();
    worker.latency.observe(120);
    worker.latency.observe(9_000);
    let s = Builder::new()
        .metrics(Arc::new(m))
        .bind(loopback())
        .expect("binds");
    (s, worker)
}

#[test]
fn metrics_are_negotiated_and_read_at_scrape_time() {
    let (s, worker) = served_metrics();
    let r = get(&s, "/metrics", None);
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        r.content_type
    );
    assert!(
        r.body.contains("\nmillgate_gateway_accepted_total 3\n"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("millgate_gateway_closes_total{reason=\"idle_timeout\"} 1\n")
    );
    assert!(
        r.body
            .contains("millgate_gateway_send_ack_seconds_count 2\n")
    );
    assert!(r.body.contains("\nmillgate_gateway_uplink_connected 1\n"));
    assert!(
        r.body
            .contains("\nmillgate_gateway_worker_connections_open{worker=\"0\"} 1\n")
    );
    assert!(r.body.contains("\nprocess_resident_memory_bytes "));
    worker.accepted.inc();
    let r = get(
        &s,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,*/*;q=0.1"),
    );
    assert!(
        r.content_type.starts_with("application/openmetrics-text"),
        "{}",
        r.content_type
    );
    assert!(
        r.body.contains("\nmillgate_gateway_accepted_total 4\n"),
        "{}",
        r.body
    );
    assert!(r.body.ends_with("# EOF\n"));
}

#[test]
fn promtool_accepts_what_the_endpoint_serves() {
    let Ok(out) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        // CI installs promtool (.ci/run); there its absence is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed"
        );
        eprintln!("promtool not installed: skipped");
        return;
    };
    assert!(out.status.success());
    let (s, _worker) = served_metrics();
    let text = get(&s, "/metrics", None).body;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool exits");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{text}");
    assert!(said.trim().is_empty(), "promtool lint: {said}");
}
