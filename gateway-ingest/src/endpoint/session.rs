//! One client connection's protocol state (pure: no I/O, no clock).
//!
//! The connection task ([`super::connection`]) feeds [`Event`]s (decoded
//! packets, resolved write outcomes, timers) and carries out the returned
//! [`Action`]s (send a packet, hand a publish to the handler, arm a retry,
//! close with a reason it logs and counts).
//!
//! Invariants kept here:
//! - a QoS 1 PUBACK / QoS 2 PUBREC is emitted only for a publish whose
//!   disposition arrived, and acks leave in the order the publishes came in
//!   (MQTT 4.6.0-2), so a fast outcome never overtakes a slow one;
//! - at most `max_inflight` publishes await their outcome; beyond that
//!   [`Session::wants_read`] is false and the task stops reading the socket;
//!   the same while a publish waits for buffer space (back-pressure: the
//!   PUBACK waits, nothing queues without bound);
//! - a publish refused for space (`BufferFull`) is not acked: it is retried
//!   after [`RETRY_AFTER`], keeping its place in the ack order;
//! - a failed write closes the connection without acking anything more;
//! - a credential bound to a device may publish only on that device's up
//!   topic (or a third-party mapping's topic) and subscribe only to its ack
//!   topic.

use super::auth::{Authenticator, Principal};
use super::codec::{
    AckReason, ConnectCode, ConnectRequest, DisconnectReason, Inbound, Outbound, PublishPacket,
    Qos, SubscribeCode, Version,
};
use crate::ingest::intake::{ClientIdentity, Disposition, Publish};
use mrv_gateway_buffer::AppendOutcome;
use mrv_shared::ids::{DeviceId, SiteId};
use mrv_shared::wire::topic;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Wait before re-offering a publish the buffer refused for space.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest packet accepted, bytes.
    pub max_packet_bytes: usize,
    /// Most publishes awaiting their outcome (advertised to MQTT 5 clients
    /// as Receive Maximum).
    pub max_inflight: u16,
}

/// Why a connection ends. The task logs it (level by [`CloseReason::is_fault`]) and counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT.
    ClientDisconnected,
    /// The peer closed the socket.
    PeerClosed,
    /// Wrong user name or password, or none where one is needed.
    AuthFailed {
        /// The user name tried, if any.
        username: Option<String>,
        /// The client id the CONNECT carried (may be empty).
        client_id: String,
    },
    /// Bytes that are not MQTT, or a packet the codec refused.
    Malformed(String),
    /// A packet over the size limit.
    TooLarge {
        /// Announced size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// A protocol rule broken (second CONNECT, topic alias, ...).
    ProtocolError(String),
    /// MQTT 3.1.1 client published where its credential does not allow.
    NotAuthorized {
        /// The topic.
        topic: String,
    },
    /// No packet for 1.5 x keep-alive.
    KeepAliveTimeout,
    /// No CONNECT in time.
    ConnectTimeout,
    /// Another connection with the same client id.
    TakenOver,
    /// The gateway stops.
    ShuttingDown,
    /// The buffer failed a write.
    WriteFailed,
}

impl CloseReason {
    /// True when the close is the client's fault or ours (logged at WARN);
    /// ordinary disconnects are INFO.
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            CloseReason::ClientDisconnected
                | CloseReason::PeerClosed
                | CloseReason::TakenOver
                | CloseReason::ShuttingDown
        )
    }

    fn disconnect(&self) -> Option<DisconnectReason> {
        Some(match self {
            CloseReason::Malformed(_) => DisconnectReason::Malformed,
            CloseReason::TooLarge { .. } => DisconnectReason::PacketTooLarge,
            CloseReason::ProtocolError(d) if d.contains("alias") => {
                DisconnectReason::TopicAliasInvalid
            }
            CloseReason::ProtocolError(_) => DisconnectReason::ProtocolError,
            CloseReason::NotAuthorized { .. } => DisconnectReason::NotAuthorized,
            CloseReason::KeepAliveTimeout => DisconnectReason::KeepAliveTimeout,
            CloseReason::TakenOver => DisconnectReason::SessionTakenOver,
            CloseReason::ShuttingDown => DisconnectReason::ShuttingDown,
            CloseReason::WriteFailed => DisconnectReason::ServerError,
            _ => return None,
        })
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ClientDisconnected => write!(f, "client disconnected"),
            CloseReason::PeerClosed => write!(f, "connection closed by the peer"),
            CloseReason::AuthFailed {
                username: Some(u),
                client_id,
            } => write!(
                f,
                "login refused: wrong user name or password for {u:?} (client id {client_id:?})"
            ),
            CloseReason::AuthFailed {
                username: None,
                client_id,
            } => write!(
                f,
                "login refused: user name and password required (client id {client_id:?})"
            ),
            CloseReason::Malformed(d) => write!(f, "malformed MQTT: {d}"),
            CloseReason::TooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the limit of {max} bytes")
            }
            CloseReason::ProtocolError(d) => write!(f, "protocol error: {d}"),
            CloseReason::NotAuthorized { topic } => {
                write!(f, "publish on {topic:?} not allowed for this credential")
            }
            CloseReason::KeepAliveTimeout => write!(f, "no packet within 1.5 x keep-alive"),
            CloseReason::ConnectTimeout => write!(f, "no CONNECT within the connect timeout"),
            CloseReason::TakenOver => {
                write!(f, "a new connection with the same client id took over")
            }
            CloseReason::ShuttingDown => write!(f, "gateway shutting down"),
            CloseReason::WriteFailed => write!(f, "buffer write failed; frames are not acked"),
        }
    }
}

/// Something the endpoint counts and logs without closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A publish arrived at this QoS.
    Received(Qos),
    /// An MQTT 5 client published where its credential does not allow
    /// (refused with PUBACK 0x87; QoS 0 dropped).
    PublishRefused {
        /// The topic.
        topic: String,
    },
    /// A subscription was refused (only the device's own ack topic is allowed).
    SubscribeRefused {
        /// The filter.
        filter: String,
    },
    /// A publish waits for buffer space (its PUBACK is held).
    WaitingForSpace,
}

/// Input to the session.
#[derive(Debug)]
pub enum Event {
    /// A decoded packet.
    Packet(Inbound),
    /// The handler's outcome for the publish with this token.
    Resolved {
        /// Token from [`Action::Handle`].
        token: u64,
        /// Outcome.
        disposition: Disposition,
    },
    /// The retry armed for this token is due.
    RetryDue {
        /// Token.
        token: u64,
    },
}

/// Output of the session, carried out in order.
#[derive(Debug)]
pub enum Action {
    /// Write this packet.
    Send(Outbound),
    /// The CONNECT was accepted: register the client (take-over by client id).
    Accepted(Arc<ClientIdentity>),
    /// Hand this publish to the handler; report its outcome with `token`.
    Handle {
        /// Token.
        token: u64,
        /// The publish.
        publish: Publish,
    },
    /// Feed [`Event::RetryDue`] for `token` after `after`.
    ArmRetry {
        /// Token.
        token: u64,
        /// Delay.
        after: Duration,
    },
    /// Deliver this device's application acks to this connection.
    Route(DeviceId),
    /// Stop delivering this device's acks here.
    Unroute(DeviceId),
    /// Count (and maybe log) this.
    Note(Note),
    /// Send what is queued, then close.
    Close(CloseReason),
}

#[derive(Debug)]
struct Slot {
    token: u64,
    pkid: u16,
    qos: Qos,
    publish: Option<Publish>,
    ack: Option<AckReason>,
    waiting_for_space: bool,
}

#[derive(Debug)]
enum Phase {
    AwaitingConnect,
    Open,
    Closed,
}

/// The state of one connection.
#[derive(Debug)]
pub struct Session {
    site: SiteId,
    limits: Limits,
    peer: Option<SocketAddr>,
    phase: Phase,
    version: Option<Version>,
    keep_alive_s: u16,
    principal: Option<Principal>,
    client: Option<Arc<ClientIdentity>>,
    inflight: VecDeque<Slot>,
    /// QoS 2 packet ids PUBREC'd and awaiting PUBREL (bounded by `max_inflight`).
    awaiting_release: Vec<u16>,
    routed: Vec<DeviceId>,
    next_token: u64,
}

impl Session {
    /// A new connection from `peer`.
    pub fn new(site: SiteId, limits: Limits, peer: Option<SocketAddr>) -> Self {
        Self {
            site,
            limits,
            peer,
            phase: Phase::AwaitingConnect,
            version: None,
            keep_alive_s: 0,
            principal: None,
            client: None,
            inflight: VecDeque::new(),
            awaiting_release: Vec::new(),
            routed: Vec::new(),
            next_token: 1,
        }
    }

    /// The protocol version, once CONNECT was read.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The client, once accepted.
    pub fn client(&self) -> Option<&Arc<ClientIdentity>> {
        self.client.as_ref()
    }

    /// Keep-alive the server enforces (1.5 x the client's), once open.
    pub fn keep_alive(&self) -> Option<Duration> {
        match (&self.phase, self.keep_alive_s) {
            (Phase::Open, k) if k > 0 => Some(Duration::from_millis(k as u64 * 1500)),
            _ => None,
        }
    }

    /// Devices whose acks are routed here.
    pub fn routed(&self) -> &[DeviceId] {
        &self.routed
    }

    /// Publishes awaiting their outcome.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// False when the task must stop reading: closed, in-flight window full,
    /// or a publish waiting for buffer space.
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Closed => false,
            Phase::AwaitingConnect => true,
            Phase::Open => {
                self.inflight.len() < self.limits.max_inflight as usize
                    && !self.inflight.iter().any(|s| s.waiting_for_space)
            }
        }
    }

    /// Closes from outside (timer, take-over, shutdown): the DISCONNECT
    /// (MQTT 5) to send, if any.
    pub fn close(&mut self, reason: CloseReason) -> Vec<Action> {
        let mut out = Vec::new();
        self.close_into(reason, &mut out);
        out
    }

    fn close_into(&mut self, reason: CloseReason, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if let (Some(Version::V5), Phase::Open, Some(d)) =
            (self.version, &self.phase, reason.disconnect())
        {
            out.push(Action::Send(Outbound::Disconnect(d)));
        }
        self.phase = Phase::Closed;
        out.push(Action::Close(reason));
    }

    /// Feeds one event; `auth` decides logins.
    pub fn on(&mut self, event: Event, auth: &Authenticator) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Closed) {
            return out;
        }
        match event {
            Event::Packet(p) => self.on_packet(p, auth, &mut out),
            Event::Resolved { token, disposition } => {
                self.on_resolved(token, disposition, &mut out)
            }
            Event::RetryDue { token } => {
                if let Some(slot) = self.inflight.iter_mut().find(|s| s.token == token)
                    && slot.waiting_for_space
                    && let Some(p) = slot.publish.clone()
                {
                    slot.waiting_for_space = false;
                    out.push(Action::Handle { token, publish: p });
                }
            }
        }
        out
    }

    fn on_packet(&mut self, p: Inbound, auth: &Authenticator, out: &mut Vec<Action>) {
        match (&self.phase, p) {
            (Phase::AwaitingConnect, Inbound::Connect(c)) => self.on_connect(c, auth, out),
            (Phase::AwaitingConnect, _) => self.close_into(
                CloseReason::ProtocolError("first packet is not CONNECT".into()),
                out,
            ),
            (Phase::Open, Inbound::Connect(_)) => {
                self.close_into(CloseReason::ProtocolError("second CONNECT".into()), out)
            }
            (Phase::Open, Inbound::Publish(p)) => self.on_publish(p, auth, out),
            (Phase::Open, Inbound::PubRel { pkid }) => {
                self.awaiting_release.retain(|&k| k != pkid);
                out.push(Action::Send(Outbound::PubComp { pkid }));
            }
            // Acks of what we send: acks go out at QoS 0, so nothing to track.
            (
                Phase::Open,
                Inbound::PubAck { .. } | Inbound::PubRec { .. } | Inbound::PubComp { .. },
            ) => {}
            (Phase::Open, Inbound::Subscribe { pkid, filters }) => {
                self.on_subscribe(pkid, filters, out)
            }
            (Phase::Open, Inbound::Unsubscribe { pkid, filters }) => {
                for f in &filters {
                    if let Some(d) = self.ack_filter_device(f)
                        && let Some(i) = self.routed.iter().position(|r| *r == d)
                    {
                        self.routed.remove(i);
                        out.push(Action::Unroute(d));
                    }
                }
                out.push(Action::Send(Outbound::UnsubAck {
                    pkid,
                    count: filters.len(),
                }));
            }
            (Phase::Open, Inbound::PingReq) => out.push(Action::Send(Outbound::PingResp)),
            (Phase::Open, Inbound::Disconnect) => {
                self.close_into(CloseReason::ClientDisconnected, out)
            }
            (Phase::Open, Inbound::Unexpected(what)) => self.close_into(
                CloseReason::ProtocolError(format!("a client may not send {what}")),
                out,
            ),
            (Phase::Closed, _) => {}
        }
    }

    fn on_connect(&mut self, c: ConnectRequest, auth: &Authenticator, out: &mut Vec<Action>) {
        self.version = Some(c.version);
        let refuse = |code| Outbound::ConnAck {
            code,
            receive_maximum: 0,
            max_packet_bytes: 0,
            assigned_client_id: None,
        };
        let principal = match auth.check(c.username.as_deref(), c.password.as_deref()) {
            Ok(p) => p,
            Err(_) => {
                let code = if c.username.is_some() {
                    ConnectCode::BadCredentials
                } else {
                    ConnectCode::NotAuthorized
                };
                out.push(Action::Send(refuse(code)));
                self.phase = Phase::Closed;
                out.push(Action::Close(CloseReason::AuthFailed {
                    username: c.username,
                    client_id: c.client_id,
                }));
                return;
            }
        };
        let (client_id, assigned) = if c.client_id.is_empty() {
            if c.version == Version::V311 && !c.clean_start {
                // MQTT-3.1.3-8: an empty id needs a clean session.
                out.push(Action::Send(refuse(ConnectCode::BadClientId)));
                self.phase = Phase::Closed;
                out.push(Action::Close(CloseReason::ProtocolError(
                    "empty client id with clean_session = 0".into(),
                )));
                return;
            }
            let id = format!(
                "auto-{}",
                self.peer
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "local".into())
            );
            (id.clone(), Some(id))
        } else {
            (c.client_id, None)
        };
        let client = Arc::new(ClientIdentity {
            client_id,
            username: c.username,
            bound_device: principal.bound_device().cloned(),
            peer: self.peer,
        });
        self.keep_alive_s = c.keep_alive_s;
        self.principal = Some(principal);
        self.client = Some(client.clone());
        self.phase = Phase::Open;
        out.push(Action::Send(Outbound::ConnAck {
            code: ConnectCode::Accepted,
            receive_maximum: self.limits.max_inflight,
            max_packet_bytes: self.limits.max_packet_bytes as u32,
            assigned_client_id: if c.version == Version::V5 {
                assigned
            } else {
                None
            },
        }));
        out.push(Action::Accepted(client));
    }

    fn on_publish(&mut self, p: PublishPacket, auth: &Authenticator, out: &mut Vec<Action>) {
        out.push(Action::Note(Note::Received(p.qos)));
        if p.topic_alias.is_some() {
            return self.close_into(
                CloseReason::ProtocolError("topic alias used (Topic Alias Maximum is 0)".into()),
                out,
            );
        }
        if p.topic.is_empty() || p.topic.contains(['+', '#']) {
            return self.close_into(
                CloseReason::ProtocolError(format!("invalid topic name {:?}", p.topic)),
                out,
            );
        }
        let allowed = self
            .principal
            .as_ref()
            .is_some_and(|pr| auth.may_publish(pr, &self.site, &p.topic));
        if !allowed {
            if self.version == Some(Version::V311) {
                // 3.1.1 has no negative PUBACK: close (MQTT-3.3.5-2).
                return self.close_into(CloseReason::NotAuthorized { topic: p.topic }, out);
            }
            out.push(Action::Note(Note::PublishRefused {
                topic: p.topic.clone(),
            }));
            if p.qos != Qos::AtMostOnce {
                self.push_slot(p.pkid, p.qos, None, Some(AckReason::NotAuthorized));
                self.flush_acks(out);
            }
            return;
        }
        // A QoS 2 re-send of a publish already PUBREC'd: acknowledge again, do not handle twice.
        if p.qos == Qos::ExactlyOnce && self.awaiting_release.contains(&p.pkid) {
            self.push_slot(p.pkid, p.qos, None, Some(AckReason::Success));
            self.flush_acks(out);
            return;
        }
        let client = self.client.clone().expect("open sessions have a client");
        let publish = Publish {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos.level(),
            retain: p.retain,
            // An endpoint never replays: a retained publish is new data.
            retained_replay: false,
            client,
        };
        let token = self.push_slot(p.pkid, p.qos, Some(publish.clone()), None);
        out.push(Action::Handle { token, publish });
    }

    fn push_slot(
        &mut self,
        pkid: u16,
        qos: Qos,
        publish: Option<Publish>,
        ack: Option<AckReason>,
    ) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.inflight.push_back(Slot {
            token,
            pkid,
            qos,
            publish,
            ack,
            waiting_for_space: false,
        });
        token
    }

    fn on_resolved(&mut self, token: u64, d: Disposition, out: &mut Vec<Action>) {
        let Some(slot) = self.inflight.iter_mut().find(|s| s.token == token) else {
            return;
        };
        let reason = match d {
            Disposition::Stored(AppendOutcome::Stored | AppendOutcome::Duplicate) => {
                AckReason::Success
            }
            // Not stored, and the application ack says why (seq_regressed, or
            // go-back-N: acked_seq below this frame, the device re-sends).
            // MQTT 5 sees reason 0x83; 3.1.1 has no negative PUBACK.
            Disposition::Stored(AppendOutcome::Regressed | AppendOutcome::OutOfOrder) => {
                AckReason::ImplementationSpecific
            }
            Disposition::Stored(AppendOutcome::BufferFull) => {
                if slot.qos == Qos::AtMostOnce {
                    // Best effort: dropped (counted by the writer as refused_buffer_full).
                    AckReason::ImplementationSpecific
                } else {
                    slot.waiting_for_space = true;
                    out.push(Action::Note(Note::WaitingForSpace));
                    out.push(Action::ArmRetry {
                        token,
                        after: RETRY_AFTER,
                    });
                    return;
                }
            }
            Disposition::Refused(_) | Disposition::Stored(AppendOutcome::Invalid) => {
                AckReason::PayloadInvalid
            }
            Disposition::Ignored(_) => AckReason::Success,
            Disposition::WriteFailed => return self.close_into(CloseReason::WriteFailed, out),
        };
        slot.ack = Some(reason);
        slot.publish = None;
        self.flush_acks(out);
    }

    /// Emits acks for the resolved publishes at the head, in arrival order.
    fn flush_acks(&mut self, out: &mut Vec<Action>) {
        while let Some(front) = self.inflight.front() {
            let Some(reason) = front.ack else { break };
            let slot = self.inflight.pop_front().expect("front exists");
            match slot.qos {
                Qos::AtMostOnce => {}
                Qos::AtLeastOnce => out.push(Action::Send(Outbound::PubAck {
                    pkid: slot.pkid,
                    reason,
                })),
                Qos::ExactlyOnce => {
                    if !self.awaiting_release.contains(&slot.pkid) {
                        self.awaiting_release.push(slot.pkid);
                    }
                    out.push(Action::Send(Outbound::PubRec {
                        pkid: slot.pkid,
                        reason,
                    }));
                }
            }
        }
    }

    fn ack_filter_device(&self, filter: &str) -> Option<DeviceId> {
        let rest = filter.strip_prefix("mrv/")?;
        let (site, rest) = rest.split_once('/')?;
        let (device, tail) = rest.split_once('/')?;
        if tail != "ack" || site != self.site.as_str() {
            return None;
        }
        let device = DeviceId::new(device).ok()?;
        (topic::ack_topic(&self.site, &device) == filter).then_some(device)
    }

    fn on_subscribe(&mut self, pkid: u16, filters: Vec<(String, Qos)>, out: &mut Vec<Action>) {
        let mut codes = Vec::with_capacity(filters.len());
        for (filter, _qos) in filters {
            let device = self
                .ack_filter_device(&filter)
                .filter(|d| self.principal.as_ref().is_some_and(|p| p.may_use_device(d)));
            match device {
                Some(d) => {
                    if !self.routed.contains(&d) {
                        self.routed.push(d.clone());
                        out.push(Action::Route(d));
                    }
                    // Acks are sent at QoS 0: within one connection TCP
                    // delivers them, and no session outlives the connection.
                    codes.push(SubscribeCode::Granted(Qos::AtMostOnce));
                }
                None => {
                    out.push(Action::Note(Note::SubscribeRefused { filter }));
                    codes.push(SubscribeCode::NotAuthorized);
                }
            }
        }
        out.push(Action::Send(Outbound::SubAck { pkid, codes }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::auth::Account;

    fn site() -> SiteId {
        SiteId::new("s1").expect("valid")
    }

    fn session() -> Session {
        Session::new(
            site(),
            Limits {
                max_packet_bytes: 4096,
                max_inflight: 3,
            },
            None,
        )
    }

    fn auth() -> Authenticator {
        Authenticator::new(vec![
            Account::new("site", "pw", None),
            Account::new("d1", "pw1", Some(DeviceId::new("d1").expect("valid"))),
        ])
    }

    fn connect(s: &mut Session, v: Version, user: &str, pw: &str) -> Vec<Action> {
        s.on(
            Event::Packet(Inbound::Connect(ConnectRequest {
                version: v,
                client_id: "c".into(),
                clean_start: true,
                keep_alive_s: 10,
                username: Some(user.into()),
                password: Some(pw.into()),
                has_will: false,
                session_expiry_s: None,
            })),
            &auth(),
        )
    }

    fn publish(topic: &str, qos: Qos, pkid: u16) -> Event {
        Event::Packet(Inbound::Publish(PublishPacket {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"x"),
            qos,
            pkid,
            retain: false,
            dup: false,
            topic_alias: None,
        }))
    }

    fn handles(a: &[Action]) -> Vec<u64> {
        a.iter()
            .filter_map(|a| match a {
                Action::Handle { token, .. } => Some(*token),
                _ => None,
            })
            .collect()
    }

    fn sent(a: &[Action]) -> Vec<Outbound> {
        a.iter()
            .filter_map(|a| match a {
                Action::Send(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    fn stored() -> Disposition {
        Disposition::Stored(AppendOutcome::Stored)
    }

    #[test]
    fn a_puback_is_sent_only_after_the_outcome_and_in_arrival_order() {
        let mut s = session();
        connect(&mut s, Version::V311, "site", "pw");
        let t1 = handles(&s.on(publish("mrv/s1/d1/up", Qos::AtLeastOnce, 1), &auth()))[0];
        let t2 = handles(&s.on(publish("mrv/s1/d2/up", Qos::AtLeastOnce, 2), &auth()))[0];
        // The second one is durable first: nothing may be sent yet.
        assert!(
            sent(&s.on(
                Event::Resolved {
                    token: t2,
                    disposition: stored()
                },
                &auth()
            ))
            .is_empty()
        );
        let acks = sent(&s.on(
            Event::Resolved {
                token: t1,
                disposition: stored(),
            },
            &auth(),
        ));
        assert_eq!(
            acks,
            vec![
                Outbound::PubAck {
                    pkid: 1,
                    reason: AckReason::Success
                },
                Outbound::PubAck {
                    pkid: 2,
                    reason: AckReason::Success
                }
            ]
        );
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn a_frame_the_buffer_refuses_as_invalid_is_acked_as_payload_invalid_and_the_session_goes_on() {
        let mut s = session();
        connect(&mut s, Version::V5, "site", "pw");
        let t1 = handles(&s.on(publish("mrv/s1/d1/up", Qos::AtLeastOnce, 1), &auth()))[0];
        let acks = sent(&s.on(
            Event::Resolved {
                token: t1,
                disposition: Disposition::Stored(AppendOutcome::Invalid),
            },
            &auth(),
        ));
        assert_eq!(
            acks,
            vec![Outbound::PubAck {
                pkid: 1,
                reason: AckReason::PayloadInvalid
            }]
        );
        let t2 = handles(&s.on(publish("mrv/s1/d1/up", Qos::AtLeastOnce, 2), &auth()))[0];
        let acks = sent(&s.on(
            Event::Resolved {
                token: t2,
                disposition: stored(),
            },
            &auth(),
        ));
        assert_eq!(
            acks,
            vec![Outbound::PubAck {
                pkid: 2,
                reason: AckReason::Success
            }]
        );
    }

    #[test]
    fn reading_stops_when_the_inflight_window_is_full() {
        let mut s = session();
        connect(&mut s, Version::V311, "site", "pw");
        let mut tokens = vec![];
        for pkid in 1..=3 {
            tokens.extend(handles(
                &s.on(publish("mrv/s1/d1/up", Qos::AtLeastOnce, pkid), &auth()),
            ));
        }
        assert!(!s.wants_read());
        s.on(
            Event::Resolved {
                token: tokens[0],
                disposition: stored(),
            },
            &auth(),
        );
        assert!(s.wants_read());
    }

    #[test]
    fn a_publish_refused_for_space_is_not_acked_but_retried_and_blocks_reading() {
        let mut s = session();
        connect(&mut s, Version::V5, "site", "pw");
        let t = handles(&s.on(publish("mrv/s1/d1/up", Qos::AtLeastOnce, 5), &auth()))[0];
        let a = s.on(
            Event::Resolved {
                token: t,
                disposition: Disposition::Stored(AppendOutcome::BufferFull),
            },
            &auth(),
        );
        assert!(sent(&a).is_empty());
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::ArmRetry { token, .. } if *token == t))
        );
        assert!(!s.wants_read());
        let again = s.on(Event::RetryDue { token: t }, &auth());
        assert_eq!(handles(&again), vec![t]);
        let a = s.on(
            Event::Resolved {
                token: t,
                disposition: stored(),
            },
            &auth(),
        );
        assert_eq!(
            sent(&a),
            vec![Outbound::PubAck {
                pkid: 5,
                reason: AckReason::Success
            }]
        );
        assert!(s.wants_read());
    }

    #[test]
    fn a_failed_write_closes_without_acking() {
        let mut s = session();
        connect(&mut s, Version::V311, "site", "pw");
        let t = handles(&s.on(publish("mrv/s1/d1/up", Qos::AtLeastOnce, 1), &auth()))[0];
        let a = s.on(
            Event::Resolved {
                token: t,
                disposition: Disposition::WriteFailed,
            },
            &auth(),
        );
        assert!(sent(&a).is_empty());
        assert!(matches!(
            a.last(),
            Some(Action::Close(CloseReason::WriteFailed))
        ));
    }

    #[test]
    fn a_wrong_password_is_refused_with_connack_and_closed() {
        let mut s = session();
        let a = connect(&mut s, Version::V311, "site", "nope");
        assert!(matches!(
            sent(&a)[..],
            [Outbound::ConnAck {
                code: ConnectCode::BadCredentials,
                ..
            }]
        ));
        assert!(matches!(
            a.last(),
            Some(Action::Close(CloseReason::AuthFailed { .. }))
        ));
        assert!(!s.wants_read());
    }

    #[test]
    fn a_device_credential_may_not_publish_for_another_device() {
        // 3.1.1: closed.
        let mut s = session();
        connect(&mut s, Version::V311, "d1", "pw1");
        assert!(!handles(&s.on(publish("mrv/s1/d1/up", Qos::AtLeastOnce, 1), &auth())).is_empty());
        let a = s.on(publish("mrv/s1/d2/up", Qos::AtLeastOnce, 2), &auth());
        assert!(matches!(
            a.last(),
            Some(Action::Close(CloseReason::NotAuthorized { .. }))
        ));
        // 5: refused with reason 0x87 in order, connection stays.
        let mut s = session();
        connect(&mut s, Version::V5, "d1", "pw1");
        let a = s.on(publish("mrv/s1/d2/up", Qos::AtLeastOnce, 2), &auth());
        assert_eq!(
            sent(&a),
            vec![Outbound::PubAck {
                pkid: 2,
                reason: AckReason::NotAuthorized
            }]
        );
        assert!(s.wants_read());
    }

    #[test]
    fn only_the_own_ack_topic_may_be_subscribed() {
        let mut s = session();
        connect(&mut s, Version::V311, "d1", "pw1");
        let a = s.on(
            Event::Packet(Inbound::Subscribe {
                pkid: 4,
                filters: vec![
                    ("mrv/s1/d1/ack".into(), Qos::AtLeastOnce),
                    ("mrv/s1/d2/ack".into(), Qos::AtLeastOnce),
                    ("#".into(), Qos::AtMostOnce),
                ],
            }),
            &auth(),
        );
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::Route(d) if d.as_str() == "d1"))
        );
        assert_eq!(
            sent(&a),
            vec![Outbound::SubAck {
                pkid: 4,
                codes: vec![
                    SubscribeCode::Granted(Qos::AtMostOnce),
                    SubscribeCode::NotAuthorized,
                    SubscribeCode::NotAuthorized
                ]
            }]
        );
    }

    #[test]
    fn qos2_gets_pubrec_after_the_outcome_and_pubcomp_on_release() {
        let mut s = session();
        connect(&mut s, Version::V5, "site", "pw");
        let t = handles(&s.on(publish("mrv/s1/d1/up", Qos::ExactlyOnce, 9), &auth()))[0];
        let a = s.on(
            Event::Resolved {
                token: t,
                disposition: stored(),
            },
            &auth(),
        );
        assert_eq!(
            sent(&a),
            vec![Outbound::PubRec {
                pkid: 9,
                reason: AckReason::Success
            }]
        );
        // A re-send before PUBREL is not handled again.
        let a = s.on(publish("mrv/s1/d1/up", Qos::ExactlyOnce, 9), &auth());
        assert!(handles(&a).is_empty());
        assert_eq!(
            sent(&a),
            vec![Outbound::PubRec {
                pkid: 9,
                reason: AckReason::Success
            }]
        );
        let a = s.on(Event::Packet(Inbound::PubRel { pkid: 9 }), &auth());
        assert_eq!(sent(&a), vec![Outbound::PubComp { pkid: 9 }]);
    }

    #[test]
    fn qos0_is_handled_but_never_acked() {
        let mut s = session();
        connect(&mut s, Version::V311, "site", "pw");
        let a = s.on(publish("mrv/s1/d1/up", Qos::AtMostOnce, 0), &auth());
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::Note(Note::Received(Qos::AtMostOnce))))
        );
        let t = handles(&a)[0];
        assert!(
            sent(&s.on(
                Event::Resolved {
                    token: t,
                    disposition: stored()
                },
                &auth()
            ))
            .is_empty()
        );
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn a_second_connect_or_a_topic_alias_is_a_protocol_error() {
        let mut s = session();
        connect(&mut s, Version::V311, "site", "pw");
        let a = connect(&mut s, Version::V311, "site", "pw");
        assert!(matches!(
            a.last(),
            Some(Action::Close(CloseReason::ProtocolError(_)))
        ));
        let mut s = session();
        connect(&mut s, Version::V5, "site", "pw");
        let a = s.on(
            Event::Packet(Inbound::Publish(PublishPacket {
                topic: String::new(),
                payload: bytes::Bytes::new(),
                qos: Qos::AtLeastOnce,
                pkid: 1,
                retain: false,
                dup: false,
                topic_alias: Some(1),
            })),
            &auth(),
        );
        assert!(matches!(
            sent(&a)[..],
            [Outbound::Disconnect(DisconnectReason::TopicAliasInvalid)]
        ));
    }
}
