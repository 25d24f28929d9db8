//! What the HTTP listener serves operators beside the WebSockets:
//! `/metrics` (Prometheus text), `/healthz` (the process is up), `/readyz`
//! (the bridge takes traffic) and the live page at `/` with its script and
//! style, compiled into the binary from `src/page/`.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::bridge::Shared;

const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_SCRIPT: &str = include_str!("page/live.js");
const PAGE_STYLE: &str = include_str!("page/live.css");

/// The page loads nothing from elsewhere and talks only to this listener.
/// No referrer: a token pre-filled from the address must not leak.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The answer for an operator's path, or `None` for any other path.
// LIMITATION: these paths need no credentials, so whoever reaches the HTTP
// listener reads the metrics (counts only, never a secret). And once
// shutdown begins the listener stops accepting: a new probe is refused, and
// only a request already accepted is answered 503.
pub fn answer<B>(request: &Request<B>, shared: &Shared) -> Option<Response<Full<Bytes>>> {
    let response = match request.uri().path() {
        "/metrics" => text(StatusCode::OK, METRICS_TYPE, shared.metrics.render()),
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n"),
        "/readyz" if shared.is_ready() => text(StatusCode::OK, PLAIN, "ready\n"),
        "/readyz" if shared.shutdown.is_cancelled() => {
            text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "shutting down\n")
        }
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "starting\n"),
        "/" => page(PAGE_HTML, "text/html; charset=utf-8"),
        "/live.js" => page(PAGE_SCRIPT, "text/javascript; charset=utf-8"),
        "/live.css" => page(PAGE_STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Some(text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD\n",
        ));
    }
    Some(response)
}

const PLAIN: &str = "text/plain; charset=utf-8";
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .expect("static headers are valid")
}

fn page(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::OK, content_type, body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
