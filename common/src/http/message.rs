//! [`Request`] and [`Response`]: what a route handler takes and returns,
//! with the JSON helpers the API needs and the error body every 4xx/5xx
//! of this server uses: `{"error": {"code": str, "message": str}}`.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A request whose body has been read in full (within the size limit).
#[derive(Debug)]
pub struct Request {
    pub(super) parts: http::request::Parts,
    pub(super) body: Bytes,
    pub(super) params: Vec<(String, String)>,
}

impl Request {
    pub fn method(&self) -> &Method {
        &self.parts.method
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.parts.uri.path()
    }

    /// The query string (after `?`), undecoded.
    pub fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// A header's value, if present and visible ASCII.
    pub fn header(&self, name: HeaderName) -> Option<&str> {
        self.parts.headers.get(name)?.to_str().ok()
    }

    /// A path parameter: `channel` of a route `/v1/channels/{channel}`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as JSON, or a 400 `bad_json` response saying where it
    /// does not fit (`deny_unknown_fields` on `T` refuses unknown fields).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Response> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Response::error(StatusCode::BAD_REQUEST, "bad_json", e))
    }
}

/// A response with its whole body (boxed, so a `Result<T, Response>` stays
/// small).
#[derive(Debug)]
pub struct Response(pub(super) Box<http::Response<Full<Bytes>>>);

impl Response {
    /// A response of `content_type`.
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
        let mut r = http::Response::new(Full::new(body.into()));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Response(Box::new(r))
    }

    /// Plain UTF-8 text.
    pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// `value` as JSON (a value that does not serialise is a 500).
    pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status, "application/json", body),
            Err(e) => Response::error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
        }
    }

    /// `{"error": {"code": code, "message": message}}`: `code` is stable
    /// (clients branch on it), `message` is for people.
    pub fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
        let body = serde_json::json!({"error": {"code": code, "message": message.to_string()}});
        Response::new(status, "application/json", body.to_string())
    }

    /// Adds a header (a value that is not a valid header value is dropped).
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Response {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.0.headers_mut().insert(name, v);
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.0.headers()
    }

    /// The `http` response, for whoever needs more than these helpers.
    pub fn into_inner(self) -> http::Response<Full<Bytes>> {
        *self.0
    }
}
