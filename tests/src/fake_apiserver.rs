//! A loopback HTTP server standing in for the Kubernetes API server, which cannot run on
//! these machines (Debian 12 has no kube-apiserver; none is on PyPI or npm): it records
//! every request the observer's Kubernetes client sends and answers like the API server
//! (201 with the created Event, 200 with the patched one). Over plain HTTP on the host's
//! loopback, or over TLS on a listener the caller made (the DaemonSet test's, inside the
//! observer container's own network namespace).

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    thread,
};

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `POST`, `PATCH`, …
    pub method: String,
    /// Path (without the query).
    pub path: String,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// The JSON body (`Null` if none or not JSON).
    pub body: Value,
}

/// The fake API server; runs until the test process ends.
pub struct FakeApiServer {
    /// `http://127.0.0.1:port`.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApiServer {
    /// A kubeconfig pointing at it with bearer `token`, written to `path`: what the daemon's
    /// client reads through `KUBECONFIG`.
    pub fn write_kubeconfig(&self, path: &std::path::Path, token: &str) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n\
                 users:\n- name: u\n  user:\n    token: {token}\n\
                 contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
                self.url
            ),
        )
    }

    /// Starts it on a free loopback port (plain HTTP, for a client given its URL through
    /// KUBECONFIG).
    pub fn start() -> FakeApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        FakeApiServer::start_on(listener, None)
    }

    /// Serves on `listener`, over TLS with `tls` when given (what an in-cluster client
    /// needs: `https://KUBERNETES_SERVICE_HOST:PORT`, trusting the service account's
    /// `ca.crt`). The listener may come from another network namespace (a container's).
    pub fn start_on(
        listener: std::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> FakeApiServer {
        listener.set_nonblocking(true).unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let s = s.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| answer(req, s.clone()));
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            Some(tls) => {
                                // A failed handshake is a request never seen: the test
                                // then fails on what is missing.
                                if let Ok(stream) = tls.accept(stream).await {
                                    let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                                }
                            }
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    });
                }
            });
        });
        FakeApiServer { url, seen }
    }

    /// A TLS acceptor serving the PEM certificate chain `cert` with the PEM private key
    /// `key` (ring, the provider the observer's client uses too).
    pub fn tls_acceptor(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> tokio_rustls::TlsAcceptor {
        use tokio_rustls::rustls::{
            self,
            pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let (authorization, content_type) = (header("authorization"), header("content-type"));
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut all = seen.lock().unwrap();
    // The API server answers with the object: the created Event, or the last one patched.
    let (code, reply) = match method.as_str() {
        "POST" => (201, body.clone()),
        "PATCH" => {
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            let created = all
                .iter()
                .rev()
                .find(|s| s.method == "POST" && s.body["metadata"]["name"] == name.as_str())
                .map(|s| s.body.clone());
            match created {
                Some(mut e) => {
                    if let (Some(e), Some(p)) = (e.as_object_mut(), body.as_object()) {
                        for (k, v) in p {
                            e.insert(k.clone(), v.clone());
                        }
                    }
                    (200, e)
                }
                None => (
                    404,
                    serde_json::json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}),
                ),
            }
        }
        _ => (
            404,
            serde_json::json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}),
        ),
    };
    all.push(Seen {
        method,
        path,
        authorization,
        content_type,
        body,
    });
    let mut resp = Response::new(Full::new(Bytes::from(reply.to_string())));
    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
