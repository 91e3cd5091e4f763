//! Fetching a file the fleet announced: the only module that knows the HTTP client (hyper 1's
//! HTTP/1.1 client connection, over tokio-rustls for https, with the system's roots or the
//! configured CA). `file:` paths are copied from shared storage.
//!
//! Every fetch is bounded: a connect timeout, a total deadline, and a size limit checked against
//! `Content-Length` before the body and again while it streams. The bytes go straight to `dest`
//! (never whole into memory), hashed on the way. No redirect is followed and no proxy used: the
//! announcement names the file's final address.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use sha2::{Digest, Sha256};

use crate::publish::payload::{scheme, Location};

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_bytes: u64,
    pub connect: Duration,
    /// From the start of the fetch to the last byte.
    pub total: Duration,
    /// PEM CA certificates to trust for https instead of the system's roots.
    pub ca: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {message}")]
    Failed { url: String, message: String },
    #[error("{url}: the file is over the {limit}-byte limit ({what})")]
    TooLarge { url: String, limit: u64, what: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Copies what `url` names into `dest` (created or truncated), within `limits`.
pub fn fetch_to(url: &str, dest: &Path, limits: &Limits) -> Result<Fetched, FetchError> {
    let failed = |message: String| FetchError::Failed { url: url.to_string(), message };
    let mut out = Sink::create(dest, url, limits.max_bytes)?;
    match scheme(url) {
        Some(Location::File(path)) => {
            let mut file = std::fs::File::open(path).map_err(|e| failed(e.to_string()))?;
            let len = file.metadata().map_err(|e| failed(e.to_string()))?.len();
            if len > limits.max_bytes {
                return Err(out.too_large(format!("{len} bytes")));
            }
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file.read(&mut buf).map_err(|e| failed(e.to_string()))?;
                if n == 0 {
                    break;
                }
                out.write(&buf[..n])?;
            }
        }
        Some(Location::Http(_)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| failed(e.to_string()))?;
            let got = runtime.block_on(async {
                tokio::time::timeout(limits.total, http_get(url, limits, &mut out)).await
            });
            match got {
                Ok(result) => result?,
                Err(_) => return Err(failed(format!("not fetched within {} s", limits.total.as_secs()))),
            }
        }
        None => return Err(failed("not an http://, https:// or file: address".into())),
    }
    out.finish()
}

/// The destination: written as it arrives, counted against the limit, hashed.
struct Sink {
    file: std::fs::File,
    path: PathBuf,
    url: String,
    limit: u64,
    bytes: u64,
    hash: Sha256,
}

impl Sink {
    fn create(path: &Path, url: &str, limit: u64) -> Result<Sink, FetchError> {
        let file =
            std::fs::File::create(path).map_err(|source| FetchError::Write { path: path.into(), source })?;
        Ok(Sink { file, path: path.into(), url: url.into(), limit, bytes: 0, hash: Sha256::new() })
    }
    fn too_large(&self, what: String) -> FetchError {
        FetchError::TooLarge { url: self.url.clone(), limit: self.limit, what }
    }
    fn write(&mut self, data: &[u8]) -> Result<(), FetchError> {
        self.bytes += data.len() as u64;
        if self.bytes > self.limit {
            return Err(self.too_large(format!("more than {} bytes arrived", self.limit)));
        }
        self.hash.update(data);
        self.file.write_all(data).map_err(|source| FetchError::Write { path: self.path.clone(), source })
    }
    fn finish(self) -> Result<Fetched, FetchError> {
        self.file.sync_all().map_err(|source| FetchError::Write { path: self.path.clone(), source })?;
        Ok(Fetched { bytes: self.bytes, sha256: self.hash.finalize().into() })
    }
}

/// Streams one GET into `out`. Only status 200 is accepted.
async fn http_get(url: &str, limits: &Limits, out: &mut Sink) -> Result<(), FetchError> {
    let failed = |message: String| FetchError::Failed { url: url.to_string(), message };
    let uri: hyper::Uri = url.parse().map_err(|e| failed(format!("bad address: {e}")))?;
    let tls = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or_else(|| failed("no host".into()))?.to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let connect = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port));
    let tcp = match tokio::time::timeout(limits.connect, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(failed(format!("cannot connect: {e}"))),
        Err(_) => return Err(failed(format!("no connection within {} s", limits.connect.as_secs()))),
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or(host.clone());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, concat!("lookd/", env!("CARGO_PKG_VERSION")))
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    if tls {
        let config = tls_config(limits.ca.as_deref()).map_err(failed)?;
        let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|e| failed(format!("bad host name: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| failed(format!("TLS: {e}")))?;
        exchange(hyper_util::rt::TokioIo::new(stream), request, url, out).await
    } else {
        exchange(hyper_util::rt::TokioIo::new(tcp), request, url, out).await
    }
}

async fn exchange<T>(
    io: T,
    request: hyper::Request<Empty<Bytes>>,
    url: &str,
    out: &mut Sink,
) -> Result<(), FetchError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let failed = |message: String| FetchError::Failed { url: url.to_string(), message };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| failed(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if status != hyper::StatusCode::OK {
        let hint = if status.is_redirection() {
            " (lookd follows no redirect: announce the final address)"
        } else {
            ""
        };
        driver.abort();
        return Err(failed(format!("HTTP {status}{hint}")));
    }
    let length = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = length.filter(|&n| n > out.limit) {
        driver.abort();
        return Err(out.too_large(format!("Content-Length {n}")));
    }
    let mut body = response.into_body();
    let started = Instant::now();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(format!("after {} bytes: {e}", out.bytes)))?;
        if let Some(data) = frame.data_ref() {
            out.write(data)?;
        }
    }
    if let Some(n) = length.filter(|&n| n != out.bytes) {
        return Err(failed(format!("Content-Length said {n} bytes, {} arrived", out.bytes)));
    }
    log::debug!("fetched {} bytes from {url} in {:.2} s", out.bytes, started.elapsed().as_secs_f64());
    driver.abort();
    Ok(())
}

/// rustls with the ring provider; the roots are `ca` (PEM) when given, else the system's.
fn tls_config(ca: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("CA file: {e}"))?;
                roots.add(cert).map_err(|e| format!("CA file: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate to trust (give [fleet] ca-file, or install ca-certificates)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    //! Each limit against a hostile server on 127.0.0.1, in a thread of the test; every fetch
    //! runs in a thread of its own and the test waits for it a bounded time, so a lost limit
    //! fails the test instead of hanging it.
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    /// Serves every connection with `answer` (the raw response, written by the closure).
    fn server(answer: impl Fn(&mut TcpStream) + Send + Sync + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/catalog.cache", listener.local_addr().unwrap());
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let answer = answer.clone();
                std::thread::spawn(move || {
                    read_request(&mut stream);
                    answer(&mut stream);
                });
            }
        });
        url
    }

    fn read_request(stream: &mut TcpStream) {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            seen.push(byte[0]);
        }
    }

    fn limits(max_bytes: u64, connect_s: u64, total_s: u64) -> Limits {
        Limits {
            max_bytes,
            connect: Duration::from_secs(connect_s),
            total: Duration::from_secs(total_s),
            ca: None,
        }
    }

    /// Fetches `url` in a thread; `None` when it has not returned within `wait`.
    fn fetch_within(
        url: &str,
        limits: Limits,
        wait: Duration,
    ) -> (Option<Result<Fetched, FetchError>>, u64, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("got");
        let (tx, rx) = mpsc::channel();
        let (url, path) = (url.to_string(), dest.clone());
        let started = Instant::now();
        std::thread::spawn(move || {
            let _ = tx.send(fetch_to(&url, &path, &limits));
        });
        let got = rx.recv_timeout(wait).ok();
        let elapsed = started.elapsed();
        let written = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        (got, written, elapsed)
    }

    #[test]
    fn a_body_without_length_that_never_ends_stops_at_the_size_limit() {
        let url = server(|s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = [7u8; 4096];
            while s.write_all(&chunk).is_ok() {}
        });
        let (got, written, elapsed) = fetch_within(&url, limits(256 * 1024, 5, 30), Duration::from_secs(20));
        match got {
            Some(Err(FetchError::TooLarge { what, .. })) => {
                assert!(what.contains("more than 262144"), "{what}")
            }
            other => panic!("expected the size limit while streaming, got {other:?} after {elapsed:?}"),
        }
        assert!(written <= 256 * 1024, "{written} bytes written past the limit");
        assert!(
            elapsed < Duration::from_secs(10),
            "{elapsed:?}: the total deadline, not the size, stopped it"
        );
    }

    #[test]
    fn a_server_trickling_one_byte_a_second_hits_the_total_deadline() {
        let url = server(|s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
            for _ in 0..1000 {
                if s.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let (got, _, elapsed) = fetch_within(&url, limits(1 << 20, 5, 2), Duration::from_secs(15));
        match got {
            Some(Err(FetchError::Failed { message, .. })) => {
                assert!(message.contains("not fetched within 2 s"), "{message}")
            }
            other => panic!("expected the total deadline, got {other:?} after {elapsed:?}"),
        }
        assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    }

    #[test]
    fn a_redirect_is_refused_not_followed() {
        let target = server(|s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nother");
        });
        let url = server(move |s| {
            let head = format!(
                "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nmoved"
            );
            let _ = s.write_all(head.as_bytes());
        });
        let (got, written, _) = fetch_within(&url, limits(1 << 20, 5, 10), Duration::from_secs(15));
        match got {
            Some(Err(FetchError::Failed { message, .. })) => {
                assert!(message.contains("302") && message.contains("no redirect"), "{message}")
            }
            other => panic!("expected the redirect refused, got {other:?}"),
        }
        assert_eq!(written, 0, "nothing of the redirect's body or its target is kept");
    }

    #[test]
    fn a_body_shorter_than_its_length_is_refused() {
        let url = server(|s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(&[1u8; 50]);
            let _ = s.shutdown(std::net::Shutdown::Both);
        });
        let (got, _, _) = fetch_within(&url, limits(1 << 20, 5, 10), Duration::from_secs(15));
        assert!(matches!(got, Some(Err(FetchError::Failed { .. }))), "{got:?}");
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_the_body() {
        let url = server(|s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n");
            let chunk = [7u8; 4096];
            while s.write_all(&chunk).is_ok() {}
        });
        let (got, written, _) = fetch_within(&url, limits(1 << 20, 5, 10), Duration::from_secs(15));
        match got {
            Some(Err(FetchError::TooLarge { what, .. })) => assert_eq!(what, "Content-Length 5000000"),
            other => panic!("expected Content-Length refused, got {other:?}"),
        }
        assert_eq!(written, 0);
    }

    #[test]
    fn a_server_that_answers_in_time_is_fetched_whole() {
        let url = server(|s| {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world");
        });
        let (got, written, _) = fetch_within(&url, limits(1 << 20, 5, 10), Duration::from_secs(15));
        let fetched = got.expect("returned").expect("fetched");
        assert_eq!((fetched.bytes, written), (11, 11));
        assert_eq!(fetched.sha256, <[u8; 32]>::from(Sha256::digest(b"hello world")));
    }

    /// A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs
    /// until its own timeout (as behind a firewall that drops packets).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_connection_that_never_completes_hits_the_connect_timeout() {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor this test owns; it becomes a TcpListener.
        let listener = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len), 0);
            assert_eq!(libc::listen(fd, 0), 0);
            TcpListener::from_raw_fd(fd)
        };
        let addr = listener.local_addr().unwrap();
        // Fill the queue (never accepted): with a backlog of 0 it holds one.
        let mut fillers = Vec::new();
        for _ in 0..3 {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                fillers.push(s);
            }
        }
        let url = format!("http://{addr}/catalog.cache");
        let (got, _, elapsed) = fetch_within(&url, limits(1 << 20, 1, 30), Duration::from_secs(20));
        match got {
            Some(Err(FetchError::Failed { message, .. })) => {
                assert!(message.contains("no connection within 1 s"), "{message}")
            }
            other => panic!("expected the connect timeout, got {other:?} after {elapsed:?}"),
        }
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        drop(listener);
    }
}
