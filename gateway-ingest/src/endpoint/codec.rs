//! Bytes <-> packets, for MQTT 3.1.1 and 5, on rumqttc's `mqttbytes` codec.
//!
//! We do not encode or decode MQTT ourselves: rumqttc's v4 (3.1.1) and v5
//! modules do. This module only
//! - tells the version from the first packet (CONNECT) and then keeps it;
//! - turns the codec's packet types into the endpoint's small, version-neutral
//!   [`Inbound`] / [`Outbound`] enums, so the session logic is written once;
//! - maps codec errors to [`WireError`], "incomplete" being `Ok(None)` with
//!   the buffer left as it was.
//!
//! One gap of the v5 codec is bridged here: it refuses a DISCONNECT with
//! remaining length 0, which MQTT 5 (3.14.2.1) allows and mosquitto sends;
//! we read it as a normal disconnection.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self as m4b, v4};
use rumqttc::v5::mqttbytes::{self as m5b, v5};

/// Protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

impl Version {
    /// As written in logs.
    pub fn name(self) -> &'static str {
        match self {
            Version::V311 => "3.1.1",
            Version::V5 => "5",
        }
    }
}

/// Quality of service of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qos {
    /// At most once: no acknowledgement.
    AtMostOnce,
    /// At least once: PUBACK.
    AtLeastOnce,
    /// Exactly once: PUBREC / PUBREL / PUBCOMP.
    ExactlyOnce,
}

impl Qos {
    /// 0, 1 or 2.
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        }
    }
}

/// What a client asked for in CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Protocol version.
    pub version: Version,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5).
    pub clean_start: bool,
    /// Keep-alive, seconds (0 = none).
    pub keep_alive_s: u16,
    /// User name, if sent.
    pub username: Option<String>,
    /// Password, if sent (never logged).
    pub password: Option<String>,
    /// A will was set (accepted, never published).
    pub has_will: bool,
    /// MQTT 5: session expiry the client asked for, seconds.
    pub session_expiry_s: Option<u32>,
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("version", &self.version)
            .field("client_id", &self.client_id)
            .field("clean_start", &self.clean_start)
            .field("keep_alive_s", &self.keep_alive_s)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("has_will", &self.has_will)
            .finish()
    }
}

/// A PUBLISH from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishPacket {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: Qos,
    /// Packet id (0 for QoS 0).
    pub pkid: u16,
    /// Retain flag.
    pub retain: bool,
    /// Re-delivery flag.
    pub dup: bool,
    /// MQTT 5 topic alias, if the client used one (we allow none).
    pub topic_alias: Option<u16>,
}

/// A packet from a client, whatever its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// CONNECT.
    Connect(ConnectRequest),
    /// PUBLISH.
    Publish(PublishPacket),
    /// PUBACK of a QoS 1 message we sent.
    PubAck {
        /// Packet id.
        pkid: u16,
    },
    /// PUBREC of a QoS 2 message we sent (we send none).
    PubRec {
        /// Packet id.
        pkid: u16,
    },
    /// PUBREL: second step of a client's QoS 2 publish.
    PubRel {
        /// Packet id.
        pkid: u16,
    },
    /// PUBCOMP of a QoS 2 message we sent (we send none).
    PubComp {
        /// Packet id.
        pkid: u16,
    },
    /// SUBSCRIBE.
    Subscribe {
        /// Packet id.
        pkid: u16,
        /// Topic filters and requested QoS.
        filters: Vec<(String, Qos)>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        pkid: u16,
        /// Topic filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT (normal or with a reason).
    Disconnect,
    /// A packet a client must not send to a server (CONNACK, SUBACK, ...) or
    /// MQTT 5 AUTH (no enhanced authentication here).
    Unexpected(&'static str),
}

/// Result of a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCode {
    /// Accepted.
    Accepted,
    /// Protocol version not supported.
    UnsupportedVersion,
    /// Client id refused.
    BadClientId,
    /// Wrong user name or password.
    BadCredentials,
    /// Not allowed to connect.
    NotAuthorized,
    /// Too many connections.
    ServerBusy,
}

/// Reason in a PUBACK / PUBREC (MQTT 5 only; 3.1.1 has no negative acks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckReason {
    /// Durably stored (or already stored).
    Success,
    /// Handled, but the payload was refused (invalid, counted, quarantined).
    PayloadInvalid,
    /// This client may not publish on this topic.
    NotAuthorized,
    /// Handled, not stored, for a reason the device protocol reports itself
    /// (a later boot re-used a sequence number).
    ImplementationSpecific,
}

/// Result of one subscription request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeCode {
    /// Granted at this QoS.
    Granted(Qos),
    /// Refused: this client may not subscribe to this filter.
    NotAuthorized,
}

/// Why the server closes a connection (sent as DISCONNECT to MQTT 5 clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// Malformed packet.
    Malformed,
    /// Protocol violation.
    ProtocolError,
    /// Not authorized (e.g. publishing on another device's topic).
    NotAuthorized,
    /// No packet for 1.5 x keep-alive.
    KeepAliveTimeout,
    /// Another connection with the same client id.
    SessionTakenOver,
    /// Packet larger than the limit.
    PacketTooLarge,
    /// More unacknowledged publishes than Receive Maximum.
    ReceiveMaximumExceeded,
    /// The gateway stops.
    ShuttingDown,
    /// The buffer failed a write; the gateway restarts.
    ServerError,
    /// A topic alias was used (we allow none).
    TopicAliasInvalid,
}

/// A packet to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// CONNACK.
    ConnAck {
        /// Result.
        code: ConnectCode,
        /// MQTT 5: advertised Receive Maximum.
        receive_maximum: u16,
        /// MQTT 5: advertised Maximum Packet Size.
        max_packet_bytes: u32,
        /// MQTT 5: the id we assigned when the client sent an empty one.
        assigned_client_id: Option<String>,
    },
    /// PUBACK.
    PubAck {
        /// Packet id.
        pkid: u16,
        /// Reason (MQTT 5).
        reason: AckReason,
    },
    /// PUBREC.
    PubRec {
        /// Packet id.
        pkid: u16,
        /// Reason (MQTT 5).
        reason: AckReason,
    },
    /// PUBCOMP.
    PubComp {
        /// Packet id.
        pkid: u16,
    },
    /// SUBACK.
    SubAck {
        /// Packet id.
        pkid: u16,
        /// One per filter, in order.
        codes: Vec<SubscribeCode>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Packet id.
        pkid: u16,
        /// How many filters were in the request.
        count: usize,
    },
    /// PINGRESP.
    PingResp,
    /// A QoS 0 PUBLISH (application acks to devices).
    Publish {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Bytes,
    },
    /// DISCONNECT (MQTT 5 only; nothing is sent to a 3.1.1 client).
    Disconnect(DisconnectReason),
}

/// Why bytes from a client are not a packet we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The packet announces more bytes than the limit.
    #[error("packet of {size} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// The first packet was not a CONNECT.
    #[error("first packet is not CONNECT")]
    NotConnect,
    /// A protocol name/level we do not speak (e.g. MQTT 3.1 "MQIsdp").
    #[error("unsupported protocol: {0}")]
    UnsupportedProtocol(String),
    /// Anything else the codec refused.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// Reads the first packet (must be CONNECT) and tells the version.
/// `Ok(None)`: more bytes needed, `buf` untouched.
pub fn decode_connect(buf: &mut BytesMut, max: usize) -> Result<Option<Inbound>, WireError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] >> 4 != 1 {
        return Err(WireError::NotConnect);
    }
    // Try MQTT 5 on a copy (a CONNECT is small): the v5 reader refuses
    // protocol level 4 with a distinct error, then the 3.1.1 reader runs.
    let mut copy = buf.clone();
    match v5::Packet::read(&mut copy, Some(max as u32)) {
        Ok(v5::Packet::Connect(c, will, login)) => {
            *buf = copy;
            Ok(Some(Inbound::Connect(ConnectRequest {
                version: Version::V5,
                client_id: c.client_id,
                clean_start: c.clean_start,
                keep_alive_s: c.keep_alive,
                username: login.as_ref().map(|l| l.username.clone()),
                password: login.map(|l| l.password),
                has_will: will.is_some(),
                session_expiry_s: c.properties.and_then(|p| p.session_expiry_interval),
            })))
        }
        Ok(_) => Err(WireError::NotConnect),
        Err(m5b::Error::InsufficientBytes(_)) => Ok(None),
        Err(m5b::Error::InvalidProtocolLevel(4)) => decode_v4(buf, max),
        Err(m5b::Error::InvalidProtocolLevel(l)) => Err(WireError::UnsupportedProtocol(format!(
            "protocol level {l} (only 4 = MQTT 3.1.1 and 5 are spoken)"
        ))),
        Err(m5b::Error::InvalidProtocol) => Err(WireError::UnsupportedProtocol(
            "protocol name is not \"MQTT\" (MQTT 3.1 \"MQIsdp\" is not supported)".into(),
        )),
        Err(e) => Err(v5_error(e, max)),
    }
}

/// Reads the next packet of a connection whose version is known.
/// `Ok(None)`: more bytes needed, `buf` untouched.
pub fn decode(
    buf: &mut BytesMut,
    version: Version,
    max: usize,
) -> Result<Option<Inbound>, WireError> {
    match version {
        Version::V311 => decode_v4(buf, max),
        Version::V5 => decode_v5(buf, max),
    }
}

fn decode_v4(buf: &mut BytesMut, max: usize) -> Result<Option<Inbound>, WireError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let p = match v4::Packet::read(buf, max) {
        Ok(p) => p,
        Err(m4b::Error::InsufficientBytes(_)) => return Ok(None),
        Err(m4b::Error::PayloadSizeLimitExceeded(size)) => {
            return Err(WireError::TooLarge { size, max });
        }
        Err(e) => return Err(WireError::Malformed(e.to_string())),
    };
    Ok(Some(match p {
        v4::Packet::Connect(c) => match c.protocol {
            m4b::Protocol::V4 => Inbound::Connect(ConnectRequest {
                version: Version::V311,
                client_id: c.client_id,
                clean_start: c.clean_session,
                keep_alive_s: c.keep_alive,
                username: c.login.as_ref().map(|l| l.username.clone()),
                password: c.login.map(|l| l.password),
                has_will: c.last_will.is_some(),
                session_expiry_s: None,
            }),
            m4b::Protocol::V5 => {
                return Err(WireError::Malformed(
                    "MQTT 5 CONNECT on a 3.1.1 connection".into(),
                ));
            }
        },
        v4::Packet::Publish(p) => Inbound::Publish(PublishPacket {
            topic: p.topic,
            payload: p.payload,
            qos: qos4(p.qos),
            pkid: p.pkid,
            retain: p.retain,
            dup: p.dup,
            topic_alias: None,
        }),
        v4::Packet::PubAck(a) => Inbound::PubAck { pkid: a.pkid },
        v4::Packet::PubRec(a) => Inbound::PubRec { pkid: a.pkid },
        v4::Packet::PubRel(a) => Inbound::PubRel { pkid: a.pkid },
        v4::Packet::PubComp(a) => Inbound::PubComp { pkid: a.pkid },
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos4(f.qos)))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect,
        v4::Packet::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        v4::Packet::SubAck(_) => Inbound::Unexpected("SUBACK"),
        v4::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v4::Packet::PingResp => Inbound::Unexpected("PINGRESP"),
    }))
}

fn decode_v5(buf: &mut BytesMut, max: usize) -> Result<Option<Inbound>, WireError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let first = buf[0];
    let p = match v5::Packet::read(buf, Some(max as u32)) {
        Ok(p) => p,
        Err(m5b::Error::InsufficientBytes(_)) => return Ok(None),
        // The codec gap: DISCONNECT with remaining length 0 is a normal
        // disconnection in MQTT 5 (the two bytes were consumed).
        Err(m5b::Error::PayloadRequired) if first == 0xE0 => return Ok(Some(Inbound::Disconnect)),
        Err(e) => return Err(v5_error(e, max)),
    };
    Ok(Some(match p {
        v5::Packet::Connect(..) => Inbound::Unexpected("a second CONNECT"),
        v5::Packet::Publish(p) => Inbound::Publish(PublishPacket {
            topic: String::from_utf8(p.topic.to_vec())
                .map_err(|_| WireError::Malformed("topic is not UTF-8".into()))?,
            payload: p.payload,
            qos: qos5(p.qos),
            pkid: p.pkid,
            retain: p.retain,
            dup: p.dup,
            topic_alias: p.properties.and_then(|pr| pr.topic_alias),
        }),
        v5::Packet::PubAck(a) => Inbound::PubAck { pkid: a.pkid },
        v5::Packet::PubRec(a) => Inbound::PubRec { pkid: a.pkid },
        v5::Packet::PubRel(a) => Inbound::PubRel { pkid: a.pkid },
        v5::Packet::PubComp(a) => Inbound::PubComp { pkid: a.pkid },
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos5(f.qos)))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(_) => Inbound::Disconnect,
        v5::Packet::Auth(_) => {
            Inbound::Unexpected("AUTH (enhanced authentication is not supported)")
        }
        v5::Packet::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        v5::Packet::SubAck(_) => Inbound::Unexpected("SUBACK"),
        v5::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v5::Packet::PingResp(_) => Inbound::Unexpected("PINGRESP"),
    }))
}

fn v5_error(e: m5b::Error, max: usize) -> WireError {
    match e {
        m5b::Error::PayloadSizeLimitExceeded { pkt_size, .. } => WireError::TooLarge {
            size: pkt_size,
            max,
        },
        e => WireError::Malformed(e.to_string()),
    }
}

fn qos4(q: m4b::QoS) -> Qos {
    match q {
        m4b::QoS::AtMostOnce => Qos::AtMostOnce,
        m4b::QoS::AtLeastOnce => Qos::AtLeastOnce,
        m4b::QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

fn qos5(q: m5b::QoS) -> Qos {
    match q {
        m5b::QoS::AtMostOnce => Qos::AtMostOnce,
        m5b::QoS::AtLeastOnce => Qos::AtLeastOnce,
        m5b::QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

fn to_qos4(q: Qos) -> m4b::QoS {
    match q {
        Qos::AtMostOnce => m4b::QoS::AtMostOnce,
        Qos::AtLeastOnce => m4b::QoS::AtLeastOnce,
        Qos::ExactlyOnce => m4b::QoS::ExactlyOnce,
    }
}

fn to_qos5(q: Qos) -> m5b::QoS {
    match q {
        Qos::AtMostOnce => m5b::QoS::AtMostOnce,
        Qos::AtLeastOnce => m5b::QoS::AtLeastOnce,
        Qos::ExactlyOnce => m5b::QoS::ExactlyOnce,
    }
}

/// Appends `packet` to `out` in the connection's version. A DISCONNECT to a
/// 3.1.1 client writes nothing (3.1.1 servers just close).
pub fn encode(packet: &Outbound, version: Version, out: &mut BytesMut) {
    let r = match version {
        Version::V311 => encode_v4(packet, out),
        Version::V5 => encode_v5(packet, out),
    };
    // The codec fails only on a packet over its size limit; ours are small
    // (acks, CONNACK, SUBACK) and written without a limit.
    if let Err(e) = r {
        tracing::error!(error = %e, ?packet, "cannot encode an MQTT packet; it is not sent");
    }
}

fn encode_v4(packet: &Outbound, out: &mut BytesMut) -> Result<(), String> {
    let p = match packet {
        Outbound::ConnAck { code, .. } => v4::Packet::ConnAck(v4::ConnAck::new(
            match code {
                ConnectCode::Accepted => v4::ConnectReturnCode::Success,
                ConnectCode::UnsupportedVersion => v4::ConnectReturnCode::RefusedProtocolVersion,
                ConnectCode::BadClientId => v4::ConnectReturnCode::BadClientId,
                ConnectCode::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
                ConnectCode::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
                ConnectCode::ServerBusy => v4::ConnectReturnCode::ServiceUnavailable,
            },
            false,
        )),
        Outbound::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(*pkid)),
        Outbound::PubRec { pkid, .. } => v4::Packet::PubRec(v4::PubRec::new(*pkid)),
        Outbound::PubComp { pkid } => v4::Packet::PubComp(v4::PubComp::new(*pkid)),
        Outbound::SubAck { pkid, codes } => v4::Packet::SubAck(v4::SubAck::new(
            *pkid,
            codes
                .iter()
                .map(|c| match c {
                    SubscribeCode::Granted(q) => v4::SubscribeReasonCode::Success(to_qos4(*q)),
                    SubscribeCode::NotAuthorized => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Outbound::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(*pkid)),
        Outbound::PingResp => v4::Packet::PingResp,
        Outbound::Publish { topic, payload } => v4::Packet::Publish(v4::Publish::from_bytes(
            topic.clone(),
            m4b::QoS::AtMostOnce,
            payload.clone(),
        )),
        Outbound::Disconnect(_) => return Ok(()),
    };
    p.write(out, usize::MAX)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn encode_v5(packet: &Outbound, out: &mut BytesMut) -> Result<(), String> {
    let ack_reason = |r: &AckReason| match r {
        AckReason::Success => v5::PubAckReason::Success,
        AckReason::PayloadInvalid => v5::PubAckReason::PayloadFormatInvalid,
        AckReason::NotAuthorized => v5::PubAckReason::NotAuthorized,
        AckReason::ImplementationSpecific => v5::PubAckReason::ImplementationSpecificError,
    };
    let p = match packet {
        Outbound::ConnAck {
            code,
            receive_maximum,
            max_packet_bytes,
            assigned_client_id,
        } => {
            let accepted = *code == ConnectCode::Accepted;
            v5::Packet::ConnAck(v5::ConnAck {
                session_present: false,
                code: match code {
                    ConnectCode::Accepted => v5::ConnectReturnCode::Success,
                    ConnectCode::UnsupportedVersion => {
                        v5::ConnectReturnCode::UnsupportedProtocolVersion
                    }
                    ConnectCode::BadClientId => v5::ConnectReturnCode::ClientIdentifierNotValid,
                    ConnectCode::BadCredentials => v5::ConnectReturnCode::BadUserNamePassword,
                    ConnectCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                    ConnectCode::ServerBusy => v5::ConnectReturnCode::ServerBusy,
                },
                properties: accepted.then(|| v5::ConnAckProperties {
                    // No session outlives its connection.
                    session_expiry_interval: Some(0),
                    receive_max: Some(*receive_maximum),
                    max_qos: None,
                    retain_available: None,
                    max_packet_size: Some(*max_packet_bytes),
                    assigned_client_identifier: assigned_client_id.clone(),
                    topic_alias_max: None,
                    reason_string: None,
                    user_properties: Vec::new(),
                    wildcard_subscription_available: Some(0),
                    subscription_identifiers_available: Some(0),
                    shared_subscription_available: Some(0),
                    server_keep_alive: None,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                }),
            })
        }
        Outbound::PubAck { pkid, reason } => v5::Packet::PubAck(v5::PubAck {
            pkid: *pkid,
            reason: ack_reason(reason),
            properties: None,
        }),
        Outbound::PubRec { pkid, reason } => v5::Packet::PubRec(v5::PubRec {
            pkid: *pkid,
            reason: match ack_reason(reason) {
                v5::PubAckReason::Success => v5::PubRecReason::Success,
                v5::PubAckReason::PayloadFormatInvalid => v5::PubRecReason::PayloadFormatInvalid,
                v5::PubAckReason::NotAuthorized => v5::PubRecReason::NotAuthorized,
                _ => v5::PubRecReason::ImplementationSpecificError,
            },
            properties: None,
        }),
        Outbound::PubComp { pkid } => v5::Packet::PubComp(v5::PubComp::new(*pkid, None)),
        Outbound::SubAck { pkid, codes } => v5::Packet::SubAck(v5::SubAck {
            pkid: *pkid,
            return_codes: codes
                .iter()
                .map(|c| match c {
                    SubscribeCode::Granted(q) => v5::SubscribeReasonCode::Success(to_qos5(*q)),
                    SubscribeCode::NotAuthorized => v5::SubscribeReasonCode::NotAuthorized,
                })
                .collect(),
            properties: None,
        }),
        Outbound::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid: *pkid,
            reasons: vec![v5::UnsubAckReason::Success; *count],
            properties: None,
        }),
        Outbound::PingResp => v5::Packet::PingResp(v5::PingResp),
        Outbound::Publish { topic, payload } => v5::Packet::Publish(v5::Publish::new(
            topic.clone(),
            m5b::QoS::AtMostOnce,
            payload.clone(),
            None,
        )),
        Outbound::Disconnect(reason) => v5::Packet::Disconnect(v5::Disconnect::new(match reason {
            DisconnectReason::Malformed => v5::DisconnectReasonCode::MalformedPacket,
            DisconnectReason::ProtocolError => v5::DisconnectReasonCode::ProtocolError,
            DisconnectReason::NotAuthorized => v5::DisconnectReasonCode::NotAuthorized,
            DisconnectReason::KeepAliveTimeout => v5::DisconnectReasonCode::KeepAliveTimeout,
            DisconnectReason::SessionTakenOver => v5::DisconnectReasonCode::SessionTakenOver,
            DisconnectReason::PacketTooLarge => v5::DisconnectReasonCode::PacketTooLarge,
            DisconnectReason::ReceiveMaximumExceeded => {
                v5::DisconnectReasonCode::ReceiveMaximumExceeded
            }
            DisconnectReason::ShuttingDown => v5::DisconnectReasonCode::ServerShuttingDown,
            DisconnectReason::ServerError => v5::DisconnectReasonCode::UnspecifiedError,
            DisconnectReason::TopicAliasInvalid => v5::DisconnectReasonCode::TopicAliasInvalid,
        })),
    };
    p.write(out, None).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_bytes(p: v4::Packet) -> BytesMut {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).expect("encodes");
        b
    }

    fn v5_bytes(p: v5::Packet) -> BytesMut {
        let mut b = BytesMut::new();
        p.write(&mut b, None).expect("encodes");
        b
    }

    #[test]
    fn a_3_1_1_connect_is_recognised_with_its_login() {
        let mut c = v4::Connect::new("dev-1");
        c.set_login("user", "pw");
        c.keep_alive = 30;
        let mut b = v4_bytes(v4::Packet::Connect(c));
        let Some(Inbound::Connect(r)) = decode_connect(&mut b, 1024).expect("valid") else {
            panic!("not a connect")
        };
        assert_eq!(r.version, Version::V311);
        assert_eq!(r.client_id, "dev-1");
        assert_eq!(r.username.as_deref(), Some("user"));
        assert_eq!(r.password.as_deref(), Some("pw"));
        assert_eq!(r.keep_alive_s, 30);
        assert!(b.is_empty());
    }

    #[test]
    fn a_5_connect_is_recognised() {
        let c = v5::Connect {
            keep_alive: 10,
            client_id: "dev-5".into(),
            clean_start: true,
            properties: None,
        };
        let mut b = v5_bytes(v5::Packet::Connect(c, None, Some(v5::Login::new("u", "p"))));
        let Some(Inbound::Connect(r)) = decode_connect(&mut b, 1024).expect("valid") else {
            panic!("not a connect")
        };
        assert_eq!(r.version, Version::V5);
        assert_eq!(r.client_id, "dev-5");
        assert_eq!(r.username.as_deref(), Some("u"));
    }

    #[test]
    fn half_a_packet_is_incomplete_and_leaves_the_buffer_alone() {
        let mut full = v4_bytes(v4::Packet::Connect(v4::Connect::new("dev-1")));
        let mut half = full.split_to(full.len() / 2);
        let before = half.clone();
        assert_eq!(decode_connect(&mut half, 1024), Ok(None));
        assert_eq!(half, before);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let mut b = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert_eq!(decode_connect(&mut b, 1024), Err(WireError::NotConnect));
        let mut b = BytesMut::from(&[0x10u8, 0x05, 0, 3, b'a', b'b', b'c'][..]);
        assert!(matches!(
            decode_connect(&mut b, 1024),
            Err(WireError::Malformed(_) | WireError::UnsupportedProtocol(_))
        ));
    }

    #[test]
    fn an_oversized_publish_is_refused_from_its_header_alone() {
        // Fixed header announcing 100,000 bytes; the body never needs to arrive.
        let mut b = BytesMut::from(&[0x32u8, 0xA0, 0x8D, 0x06][..]);
        assert!(matches!(
            decode(&mut b, Version::V311, 4096),
            Err(WireError::TooLarge {
                size: 100_000,
                max: 4096
            })
        ));
        let mut b = BytesMut::from(&[0x32u8, 0xA0, 0x8D, 0x06][..]);
        assert!(matches!(
            decode(&mut b, Version::V5, 4096),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn an_empty_v5_disconnect_is_a_normal_disconnection() {
        let mut b = BytesMut::from(&[0xE0u8, 0x00][..]);
        assert_eq!(
            decode(&mut b, Version::V5, 1024),
            Ok(Some(Inbound::Disconnect))
        );
        assert!(b.is_empty());
    }

    #[test]
    fn a_v311_puback_is_four_bytes_and_a_v5_refusal_carries_its_reason() {
        let mut out = BytesMut::new();
        encode(
            &Outbound::PubAck {
                pkid: 7,
                reason: AckReason::Success,
            },
            Version::V311,
            &mut out,
        );
        assert_eq!(&out[..], &[0x40, 0x02, 0x00, 0x07]);
        let mut out = BytesMut::new();
        encode(
            &Outbound::PubAck {
                pkid: 7,
                reason: AckReason::NotAuthorized,
            },
            Version::V5,
            &mut out,
        );
        assert_eq!(&out[..4], &[0x40, 0x04, 0x00, 0x07]);
        assert_eq!(out[4], 0x87);
    }

    #[test]
    fn publishes_round_trip_in_both_versions() {
        let mut p = v4::Publish::new("mrv/s/d/up", m4b::QoS::AtLeastOnce, vec![1, 2, 3]);
        p.pkid = 9;
        let mut b = v4_bytes(v4::Packet::Publish(p));
        let Some(Inbound::Publish(got)) = decode(&mut b, Version::V311, 1024).expect("valid")
        else {
            panic!()
        };
        assert_eq!(
            (got.topic.as_str(), got.pkid, got.qos),
            ("mrv/s/d/up", 9, Qos::AtLeastOnce)
        );
        let mut p = v5::Publish::new("mrv/s/d/up", m5b::QoS::ExactlyOnce, vec![4u8], None);
        p.pkid = 3;
        let mut b = v5_bytes(v5::Packet::Publish(p));
        let Some(Inbound::Publish(got)) = decode(&mut b, Version::V5, 1024).expect("valid") else {
            panic!()
        };
        assert_eq!(
            (got.pkid, got.qos, &got.payload[..]),
            (3, Qos::ExactlyOnce, &[4u8][..])
        );
    }
}
