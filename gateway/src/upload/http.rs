//! The uplink: one HTTPS request per batch (reqwest over rustls with the
//! ring provider; no OpenSSL).
//!
//! Wire format of a batch (`POST <url>v1/reports`, see `docs/openapi.yaml`):
//! the stored reports, byte for byte (compact JWS, ASCII), joined by `\n`,
//! gzip-compressed, `Content-Type: application/jose-batch`,
//! `Content-Encoding: gzip`, `Authorization: Bearer <token>` when a token is
//! configured, and `Idempotency-Key: <first report id>..<last report id>`
//! (informative: the backend deduplicates by report bytes).
//!
//! This module only moves bytes; [`super::classify`] decides what an answer
//! means.

use super::classify::{Outcome, TransportFailure, classify_response, classify_transport};
use super::config::UploadConfig;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A certificate, key or option was refused.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Bytes of one upload, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireStats {
    /// Uncompressed body bytes.
    pub raw_bytes: u64,
    /// Bytes sent (gzip body).
    pub body_bytes: u64,
}

/// The HTTPS uplink to the MRV backend.
#[derive(Debug, Clone)]
pub struct HttpUplink {
    client: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

/// The gzip body of a batch (reports joined by `\n`).
pub fn batch_body(reports: &[Vec<u8>]) -> (Vec<u8>, u64) {
    let raw: u64 = reports.iter().map(|r| r.len() as u64 + 1).sum();
    let mut gz = GzEncoder::new(Vec::with_capacity(raw as usize / 4), Compression::fast());
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            gz.write_all(b"\n").expect("writing to a Vec cannot fail");
        }
        gz.write_all(r).expect("writing to a Vec cannot fail");
    }
    (gz.finish().expect("writing to a Vec cannot fail"), raw)
}

impl HttpUplink {
    /// A client for `cfg`: its CA bundle (only those roots when given),
    /// client certificate (mTLS), token and timeout. Hostname verification
    /// is always on.
    pub fn new(cfg: &UploadConfig) -> Result<HttpUplink, HttpError> {
        // The binary installs the ring provider; make library users safe too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let err = |e: reqwest::Error| HttpError::Client(e.to_string());
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(std::time::Duration::from_secs(10)))
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("mrv-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(err)?;
            b = b.tls_certs_only(certs);
        }
        if let Some(pem) = &cfg.identity_pem {
            b = b.identity(reqwest::Identity::from_pem(pem).map_err(err)?);
        }
        Ok(HttpUplink {
            client: b.build().map_err(err)?,
            endpoint: format!("{}v1/reports", cfg.url),
            token: cfg.token.clone(),
        })
    }

    /// Uploads `reports` (seqs `seqs`, ids `first_id..last_id`) and
    /// classifies the answer.
    pub async fn send(
        &self,
        seqs: &[u64],
        idempotency_key: &str,
        body: Vec<u8>,
        now_ms: impl Fn() -> u64,
    ) -> Outcome {
        let mut req = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/jose-batch")
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .header("Idempotency-Key", idempotency_key)
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return classify_transport(failure_of(&e), &error_chain(&e)),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match resp.bytes().await {
            Ok(body) => classify_response(seqs, status, retry_after.as_deref(), &body, now_ms()),
            Err(e) => classify_transport(failure_of(&e), &error_chain(&e)),
        }
    }
}

fn failure_of(e: &reqwest::Error) -> TransportFailure {
    if e.is_timeout() {
        TransportFailure::Timeout
    } else if e.is_connect() {
        TransportFailure::Connect
    } else {
        TransportFailure::Broken
    }
}

/// The error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_batch_body_is_the_reports_joined_by_newlines_gzipped() {
        let (gz, raw) = batch_body(&[b"a.b.c".to_vec(), b"d.e.f".to_vec()]);
        assert_eq!(raw, 12);
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .expect("gunzip");
        assert_eq!(out, "a.b.c\nd.e.f");
    }
}
