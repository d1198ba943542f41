//! A fault-injecting HTTP proxy in front of moto. Three kinds of fault, each with its own
//! probability ([`Faults`]):
//! - *failed*: answered with HTTP 503 in the protocol's own error shape (JSON for SQS,
//!   DynamoDB and SES v2, XML for S3) without reaching moto;
//! - *lost*: forwarded, the write done, and then answered with that 503 anyway, as when a
//!   response is lost on the way back and the client cannot know the write happened;
//! - *dropped*: forwarded, then the connection is cut in the middle of the response;
//! - *unanswered* (only the first request of named operations, [`Faults::hang_first`]):
//!   forwarded, the work done, and then no answer at all on an open connection, as from a
//!   service or a network path that hangs.
//!
//! Faults can be limited to some operations (`DynamoDB_20120810.TransactWriteItems`'s
//! `TransactWriteItems`, S3's `CompleteMultipartUpload`, …: [`operation`] names them). Point a
//! client's endpoint at [`FaultProxy::url`] to make every AWS service it uses fail now and then.
//!
//! The proxy also keeps the headers of every request it forwards ([`FaultProxy::forwarded_of`])
//! and how many requests of an operation were in flight at once, answers included
//! ([`FaultProxy::max_in_flight`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// What the proxy does to the requests it sees.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Probability of failing a request before it reaches the upstream.
    pub fail: f64,
    /// Probability of losing the response of a request the upstream carried out.
    pub lose: f64,
    /// Probability of cutting the connection while the upstream's response is relayed.
    pub drop: f64,
    /// Operations the faults apply to; empty: every operation.
    pub only: Vec<String>,
    /// Operations whose first request always loses its response, so that a test exercises
    /// each of them whatever the dice say.
    pub lose_first: Vec<String>,
    /// Operations whose first request always fails before reaching the upstream, for the
    /// same reason.
    pub fail_first: Vec<String>,
    /// Operations whose first request is carried out and then never answered: the connection
    /// stays open and silent until the client gives up on it.
    pub hang_first: Vec<String>,
}

struct Shared {
    upstream: String,
    faults: Faults,
    injected: AtomicU64,
    /// Injected failures by operation.
    injected_by_operation: Mutex<HashMap<String, u64>>,
    forwarded: AtomicU64,
    /// Lost and dropped responses by operation.
    lost: Mutex<HashMap<String, u64>>,
    /// Operations of `lose_first` seen so far.
    seen: Mutex<std::collections::HashSet<String>>,
    /// Operations of `fail_first` seen so far.
    seen_failing: Mutex<std::collections::HashSet<String>>,
    /// Operations of `hang_first` seen so far.
    seen_hanging: Mutex<std::collections::HashSet<String>>,
    /// Requests left unanswered, by operation.
    unanswered: Mutex<HashMap<String, u64>>,
    /// The operation and headers of every forwarded request.
    log: Mutex<Vec<(String, HeaderMap)>>,
    /// Requests in flight by operation (until their answer is relayed), and the most at once.
    in_flight: Mutex<HashMap<String, (u64, u64)>>,
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
    /// Proxies to `upstream` with the given faults.
    pub async fn start_with(upstream: &str, faults: Faults) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            faults,
            injected: AtomicU64::new(0),
            injected_by_operation: Mutex::new(HashMap::new()),
            forwarded: AtomicU64::new(0),
            lost: Mutex::new(HashMap::new()),
            seen: Mutex::new(std::collections::HashSet::new()),
            seen_failing: Mutex::new(std::collections::HashSet::new()),
            seen_hanging: Mutex::new(std::collections::HashSet::new()),
            unanswered: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            in_flight: Mutex::new(HashMap::new()),
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

    /// Injected failures so far, by operation.
    pub fn injected_by_operation(&self) -> HashMap<String, u64> {
        self.shared
            .injected_by_operation
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Requests passed on to the upstream so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// The headers of the forwarded requests of `operation`, in the order they came.
    pub fn forwarded_of(&self, operation: &str) -> Vec<HeaderMap> {
        self.shared
            .log
            .lock()
            .map(|log| {
                log.iter()
                    .filter(|(op, _)| op == operation)
                    .map(|(_, headers)| headers.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The most requests of `operation` in flight at once, each from its arrival until its
    /// answer was relayed whole.
    pub fn max_in_flight(&self, operation: &str) -> u64 {
        self.shared
            .in_flight
            .lock()
            .map(|m| m.get(operation).map_or(0, |&(_, max)| max))
            .unwrap_or(0)
    }

    /// Requests carried out and left unanswered ([`Faults::hang_first`]), by operation.
    pub fn unanswered(&self) -> HashMap<String, u64> {
        self.shared
            .unanswered
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Responses lost or cut after the upstream carried the request out, by operation.
    pub fn lost(&self) -> HashMap<String, u64> {
        self.shared
            .lost
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

/// The AWS operation a request calls: the `X-Amz-Target` operation for the JSON protocols
/// (SQS, DynamoDB), the REST operation for S3 and SES v2 (the ones the worker calls).
pub fn operation(request: &Request) -> String {
    if let Some(target) = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    let query = request.uri().query().unwrap_or("");
    let has = |key: &str| {
        query
            .split('&')
            .any(|p| p == key || p.starts_with(&format!("{key}=")))
    };
    let method = request.method().as_str();
    let path = request.uri().path();
    let name = match method {
        _ if path.starts_with("/v2/email/outbound-emails") => "SendEmail",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "POST" if has("delete") => "DeleteObjects",
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" => "PutObject",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        "HEAD" => "HeadObject",
        "GET" if has("list-type") => "ListObjectsV2",
        "GET" => "GetObject",
        other => other,
    };
    name.to_string()
}

async fn proxy(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let faults = &shared.faults;
    let op = operation(&request);
    let eligible = faults.only.is_empty() || faults.only.contains(&op);
    let first_of = |list: &[String], seen: &Mutex<std::collections::HashSet<String>>| {
        list.contains(&op)
            && seen
                .lock()
                .map(|mut seen| seen.insert(op.clone()))
                .unwrap_or(false)
    };
    if first_of(&faults.fail_first, &shared.seen_failing)
        || (eligible && fastrand::f64() < faults.fail)
    {
        shared.injected.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut injected) = shared.injected_by_operation.lock() {
            *injected.entry(op).or_default() += 1;
        }
        return injected_failure(&request);
    }
    let hang = first_of(&faults.hang_first, &shared.seen_hanging);
    let first = first_of(&faults.lose_first, &shared.seen);
    let lose = first || (eligible && fastrand::f64() < faults.lose);
    let drop = !lose && eligible && fastrand::f64() < faults.drop;
    let failure = injected_failure(&request);
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut log) = shared.log.lock() {
        log.push((op.clone(), request.headers().clone()));
    }
    let guard = InFlight::new(shared.clone(), op.clone());
    let response = forward(&shared, request).await;
    if hang {
        let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        if let Ok(mut unanswered) = shared.unanswered.lock() {
            *unanswered.entry(op).or_default() += 1;
        }
        std::mem::drop(guard);
        return std::future::pending().await;
    }
    if lose || drop {
        // The upstream has done the work; read its whole answer, then hide it.
        let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        if let Ok(mut lost) = shared.lost.lock() {
            *lost.entry(op).or_default() += 1;
        }
        return if lose { failure } else { cut_connection() };
    }
    // The request stays in flight until its answer's body has been relayed.
    let (parts, body) = response.into_parts();
    let body = futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
        let _ = &guard;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// One request in flight, counted until dropped.
struct InFlight {
    shared: Arc<Shared>,
    op: String,
}

impl InFlight {
    fn new(shared: Arc<Shared>, op: String) -> Self {
        if let Ok(mut m) = shared.in_flight.lock() {
            let (now, max) = m.entry(op.clone()).or_default();
            *now += 1;
            *max = (*max).max(*now);
        }
        InFlight { shared, op }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut m) = self.shared.in_flight.lock()
            && let Some((now, _)) = m.get_mut(&self.op)
        {
            *now -= 1;
        }
    }
}

/// A 200 whose body ends in an error: the server aborts the connection mid-response.
fn cut_connection() -> Response {
    let body = Body::from_stream(futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection cut by the fault proxy",
        ))
    }));
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("64"));
    response
}

async fn forward(shared: &Shared, request: Request) -> Response {
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
