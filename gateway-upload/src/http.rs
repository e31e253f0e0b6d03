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
//! Several base URLs (receivers of one backend) may be configured; each
//! call names the endpoint (an index) the upload machine chose.
//! `GET <url>v1/log/consistency?old=&new=` fetches a consistency proof for
//! the receipt watch ([`super::receipts`]).
//!
//! This module only moves bytes; [`super::classify`] decides what an answer
//! means.

use super::classify::{
    Outcome, TransportFailure, classify_response, classify_transport, receipts_in,
};
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
    bases: Vec<String>,
    token: Option<String>,
}

/// What one upload brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What it means for delivery.
    pub outcome: Outcome,
    /// Receipts the backend gave, by report seq.
    pub receipts: Vec<(u64, mrv_shared::tlog::receipt::Receipt)>,
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
    /// client certificate (mTLS), token and timeout (the floor: report
    /// uploads set their own, larger for larger batches). Hostname
    /// verification is always on.
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
            bases: cfg.urls(),
            token: cfg.token.clone(),
        })
    }

    /// The base URLs, in failover order.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    fn base(&self, endpoint: usize) -> &str {
        &self.bases[endpoint % self.bases.len()]
    }

    /// Uploads `reports` (seqs `seqs`, ids `first_id..last_id`) to base URL
    /// number `endpoint`, giving the whole request `timeout` (see
    /// [`UploadConfig::request_timeout`]: it grows with the batch's size),
    /// and classifies the answer.
    pub async fn send(
        &self,
        endpoint: usize,
        seqs: &[u64],
        idempotency_key: &str,
        body: Vec<u8>,
        timeout: std::time::Duration,
        now_ms: impl Fn() -> u64,
    ) -> Answer {
        let none = |outcome| Answer {
            outcome,
            receipts: Vec::new(),
        };
        let mut req = self
            .client
            .post(format!("{}v1/reports", self.base(endpoint)))
            .header(reqwest::header::CONTENT_TYPE, "application/jose-batch")
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .header("Idempotency-Key", idempotency_key)
            .timeout(timeout)
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return none(classify_transport(failure_of(&e), &error_chain(&e))),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match resp.bytes().await {
            Ok(body) => Answer {
                outcome: classify_response(seqs, status, retry_after.as_deref(), &body, now_ms()),
                receipts: receipts_in(seqs, status, &body),
            },
            Err(e) => none(classify_transport(failure_of(&e), &error_chain(&e))),
        }
    }

    /// The consistency proof between tree sizes `old` and `new` from base
    /// URL number `endpoint`.
    pub async fn consistency(
        &self,
        endpoint: usize,
        old: u64,
        new: u64,
    ) -> Result<mrv_shared::tlog::receipt::ConsistencyProof, String> {
        let url = format!(
            "{}v1/log/consistency?old={old}&new={new}",
            self.base(endpoint)
        );
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| error_chain(&e))?;
        if !status.is_success() {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("not a consistency proof: {e}"))
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
