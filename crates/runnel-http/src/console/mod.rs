//! The web console: one page of HTML, a hand-written script and a style sheet, embedded
//! in the binary and served on the HTTP port (`/`). No build step, no CDN: the script
//! renders every view from the JSON API under `/api/v1`, with `textContent` only, so
//! keys, values, headers and names from clients are always shown as text. The Content
//! Security Policy allows only this origin's script and styles, and
//! [`same_origin`] refuses state-changing requests sent from another origin.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// Only this origin's own resources: no inline script, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// Refuses a request that changes state (anything but GET, HEAD, OPTIONS) when a
/// browser says it comes from another origin: the `Origin` header must name the host
/// the request was sent to. Clients that send no `Origin` (curl, Kafka tools) are not
/// browsers acting for another site, and pass.
pub(crate) async fn same_origin(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        if origin_host.is_none() || origin_host != host {
            return crate::api::ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "requests that change state must come from this console's own origin",
            )
            .into_response();
        }
    }
    next.run(req).await
}
