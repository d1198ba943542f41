//! HTTPS webhooks: one signed POST per delivery, over a connection of its own (events are
//! rare; a pool would only hold sockets open). Redirects are never followed, every delivery
//! has a deadline, and only the configured URL is ever called (docs/EVENTS.md).
//!
//! Signature, as payment providers do it: `X-Export-Signature: t=<unix seconds>,v1=<hex>`,
//! where `<hex>` is HMAC-SHA256 with the destination's secret over `<t>.<body>`. The receiver
//! recomputes it, compares in constant time and refuses old timestamps (replays).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::Failure;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-export-signature";
/// The header that carries the event id (also in the body).
pub const EVENT_ID_HEADER: &str = "x-export-event-id";
/// Shortest secret accepted.
const MIN_SECRET: usize = 16;
/// Most of a response body kept for the error message.
const MAX_REPLY: usize = 200;

/// One configured webhook.
pub struct Webhook {
    uri: Uri,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    secret: Vec<u8>,
    tls: TlsConnector,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the secret nor the path (which may hold a token) is printed.
        write!(f, "Webhook({}:{})", self.host, self.port)
    }
}

impl Webhook {
    /// A webhook to `url` (https only), signed with the secret in the environment variable
    /// `secret_env`, trusting the system's certificate authorities and those in `ca_file`.
    pub fn new(url: &str, secret_env: &str, ca_file: Option<&str>) -> Result<Webhook, String> {
        let uri: Uri = url.parse().map_err(|e| format!("url: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err("url must be https://".into());
        }
        let host = uri.host().ok_or("url has no host")?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name =
            ServerName::try_from(bare.clone()).map_err(|e| format!("url host: {e}"))?;
        let secret = std::env::var(secret_env).map_err(|_| {
            format!("the environment variable {secret_env} (secret_env) is not set")
        })?;
        if secret.len() < MIN_SECRET {
            return Err(format!(
                "the secret in {secret_env} is shorter than {MIN_SECRET} characters"
            ));
        }
        let mut roots = RootCertStore::empty();
        // The system's store may be missing (a scratch image): then only ca_file is trusted.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("ca_file {path}: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("ca_file {path}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("ca_file {path} holds no certificate"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {path}: {e}"))?;
            }
        }
        if roots.is_empty() {
            return Err(
                "no certificate authority to trust: the system has none and no ca_file is set"
                    .into(),
            );
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Webhook {
            uri,
            host: bare,
            port,
            server_name,
            secret: secret.into_bytes(),
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// POSTs `body` once, within `timeout`.
    pub async fn post(
        &self,
        body: &[u8],
        event_id: &str,
        timeout: Duration,
    ) -> Result<(), Failure> {
        match tokio::time::timeout(timeout, self.post_once(body, event_id)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::transient(format!(
                "no answer within {} s",
                timeout.as_secs()
            ))),
        }
    }

    async fn post_once(&self, body: &[u8], event_id: &str) -> Result<(), Failure> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| Failure::transient(format!("connect: {e}")))?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            // A certificate the worker does not trust will not be trusted on a retry either;
            // but a handshake cut short by the network is worth another try.
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => Failure::permanent(format!("TLS: {e}")),
                _ => Failure::transient(format!("TLS: {e}")),
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| Failure::transient(format!("HTTP: {e}")))?;
        let driver = tokio::spawn(connection);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let authority = self
            .uri
            .authority()
            .map_or(self.host.as_str(), |a| a.as_str())
            .to_string();
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("redshift-export-worker/", env!("CARGO_PKG_VERSION")),
            )
            .header(EVENT_ID_HEADER, event_id)
            .header(SIGNATURE_HEADER, signature(&self.secret, now, body))
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| Failure::permanent(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::transient(format!("HTTP: {e}")))?;
        let status = response.status();
        let reply = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        driver.abort();
        let reply = String::from_utf8_lossy(&reply[..reply.len().min(MAX_REPLY)]);
        let said = crate::error::redact(reply.trim());
        match status.as_u16() {
            200..=299 => Ok(()),
            code @ 300..=399 => Err(Failure::permanent(format!(
                "HTTP {code}: redirects are not followed"
            ))),
            code @ (408 | 429 | 500..=599) => {
                Err(Failure::transient(format!("HTTP {code}: {said}")))
            }
            code => Err(Failure::permanent(format!("HTTP {code}: {said}"))),
        }
    }
}

/// The `X-Export-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    #[expect(clippy::expect_used, reason = "HMAC takes a key of any length")]
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let code: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={code}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Python: hmac.new(secret, b'1700000000.' + body, hashlib.sha256).hexdigest()
        let s = signature(
            b"whsec-0123456789abcdef",
            1_700_000_000,
            br#"{"event_id":"e1"}"#,
        );
        assert_eq!(
            s,
            "t=1700000000,v1=72f70b7046318fa9059d0bdee508ff3cff78cd99b977824538d6250efad82265"
        );
    }

    #[test]
    fn only_https_urls_and_real_secrets_are_accepted() {
        let e = Webhook::new("http://127.0.0.1/x", "PATH", None).unwrap_err();
        assert!(e.contains("https"), "{e}");
        let e =
            Webhook::new("https://127.0.0.1/x", "NO_SUCH_VARIABLE_FOR_WEBHOOKS", None).unwrap_err();
        assert!(e.contains("is not set"), "{e}");
    }
}
