//! The embedded MQTT endpoint (MQTT 3.1.1 and 5): where devices publish
//! frames and receive their acks, inside the gateway process.
//!
//! It is an endpoint, not a general broker. Ingest *is* its publish handler:
//! every PUBLISH goes to a [`PublishHandler`] (the frame intake), never to
//! other clients.
//!
//! ```text
//! socket ─> codec (rumqttc mqttbytes v4/v5) ─> session (pure) ─> handler ─> writer (group commit, fdatasync)
//!   ▲                                            │  ▲                           │
//!   └──────── PUBACK, in arrival order ──────────┘  └── outcome (oneshot) ──────┘
//! writer ─> application acks ─> ack routes ─> the device's connection (QoS 0 PUBLISH on its ack topic)
//! ```
//!
//! Invariants:
//! - **A QoS 1 PUBACK (QoS 2 PUBREC) is written only after the publish's
//!   durable outcome arrived**: the writer's reply, sent after the group
//!   commit returned from fdatasync. PUBACKs leave in arrival order. A
//!   PUBACK with reason code 0 means "on disk" (stored or already stored).
//!   Payloads refused for good (invalid, unknown device, bad signature,
//!   regressed seq) are acknowledged too, so they are not redelivered: MQTT
//!   5 clients see a reason code >= 0x80, 3.1.1 has no negative PUBACK.
//! - **Back-pressure, no unbounded queues**: per connection at most
//!   `receive_maximum` publishes await their outcome; at that limit, and
//!   while a publish waits for buffer space (the buffer is full: its PUBACK
//!   is held and it is re-offered every second), the connection is not read.
//!   Memory per connection is bounded by `receive_maximum x
//!   max_packet_bytes`; an idle plain-TCP connection holds no buffers.
//! - **QoS 0** publishes are handled best effort (same intake, never acked,
//!   dropped when the buffer is full) and counted separately.
//! - **Authentication**: with `[[mqtt.users]]` a login is required; an
//!   account with `device = "..."` may publish only on that device's up
//!   topic (or on a third-party mapping's topic, for that device only) and
//!   subscribe only to its ack topic.
//! - **Third-party devices** (`[[mapping]]`): a PUBLISH on a topic a
//!   mapping's filter matches goes through the mapping stage in the intake;
//!   its PUBACK (reason 0) likewise waits for the frame's durable outcome. Wrong logins are refused
//!   with CONNACK 4/0x86 and counted.
//! - **What it does not do** (stated in `docs/PROTOCOL.md`): no retained
//!   messages (the retain flag is accepted and ignored: a retained frame is
//!   handled like any other, nothing is stored for later subscribers); wills
//!   are accepted and never published (there is no one to publish them to);
//!   the only subscription allowed is a device's own ack topic (others get
//!   SUBACK 0x80/0x87); no persistent sessions (session present is always 0,
//!   MQTT 5 session expiry is 0; subscriptions end with the connection).
//!   A new connection with a client id in use takes over (the old one is
//!   closed).
//! - Keep-alive: a client silent for 1.5 x its keep-alive is closed (not
//!   while we are not reading it). No CONNECT within 10 s: closed.
//! - Ordinary disconnects are logged at INFO, faults (bad login, garbage,
//!   oversized, not authorized, timeouts) at WARN with peer and client id,
//!   each counted in [`EndpointStats`].

pub mod ack_routes;
pub mod auth;
pub mod codec;
mod connection;
pub mod session;
pub mod stats;

use crate::ingest::intake::PublishHandler;
use crate::ingest::writer::AckOut;
use ack_routes::AckRoutes;
use auth::{Account, Authenticator};
use connection::{Shared, Transport};
use mrv_shared::ids::SiteId;
use session::Limits;
pub use stats::{EndpointStats, RefusedLogin};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The listen address is taken or not ours.
    #[error("MQTT endpoint cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("MQTT TLS listener: {0}")]
    Tls(String),
}

/// TLS listener settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Where the TLS listener listens (usually port 8883).
    pub listen: SocketAddr,
    /// Certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Endpoint settings.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// This site (topics are `mrv/<site>/<device>/up|ack`).
    pub site: SiteId,
    /// Plain TCP listen address.
    pub listen: SocketAddr,
    /// Optional TLS listener.
    pub tls: Option<TlsSettings>,
    /// Accounts (empty = no login).
    pub accounts: Vec<Account>,
    /// Most connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// Largest packet, bytes.
    pub max_packet_bytes: usize,
    /// Most publishes per connection awaiting their outcome.
    pub receive_maximum: u16,
    /// Third-party mapping topic filters (`[[mapping]]`): device-bound
    /// accounts may publish on the topics they match (see [`auth`]).
    pub mapped_filters: Vec<String>,
}

/// A bound endpoint, ready to serve.
pub struct Endpoint {
    shared: Arc<Shared>,
    tcp: TcpListener,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    max_connections: usize,
}

impl Endpoint {
    /// Binds the listeners. Frames go to `handler`; application acks are
    /// delivered through `routes`.
    pub async fn bind(
        s: EndpointSettings,
        handler: Arc<dyn PublishHandler>,
        stats: Arc<EndpointStats>,
    ) -> Result<Endpoint, EndpointError> {
        let tcp = TcpListener::bind(s.listen)
            .await
            .map_err(|source| EndpointError::Bind {
                addr: s.listen,
                source,
            })?;
        let tls = match &s.tls {
            None => None,
            Some(t) => {
                let acceptor = tls_acceptor(t)?;
                let l =
                    TcpListener::bind(t.listen)
                        .await
                        .map_err(|source| EndpointError::Bind {
                            addr: t.listen,
                            source,
                        })?;
                Some((l, acceptor))
            }
        };
        let shared = Arc::new(Shared {
            routes: Arc::new(AckRoutes::new(s.site.clone())),
            site: s.site,
            limits: Limits {
                max_packet_bytes: s.max_packet_bytes,
                max_inflight: s.receive_maximum.max(1),
            },
            auth: Authenticator::new(s.accounts).with_mapped_filters(s.mapped_filters),
            handler,
            stats,
            clients: Mutex::new(HashMap::new()),
            connect_timeout: Duration::from_secs(10),
        });
        Ok(Endpoint {
            shared,
            tcp,
            tls,
            max_connections: s.max_connections,
        })
    }

    /// The plain TCP address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.local_addr().ok()
    }

    /// The TLS address actually bound.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Where application acks go in.
    pub fn routes(&self) -> Arc<AckRoutes> {
        self.shared.routes.clone()
    }

    /// Serves until `shutdown` turns true; connections are told to close.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let Endpoint {
            shared,
            tcp,
            tls,
            max_connections,
        } = self;
        let mut next_id = 0u64;
        let mut last_limit_log: Option<tokio::time::Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => break,
                r = tcp.accept() => r.map(|(s, a)| (s, a, false)),
                r = async { tls.as_ref().expect("guarded").0.accept().await }, if tls.is_some() => {
                    r.map(|(s, a)| (s, a, true))
                }
            };
            let (stream, peer, is_tls) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    tracing::warn!(error = %e, "MQTT endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let open = EndpointStats::get(&shared.stats.connections_open) as usize;
            if open >= max_connections {
                EndpointStats::inc(&shared.stats.connections_refused_limit);
                let now = tokio::time::Instant::now();
                if last_limit_log.is_none_or(|t| now - t > Duration::from_secs(10)) {
                    last_limit_log = Some(now);
                    tracing::warn!(%peer, max_connections, "MQTT connection refused: connection limit reached (mqtt.max_connections); further refusals in the next 10 s are counted, not logged");
                }
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            EndpointStats::inc(&shared.stats.connections_open);
            EndpointStats::inc(&shared.stats.connections_accepted);
            next_id += 1;
            let (id, shared, rx) = (next_id, shared.clone(), shutdown.clone());
            if is_tls {
                let acceptor = tls
                    .as_ref()
                    .expect("accepted on the TLS listener")
                    .1
                    .clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(shared.connect_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => {
                            connection::serve(Transport::Tls(Box::new(s)), peer, id, shared, rx)
                                .await
                        }
                        Ok(Err(e)) => {
                            EndpointStats::inc(&shared.stats.malformed);
                            EndpointStats::dec(&shared.stats.connections_open);
                            tracing::warn!(%peer, error = %e, "MQTT TLS handshake failed");
                        }
                        Err(_) => {
                            EndpointStats::inc(&shared.stats.timeouts);
                            EndpointStats::dec(&shared.stats.connections_open);
                            tracing::warn!(%peer, "MQTT TLS handshake timed out");
                        }
                    }
                });
            } else {
                tokio::spawn(connection::serve(
                    Transport::Tcp(stream),
                    peer,
                    id,
                    shared,
                    rx,
                ));
            }
        }
    }
}

/// Delivers the writer's application acks to the devices' connections.
pub async fn run_ack_delivery(
    mut acks: mpsc::UnboundedReceiver<AckOut>,
    routes: Arc<AckRoutes>,
    stats: Arc<EndpointStats>,
) {
    while let Some(a) = acks.recv().await {
        if !routes.deliver(&a) {
            EndpointStats::inc(&stats.app_acks_undeliverable);
        }
    }
}

fn tls_acceptor(t: &TlsSettings) -> Result<tokio_rustls::TlsAcceptor, EndpointError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            EndpointError::Tls(format!("certificate file {}: {e}", t.cert_file.display()))
        })?;
    if certs.is_empty() {
        return Err(EndpointError::Tls(format!(
            "certificate file {} holds no certificate",
            t.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key_file)
        .map_err(|e| EndpointError::Tls(format!("key file {}: {e}", t.key_file.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| EndpointError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| EndpointError::Tls(format!("certificate and key do not fit: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Picks a free loopback port (bind to port 0, read it, release it). For the
/// demo, which writes the port into a config file before starting.
pub fn free_loopback_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}
