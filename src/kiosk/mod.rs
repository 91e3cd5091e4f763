//! The kiosk screen's HTTP listener (`[kiosk] listen`): the only module that knows axum, hyper
//! and tokio. It serves the page and its static files (compiled into the binary), the vendored
//! MQTT client, the page's settings, and each product's image and catalog fields by id only
//! (`table` decides what an id may be). The page itself talks MQTT over WebSocket to the broker;
//! this listener carries no recommendation.
//!
//! Hostile requests: hyper reads at most 16 KiB of request head (431 beyond), waits at most
//! 10 s for it, and at most 64 connections are served at once; only GET and HEAD are routed.

pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub use table::{Lookup, PageSettings, ProductTable};

const INDEX: &str = include_str!("static/index.html");
const SCRIPT: &str = include_str!("static/kiosk.js");
const STYLE: &str = include_str!("static/kiosk.css");
/// MQTT.js's browser bundle, pinned: see static/vendor/README.md.
pub const MQTT_JS: &[u8] = include_bytes!("static/vendor/mqtt.min.js");
const MQTT_JS_LICENSE: &str = include_str!("static/vendor/mqtt.LICENSE.md");

const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 64;
/// The page's files may change with an upgrade: the browser asks again each time.
const REVALIDATE: &str = "no-cache";
/// Product images change only with the catalog; their ETag is the image's sha256.
const IMAGE_CACHE: &str = "public, max-age=3600";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Debug, thiserror::Error)]
pub enum KioskError {
    #[error("kiosk: cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("kiosk: {0}")]
    Start(String),
}

/// The product table the listener serves from, replaced whole when a new catalog comes in.
pub type SharedTable = Arc<std::sync::RwLock<ProductTable>>;

/// What the listener serves.
pub struct Site {
    pub products: SharedTable,
    pub page: PageSettings,
    /// `GET /metrics` (`[metrics] enabled`): the text and its content type, made at each request.
    pub metrics: Option<Metrics>,
}

/// What `GET /metrics` answers: the exposition text, and its content type.
pub type Metrics = (std::sync::Arc<dyn Fn() -> String + Send + Sync>, &'static str);

/// Binds `listen` (failing here, clearly, if it cannot) and serves `site` from a thread of its
/// own. Returns the bound address.
pub fn start(listen: &str, site: Site) -> Result<SocketAddr, KioskError> {
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|source| KioskError::Listen { addr: listen.to_string(), source })?;
    let addr = listener.local_addr().map_err(|e| KioskError::Start(e.to_string()))?;
    listener.set_nonblocking(true).map_err(|e| KioskError::Start(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| KioskError::Start(e.to_string()))?;
    let app = router(Arc::new(site));
    std::thread::Builder::new()
        .name("kiosk".into())
        .spawn(move || runtime.block_on(serve(listener, app)))
        .map_err(|e| KioskError::Start(e.to_string()))?;
    Ok(addr)
}

async fn serve(listener: std::net::TcpListener, app: Router) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("kiosk: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait, do not spin.
                log::warn!("kiosk: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            log::warn!("kiosk: {MAX_CONNECTIONS} connections open; refusing {peer}");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                log::debug!("kiosk: {peer}: {e}");
            }
        });
    }
}

fn router(site: Arc<Site>) -> Router {
    Router::new()
        .route("/", get(|| async { page(INDEX, "text/html; charset=utf-8") }))
        .route("/kiosk.js", get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/kiosk.css", get(|| async { page(STYLE, "text/css; charset=utf-8") }))
        .route("/vendor/mqtt.min.js", get(|| async { file(MQTT_JS, "text/javascript; charset=utf-8") }))
        .route(
            "/vendor/mqtt.LICENSE.md",
            get(|| async { page(MQTT_JS_LICENSE, "text/plain; charset=utf-8") }),
        )
        .route("/kiosk.json", get(settings))
        // The page has no icon; a browser that asks gets an empty answer, not an error.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/metrics", get(metrics))
        .route("/products/:id", get(product))
        .route("/images/:id", get(image))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "not found".into()) })
        .with_state(site)
}

fn common(headers: &mut HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    file(body.as_bytes(), content_type)
}

fn file(body: &'static [u8], content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    common(h);
    r
}

fn refuse(status: StatusCode, why: String) -> Response {
    let mut r = (status, format!("{why}\n")).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    common(r.headers_mut());
    r
}

/// The product `id` names (a copy: the table may be replaced meanwhile), or the refusal to send.
fn looked_up(site: &Site, id: &str) -> Result<table::Product, Box<Response>> {
    let products = site.products.read().unwrap_or_else(|e| e.into_inner());
    match products.lookup(id) {
        Lookup::Found(p) => Ok(p.clone()),
        Lookup::BadId(why) => {
            Err(Box::new(refuse(StatusCode::BAD_REQUEST, format!("not a product id: {why}"))))
        }
        Lookup::Unknown => Err(Box::new(refuse(StatusCode::NOT_FOUND, "no such product".into()))),
    }
}

fn json(body: impl serde::Serialize, cache: &'static str) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    common(r.headers_mut());
    r
}

async fn metrics(State(site): State<Arc<Site>>) -> Response {
    let Some((text, content_type)) = &site.metrics else { return StatusCode::NOT_FOUND.into_response() };
    let mut r = text().into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    common(h);
    r
}

async fn settings(State(site): State<Arc<Site>>) -> Response {
    json(&site.page, "no-store")
}

async fn product(State(site): State<Arc<Site>>, Path(id): Path<String>) -> Response {
    let p = match looked_up(&site, &id) {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    let body = serde_json::json!({
        "id": p.id, "category": p.category, "fields": p.fields, "image": format!("/images/{}", p.id),
    });
    json(body, IMAGE_CACHE)
}

async fn image(State(site): State<Arc<Site>>, Path(id): Path<String>, request: HeaderMap) -> Response {
    let p = match looked_up(&site, &id) {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    let etag = HeaderValue::from_str(&p.etag).ok();
    let cached = |h: &mut HeaderMap| {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMAGE_CACHE));
        if let Some(e) = &etag {
            h.insert(header::ETAG, e.clone());
        }
        common(h);
    };
    if etag.is_some() && request.get(header::IF_NONE_MATCH) == etag.as_ref() {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        cached(r.headers_mut());
        return r;
    }
    let path = p.image.clone();
    let read = tokio::task::spawn_blocking(move || std::fs::read(&path)).await;
    match read {
        Ok(Ok(bytes)) => {
            let mut r = bytes.into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(p.content_type));
            cached(r.headers_mut());
            r
        }
        Ok(Err(e)) => {
            log::warn!("kiosk: image of {}: {}: {e}", p.id, p.image.display());
            refuse(StatusCode::NOT_FOUND, "the product's image is missing".into())
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the image: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    #[test]
    fn the_vendored_client_is_the_pinned_one() {
        let sum = sha2::Sha256::digest(super::MQTT_JS);
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "f3cbeae580d3010048938ee370f2db0c15d16e6f7fc147cb32ae5510e571b387");
        let readme = include_str!("static/vendor/README.md");
        assert!(readme.contains(&hex), "static/vendor/README.md does not record {hex}");
    }
}
