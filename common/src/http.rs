//! The one HTTP server of a binary: `GET /metrics` (Prometheus text),
//! `GET /healthz` (200 while the process runs), `GET /ready` (200, or 503
//! with the reason, from a closure), and any JSON routes the binary adds
//! (the logic server's API), routed by method and path.
//!
//! Built on hyper 1.x (HTTP/1.1 only) with hyper-util, on a current-thread
//! tokio runtime in a thread of its own named `http`, so it never runs on a
//! worker or shard thread. Why hyper: it is the HTTP implementation most of
//! the Rust ecosystem stands on (axum, reqwest, tonic), released often and
//! fuzzed, and it has the limits a server facing other teams' code needs
//! (header read timeout, header size limit). tokio is already built for the
//! workspace's benches; hyper, hyper-util, http-body-util and matchit add
//! about 15 s of CPU to a clean release build (9 s of it hyper; `cargo
//! build --release --timings`). axum would add tower and its extractor
//! machinery for what is here a dozen routes with a bespoke error shape;
//! tiny_http is released rarely and has neither timeouts on a slow client
//! nor async handlers (an API call that waits for a shard and its fsync
//! would hold one thread per request). Paths are matched by `matchit`
//! (axum's router): `/v1/channels/{channel}/messages`.
//!
//! Handlers are async and must not block the runtime thread: hand work to
//! the binary's threads and await the answer (a `tokio::sync::oneshot`
//! sent from a std thread). Each request runs as its own task, so a
//! handler that panics answers 500 and the server goes on.
//!
//! Limits (all in [`Limits`]): at most `max_connections` at once (more
//! wait in the listen backlog); headers must arrive within
//! `header_timeout` (also how long an idle keep-alive connection is kept)
//! and fit `max_header_bytes` (else 431); the body must arrive within
//! `body_timeout` (else 408) and fit `max_body` (else 413); a handler has
//! `handler_timeout` (else 503); and a connection lives at most
//! `max_connection_age`, then finishes its request and closes, so a client
//! that stops reading cannot hold a slot for ever. Unknown paths are 404,
//! a known path with another method 405 with `Allow`; malformed HTTP gets
//! hyper's 400. All of this server's own errors use the JSON error body of
//! [`Response::error`].

mod message;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, oneshot};

use crate::metrics::{Format, Metrics};

pub use message::{Request, Response};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The address is taken or not ours (the operator's setting).
    #[error("binding the HTTP listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The runtime or its thread could not be started (internal).
    #[error("starting the HTTP server: {0}")]
    Start(std::io::Error),
    /// Two routes clash or a path pattern is malformed (a bug in the
    /// binary).
    #[error("internal: HTTP routes: {0}")]
    Route(String),
}

/// The server's limits; see the module doc.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body. Default 1 MiB.
    pub max_body: usize,
    /// Largest request head (request line and headers). Default 16 KiB.
    pub max_header_bytes: usize,
    /// Time for a request's head to arrive, and for an idle keep-alive
    /// connection to send its next one. Default 10 s.
    pub header_timeout: Duration,
    /// Time for a request's body to arrive. Default 10 s.
    pub body_timeout: Duration,
    /// Time for a handler to answer. Default 30 s.
    pub handler_timeout: Duration,
    /// Connections served at once. Default 256.
    pub max_connections: usize,
    /// Age at which a connection is closed after its current request.
    /// Default 5 minutes.
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            max_header_bytes: 16 << 10,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_connection_age: Duration::from_secs(300),
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Response> + Send>>;
type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;
type Render = Arc<dyn Fn(Format) -> Result<String, std::fmt::Error> + Send + Sync>;
type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The handlers of one path, by method.
#[derive(Default, Clone)]
struct Route {
    methods: Vec<(Method, Handler)>,
}

/// Builds a server: routes, `/metrics`, `/ready`, limits.
pub struct Builder {
    routes: BTreeMap<String, Route>,
    problems: Vec<String>,
    limits: Limits,
    metrics: Option<Render>,
    ready: Option<Check>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A server with `/healthz` and `/ready` (always ready until
    /// [`Builder::ready`] says otherwise).
    pub fn new() -> Builder {
        Builder {
            routes: BTreeMap::new(),
            problems: Vec::new(),
            limits: Limits::default(),
            metrics: None,
            ready: None,
        }
    }

    pub fn limits(mut self, limits: Limits) -> Builder {
        self.limits = limits;
        self
    }

    /// Serves `GET /metrics` from `metrics` (the format negotiated from
    /// `Accept`).
    pub fn metrics(self, metrics: Arc<Metrics>) -> Builder {
        self.metrics_fn(move |f| metrics.encode(f))
    }

    /// Serves `GET /metrics` from a closure that writes the exposition in
    /// the format asked for.
    pub fn metrics_fn(
        mut self,
        render: impl Fn(Format) -> Result<String, std::fmt::Error> + Send + Sync + 'static,
    ) -> Builder {
        self.metrics = Some(Arc::new(render));
        self
    }

    /// `GET /ready` answers 503 with the reason while `check` returns an
    /// error (gateway: the uplink is not linked; logic: the store is not
    /// reachable). It runs on the server's thread: keep it to reading
    /// state.
    pub fn ready(
        mut self,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Builder {
        self.ready = Some(Arc::new(check));
        self
    }

    /// Routes `method path` to `handler`. `path` may hold `{name}`
    /// segments, read with [`Request::param`].
    pub fn route<F, Fut>(mut self, method: Method, path: &str, handler: F) -> Builder
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let route = self.routes.entry(path.to_owned()).or_default();
        if route.methods.iter().any(|(m, _)| *m == method) {
            self.problems
                .push(format!("{method} {path} is routed twice"));
        }
        let h: Handler = Arc::new(move |req| Box::pin(handler(req)));
        route.methods.push((method, h));
        self
    }

    /// Binds `addr` and starts serving.
    pub fn bind(self, addr: SocketAddr) -> Result<Server, HttpError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
        self.serve(listener)
    }

    /// Serves on a listener the caller bound.
    pub fn serve(mut self, listener: TcpListener) -> Result<Server, HttpError> {
        let metrics = self.metrics.take();
        let ready = self.ready.take();
        self = self.route(Method::GET, "/healthz", |_| async {
            Response::text(StatusCode::OK, "ok\n")
        });
        self = self.route(Method::GET, "/ready", move |_| {
            let answer = match ready.as_ref().map_or(Ok(()), |c| c()) {
                Ok(()) => Response::text(StatusCode::OK, "ready\n"),
                Err(why) => Response::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            };
            async move { answer }
        });
        if let Some(render) = metrics {
            self = self.route(Method::GET, "/metrics", move |req| {
                let format = Format::from_accept(req.header(header::ACCEPT));
                let answer = match render(format) {
                    Ok(text) => Response::new(StatusCode::OK, format.content_type(), text),
                    Err(_) => Response::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the metrics could not be encoded",
                    ),
                };
                async move { answer }
            });
        }
        let mut router = matchit::Router::new();
        for (path, route) in std::mem::take(&mut self.routes) {
            if let Err(e) = router.insert(path.clone(), route) {
                self.problems.push(format!("{path}: {e}"));
            }
        }
        if !self.problems.is_empty() {
            return Err(HttpError::Route(self.problems.join("; ")));
        }
        let addr = listener.local_addr().map_err(HttpError::Start)?;
        listener.set_nonblocking(true).map_err(HttpError::Start)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(HttpError::Start)?;
        let listener = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(HttpError::Start)?
        };
        let state = Arc::new(State {
            router,
            limits: self.limits,
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || runtime.block_on(accept(listener, state, stopped)))
            .map_err(HttpError::Start)?;
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A running server. Dropping it (or [`Server::stop`]) stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// The bound address (the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drops every connection and joins the thread.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut();
    }
}

struct State {
    router: matchit::Router<Route>,
    limits: Limits,
}

/// Accepts until told to stop; the runtime's end then drops the
/// connections' tasks.
async fn accept(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    mut stop: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(state.limits.max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            _ = &mut stop => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            connection(stream, &state).await;
            drop(slot);
        });
    }
}

async fn connection(stream: tokio::net::TcpStream, state: &Arc<State>) {
    let _ = stream.set_nodelay(true);
    let limits = &state.limits;
    let service = {
        let state = state.clone();
        service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await.into_inner()) }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("http connection: {e}");
            }
        }
        _ = tokio::time::sleep(limits.max_connection_age) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.handler_timeout, conn).await;
        }
    }
}

/// Routes one request and runs its handler.
async fn handle(state: &State, req: hyper::Request<Incoming>) -> Response {
    let path = req.uri().path().to_owned();
    let Ok(found) = state.router.at(&path) else {
        return Response::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        );
    };
    let route = found.value;
    let params = found
        .params
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Some((_, handler)) = route.methods.iter().find(|(m, _)| m == req.method()) else {
        let allow: Vec<&str> = route.methods.iter().map(|(m, _)| m.as_str()).collect();
        return Response::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} {path}: allowed {}", req.method(), allow.join(", ")),
        )
        .with_header(header::ALLOW, &allow.join(", "));
    };
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts, body, &state.limits).await {
        Ok(b) => b,
        // The body is left unread: close rather than read on.
        Err(r) => return r.with_header(header::CONNECTION, "close"),
    };
    let task = tokio::spawn(handler(Request {
        parts,
        body,
        params,
    }));
    let abort = task.abort_handle();
    match tokio::time::timeout(state.limits.handler_timeout, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!("http handler for {path} failed: {e}");
            Response::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the handler failed",
            )
        }
        Err(_) => {
            abort.abort();
            Response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the server did not answer in time",
            )
        }
    }
}

/// The whole body, within the size and time limits.
async fn read_body(
    parts: &http::request::Parts,
    body: Incoming,
    limits: &Limits,
) -> Result<Bytes, Response> {
    let too_large = || {
        Response::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body exceeds {} bytes", limits.max_body),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(
        limits.body_timeout,
        Limited::new(body, limits.max_body).collect(),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(Response::error(StatusCode::BAD_REQUEST, "bad_body", e)),
        Err(_) => Err(Response::error(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the body did not arrive in time",
        )),
    }
}
