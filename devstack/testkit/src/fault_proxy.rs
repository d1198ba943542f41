//! A fault-injecting HTTP proxy in front of moto: a share of the requests is answered with
//! HTTP 503 in the protocol's own error shape (JSON for SQS, DynamoDB and SES v2, XML for S3)
//! without reaching moto; the rest is forwarded unchanged. Point a client's endpoint at
//! [`FaultProxy::url`] to make every AWS service it uses fail now and then.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

struct Shared {
    upstream: String,
    rate: f64,
    injected: AtomicU64,
    forwarded: AtomicU64,
    client: Client<HttpConnector, Body>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxies to `upstream` (e.g. moto's URL), failing each request with probability `rate`.
    pub async fn start(upstream: &str, rate: f64) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            rate,
            injected: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let app = axum::Router::new()
            .fallback(proxy)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { url, shared, task }
    }

    /// Requests answered with an injected failure so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::Relaxed)
    }

    /// Requests passed on to the upstream so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }
}

async fn proxy(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if fastrand::f64() < shared.rate {
        shared.injected.fetch_add(1, Ordering::Relaxed);
        return injected_failure(&request);
    }
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match format!("{}{path}", shared.upstream).parse::<Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            return (StatusCode::BAD_GATEWAY, format!("bad upstream URI: {e}")).into_response();
        }
    };
    match shared
        .client
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response.map(Body::new).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("upstream failed: {e}")).into_response(),
    }
}

/// HTTP 503 in the shape the service's SDK client parses.
fn injected_failure(request: &Request) -> Response {
    let json =
        request.headers().contains_key("x-amz-target") || request.uri().path().starts_with("/v2/");
    let (content_type, body) = if json {
        (
            "application/x-amz-json-1.0",
            Bytes::from_static(
                br#"{"__type":"ServiceUnavailable","message":"injected by the fault proxy"}"#,
            ),
        )
    } else {
        (
            "application/xml",
            Bytes::from_static(
                b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>injected by the fault proxy</Message></Error>",
            ),
        )
    };
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static("ServiceUnavailable"),
    );
    response
}
