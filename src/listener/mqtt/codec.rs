//! A thin wrapper around the `rmqtt-codec` crate: one port speaks MQTT 3.1.1 and 5.0.
//! The first packet (CONNECT) selects the version; the session then sees one set of
//! version-neutral packet types ([`In`], [`Out`]) so the protocol logic is written once.
//! Keeping the crate behind this file means it can be swapped (for `mqtt5-protocol`, or a
//! hand-written codec) without touching the session.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use rmqtt_codec::types::QoS;
use rmqtt_codec::version::{ProtocolVersion, VersionCodec};
use rmqtt_codec::{MqttCodec, MqttPacket, v3, v5};
use tokio_util::codec::{Decoder, Encoder};

/// The negotiated protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V3,
    V5,
}

/// MQTT 5 publish properties (all empty for 3.1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    pub content_type: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub response_topic: Option<String>,
    /// Message expiry interval, seconds.
    pub expiry: Option<u32>,
    pub user: Vec<(String, String)>,
    /// Payload format indicator: the payload is UTF-8.
    pub utf8: bool,
    pub topic_alias: Option<u16>,
    pub subscription_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub retain: bool,
    pub qos: u8,
    pub topic: String,
    pub packet_id: Option<u16>,
    pub payload: Bytes,
    pub props: Props,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub publish: Publish,
    /// Will delay interval, seconds (5.0).
    pub delay: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    pub clean_start: bool,
    pub keep_alive: u16,
    /// Session expiry interval, seconds (5.0; for 3.1.1: 0 with clean session, else "never").
    pub session_expiry: u32,
    pub receive_max: u16,
    pub max_packet_size: Option<u32>,
    pub topic_alias_max: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub will: Option<Will>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOpts {
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0 send retained at subscribe, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
}

/// Packets from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum In {
    Connect(Box<Connect>),
    Publish(Box<Publish>),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        packet_id: u16,
        subscription_id: Option<u32>,
        filters: Vec<(String, SubOpts)>,
    },
    Unsubscribe {
        packet_id: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        reason: u8,
        session_expiry: Option<u32>,
    },
    /// A packet a client must not send (CONNACK, SUBACK, AUTH, …).
    Unexpected(&'static str),
}

/// Packets to the client. Reason codes are MQTT 5 codes; for 3.1.1 they are mapped to
/// what that version can say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    ConnAck {
        session_present: bool,
        code: u8,
        assigned_client_id: Option<String>,
        server_keep_alive: Option<u16>,
        receive_max: u16,
        max_packet_size: Option<u32>,
        session_expiry: Option<u32>,
        reason: Option<String>,
    },
    Publish(Box<Publish>),
    PubAck {
        packet_id: u16,
        code: u8,
    },
    PubRec {
        packet_id: u16,
        code: u8,
    },
    PubRel {
        packet_id: u16,
        code: u8,
    },
    PubComp {
        packet_id: u16,
        code: u8,
    },
    SubAck {
        packet_id: u16,
        codes: Vec<u8>,
    },
    UnsubAck {
        packet_id: u16,
        codes: Vec<u8>,
    },
    PingResp,
    Disconnect {
        code: u8,
        reason: Option<String>,
    },
    /// Bytes written as they are (a refusal before any version was agreed).
    Raw(Bytes),
}

/// Decode or protocol errors, with the MQTT 5 reason code to disconnect with.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("packet too large: {size} bytes, limit {max}")]
    TooLarge { size: u32, max: u32 },
    #[error("unsupported protocol: {0}")]
    Protocol(String),
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("{0}")]
    Topic(String),
    #[error("invalid client id (an empty one needs a clean session)")]
    ClientId,
    #[error("{0}")]
    Filter(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl CodecError {
    /// The MQTT 5 DISCONNECT / CONNACK reason code for this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            Self::TooLarge { .. } => 0x95,
            Self::Protocol(_) => 0x84,
            Self::Topic(_) => 0x90,
            Self::ClientId => 0x85,
            Self::Filter(_) => 0x8F,
            _ => 0x81,
        }
    }
}

impl From<rmqtt_codec::error::DecodeError> for CodecError {
    fn from(e: rmqtt_codec::error::DecodeError) -> Self {
        use rmqtt_codec::error::DecodeError as D;
        match e {
            D::MaxSizeExceeded { size, max } => Self::TooLarge { size, max },
            D::InvalidProtocol | D::UnsupportedProtocolLevel => Self::Protocol(e.to_string()),
            D::InvalidTopicName => Self::Topic(e.to_string()),
            D::InvalidClientId => Self::ClientId,
            D::InvalidTopicFilter => Self::Filter(e.to_string()),
            D::Io(io) => Self::Io(std::io::Error::other(io.to_string())),
            other => Self::Malformed(other.to_string()),
        }
    }
}

/// The codec: version detection first, then 3.1.1 or 5.0.
#[derive(Debug)]
pub struct Codec {
    inner: MqttCodec,
    max_in: u32,
    /// A 5.0 CONNECT is expected next (see [`patch_empty_client_id`]).
    awaiting_v5_connect: bool,
    /// The CONNECT just decoded had its clean-start flag set by us: give it back.
    restore_persistent: bool,
}

impl Codec {
    /// `max_in`: largest packet accepted from clients, in bytes.
    pub fn new(max_in: u32) -> Self {
        Self {
            inner: MqttCodec::Version(VersionCodec),
            max_in,
            awaiting_v5_connect: false,
            restore_persistent: false,
        }
    }

    /// The codec of a connection past its CONNECT, between packets: what a parked
    /// connection's codec was, made again when it is revived instead of kept (36 bytes
    /// for every idle connection). `max_out`: the client's Maximum Packet Size (5.0).
    pub fn connected(version: Version, max_in: u32, max_out: Option<u32>) -> Self {
        let mut codec = Self::new(max_in);
        codec.inner = versioned(version, max_in);
        if let Some(max) = max_out {
            codec.set_max_outbound(max);
        }
        codec
    }

    pub fn version(&self) -> Option<Version> {
        match self.inner {
            MqttCodec::V3(_) => Some(Version::V3),
            MqttCodec::V5(_) => Some(Version::V5),
            MqttCodec::Version(_) => None,
        }
    }

    /// Largest packet the client accepts (5.0 Maximum Packet Size). The session checks
    /// each PUBLISH's exact size first ([`publish_wire_size`]); this is the backstop for
    /// other packets. The crate subtracts 5 bytes for the fixed header whatever its real
    /// size and compares the rest, so it is given 5 more: a packet of exactly `max`
    /// bytes is not refused.
    pub fn set_max_outbound(&mut self, max: u32) {
        if let MqttCodec::V5(c) = &mut self.inner {
            c.set_max_outbound_size(max.saturating_add(5));
        }
    }
}

/// The crate's codec for `version`, reading packets of at most `max_in` bytes (the
/// client's maximum, 5.0, is set apart: [`Codec::set_max_outbound`]).
fn versioned(version: Version, max_in: u32) -> MqttCodec {
    match version {
        Version::V3 => MqttCodec::V3(v3::Codec::new(max_in)),
        Version::V5 => MqttCodec::V5(v5::Codec::new(max_in, 0)),
    }
}

fn s(b: &impl std::ops::Deref<Target = str>) -> String {
    b.to_string()
}

fn qos(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

fn to_qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn pid(p: u16) -> NonZeroU16 {
    NonZeroU16::new(p).unwrap_or(NonZeroU16::MIN)
}

fn publish_in(p: rmqtt_codec::types::Publish) -> Publish {
    let props = p
        .properties
        .map(|pr| Props {
            content_type: pr.content_type.as_ref().map(s),
            correlation_data: pr.correlation_data,
            response_topic: pr.response_topic.as_ref().map(s),
            expiry: pr.message_expiry_interval.map(NonZeroU32::get),
            user: pr
                .user_properties
                .iter()
                .map(|(k, v)| (s(k), s(v)))
                .collect(),
            utf8: pr.is_utf8_payload,
            topic_alias: pr.topic_alias.map(NonZeroU16::get),
            subscription_ids: pr.subscription_ids.iter().map(|i| i.get()).collect(),
        })
        .unwrap_or_default();
    Publish {
        dup: p.dup,
        retain: p.retain,
        qos: qos(p.qos),
        topic: s(&p.topic),
        packet_id: p.packet_id.map(NonZeroU16::get),
        payload: p.payload,
        props,
    }
}

fn publish_out(p: Publish, v5: bool) -> rmqtt_codec::types::Publish {
    let props = v5.then(|| v5::PublishProperties {
        topic_alias: p.props.topic_alias.and_then(NonZeroU16::new),
        correlation_data: p.props.correlation_data,
        message_expiry_interval: p.props.expiry.and_then(NonZeroU32::new),
        content_type: p.props.content_type.map(Into::into),
        user_properties: p
            .props
            .user
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        is_utf8_payload: p.props.utf8,
        response_topic: p.props.response_topic.map(Into::into),
        subscription_ids: p
            .props
            .subscription_ids
            .into_iter()
            .filter_map(NonZeroU32::new)
            .collect(),
    });
    rmqtt_codec::types::Publish {
        dup: p.dup,
        retain: p.retain,
        qos: to_qos(p.qos),
        topic: p.topic.into(),
        packet_id: p.packet_id.and_then(NonZeroU16::new),
        payload: p.payload,
        properties: props,
    }
}

/// A will's message as the session publishes it (CONNECT carries it without a packet id).
fn will_publish(retain: bool, q: QoS, topic: String, payload: Bytes, props: Props) -> Publish {
    Publish {
        dup: false,
        retain,
        qos: qos(q),
        topic,
        packet_id: None,
        payload,
        props,
    }
}

fn v3_in(p: v3::Packet) -> In {
    match p {
        v3::Packet::Connect(c) => {
            let will = c.last_will.map(|w| Will {
                publish: will_publish(w.retain, w.qos, s(&w.topic), w.message, Props::default()),
                delay: 0,
            });
            In::Connect(Box::new(Connect {
                version: Version::V3,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                session_expiry: if c.clean_session { 0 } else { u32::MAX },
                receive_max: u16::MAX,
                max_packet_size: None,
                topic_alias_max: 0,
                client_id: s(&c.client_id),
                username: c.username.as_ref().map(s),
                password: c.password,
                will,
            }))
        }
        v3::Packet::Publish(p) => In::Publish(Box::new(publish_in(*p))),
        v3::Packet::PublishAck { packet_id } => In::PubAck(packet_id.get()),
        v3::Packet::PublishReceived { packet_id } => In::PubRec(packet_id.get()),
        v3::Packet::PublishRelease { packet_id } => In::PubRel(packet_id.get()),
        v3::Packet::PublishComplete { packet_id } => In::PubComp(packet_id.get()),
        v3::Packet::Subscribe {
            packet_id,
            topic_filters,
        } => In::Subscribe {
            packet_id: packet_id.get(),
            subscription_id: None,
            filters: topic_filters
                .into_iter()
                .map(|(f, q)| {
                    (
                        s(&f),
                        SubOpts {
                            qos: qos(q),
                            no_local: false,
                            retain_as_published: false,
                            retain_handling: 0,
                        },
                    )
                })
                .collect(),
        },
        v3::Packet::Unsubscribe {
            packet_id,
            topic_filters,
        } => In::Unsubscribe {
            packet_id: packet_id.get(),
            filters: topic_filters.iter().map(s).collect(),
        },
        v3::Packet::PingRequest => In::PingReq,
        v3::Packet::Disconnect => In::Disconnect {
            reason: 0,
            session_expiry: None,
        },
        v3::Packet::ConnectAck(_) => In::Unexpected("CONNACK"),
        v3::Packet::SubscribeAck { .. } => In::Unexpected("SUBACK"),
        v3::Packet::UnsubscribeAck { .. } => In::Unexpected("UNSUBACK"),
        v3::Packet::PingResponse => In::Unexpected("PINGRESP"),
    }
}

fn v5_in(p: v5::Packet) -> In {
    match p {
        v5::Packet::Connect(c) => {
            let will = c.last_will.map(|w| {
                let props = Props {
                    content_type: w.content_type.as_ref().map(s),
                    correlation_data: w.correlation_data,
                    response_topic: w.response_topic.as_ref().map(s),
                    expiry: w.message_expiry_interval.map(NonZeroU32::get),
                    user: w
                        .user_properties
                        .iter()
                        .map(|(k, v)| (s(k), s(v)))
                        .collect(),
                    utf8: w.is_utf8_payload.unwrap_or(false),
                    topic_alias: None,
                    subscription_ids: Vec::new(),
                };
                Will {
                    publish: will_publish(w.retain, w.qos, s(&w.topic), w.message, props),
                    delay: w.will_delay_interval_sec.unwrap_or(0),
                }
            });
            In::Connect(Box::new(Connect {
                version: Version::V5,
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                session_expiry: c.session_expiry_interval_secs,
                receive_max: c.receive_max.map_or(u16::MAX, NonZeroU16::get),
                max_packet_size: c.max_packet_size.map(NonZeroU32::get),
                topic_alias_max: c.topic_alias_max,
                client_id: s(&c.client_id),
                username: c.username.as_ref().map(s),
                password: c.password,
                will,
            }))
        }
        v5::Packet::Publish(p) => In::Publish(Box::new(publish_in(*p))),
        v5::Packet::PublishAck(a) => In::PubAck(a.packet_id.get()),
        v5::Packet::PublishReceived(a) => In::PubRec(a.packet_id.get()),
        v5::Packet::PublishRelease(a) => In::PubRel(a.packet_id.get()),
        v5::Packet::PublishComplete(a) => In::PubComp(a.packet_id.get()),
        v5::Packet::Subscribe(sub) => In::Subscribe {
            packet_id: sub.packet_id.get(),
            subscription_id: sub.id.map(NonZeroU32::get),
            filters: sub
                .topic_filters
                .into_iter()
                .map(|(f, o)| {
                    (
                        s(&f),
                        SubOpts {
                            qos: qos(o.qos),
                            no_local: o.no_local,
                            retain_as_published: o.retain_as_published,
                            retain_handling: u8::from(o.retain_handling),
                        },
                    )
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => In::Unsubscribe {
            packet_id: u.packet_id.get(),
            filters: u.topic_filters.iter().map(s).collect(),
        },
        v5::Packet::PingRequest => In::PingReq,
        v5::Packet::Disconnect(d) => In::Disconnect {
            reason: u8::from(d.reason_code),
            session_expiry: d.session_expiry_interval_secs,
        },
        v5::Packet::ConnectAck(_) => In::Unexpected("CONNACK"),
        v5::Packet::SubscribeAck(_) => In::Unexpected("SUBACK"),
        v5::Packet::UnsubscribeAck(_) => In::Unexpected("UNSUBACK"),
        v5::Packet::PingResponse => In::Unexpected("PINGRESP"),
        v5::Packet::Auth(_) => In::Unexpected("AUTH"),
    }
}

fn v3_connack_code(code: u8) -> v3::ConnectAckReason {
    use v3::ConnectAckReason as R;
    match code {
        0 => R::ConnectionAccepted,
        0x84 => R::UnacceptableProtocolVersion,
        0x85 => R::IdentifierRejected,
        0x86 => R::BadUserNameOrPassword,
        0x87 => R::NotAuthorized,
        _ => R::ServiceUnavailable,
    }
}

fn v3_out(o: Out) -> Option<v3::Packet> {
    Some(match o {
        Out::ConnAck {
            session_present,
            code,
            ..
        } => v3::Packet::ConnectAck(v3::ConnectAck {
            return_code: v3_connack_code(code),
            session_present,
        }),
        Out::Publish(p) => v3::Packet::Publish(Box::new(publish_out(*p, false))),
        Out::PubAck { packet_id, .. } => v3::Packet::PublishAck {
            packet_id: pid(packet_id),
        },
        Out::PubRec { packet_id, .. } => v3::Packet::PublishReceived {
            packet_id: pid(packet_id),
        },
        Out::PubRel { packet_id, .. } => v3::Packet::PublishRelease {
            packet_id: pid(packet_id),
        },
        Out::PubComp { packet_id, .. } => v3::Packet::PublishComplete {
            packet_id: pid(packet_id),
        },
        Out::SubAck { packet_id, codes } => v3::Packet::SubscribeAck {
            packet_id: pid(packet_id),
            status: codes
                .into_iter()
                .map(|c| {
                    if c <= 2 {
                        v3::SubscribeReturnCode::Success(to_qos(c))
                    } else {
                        v3::SubscribeReturnCode::Failure
                    }
                })
                .collect(),
        },
        Out::UnsubAck { packet_id, .. } => v3::Packet::UnsubscribeAck {
            packet_id: pid(packet_id),
        },
        Out::PingResp => v3::Packet::PingResponse,
        // 3.1.1 has no server DISCONNECT: the connection is just closed.
        Out::Disconnect { .. } | Out::Raw(_) => return None,
    })
}

/// PUBACK / PUBREC body.
fn ack(packet_id: u16, code: u8) -> v5::PublishAck {
    v5::PublishAck {
        packet_id: pid(packet_id),
        reason_code: v5::PublishAckReason::try_from(code)
            .unwrap_or(v5::PublishAckReason::UnspecifiedError),
        properties: Vec::new(),
        reason_string: None,
    }
}

/// PUBREL / PUBCOMP body.
fn ack2(packet_id: u16, code: u8) -> v5::PublishAck2 {
    v5::PublishAck2 {
        packet_id: pid(packet_id),
        reason_code: v5::PublishAck2Reason::try_from(code)
            .unwrap_or(v5::PublishAck2Reason::PacketIdNotFound),
        properties: Vec::new(),
        reason_string: None,
    }
}

/// SUBACK / UNSUBACK reason codes; one the crate does not know becomes `unknown`.
fn reasons<R: TryFrom<u8> + Copy>(codes: Vec<u8>, unknown: R) -> Vec<R> {
    codes
        .into_iter()
        .map(|c| R::try_from(c).unwrap_or(unknown))
        .collect()
}

fn v5_out(o: Out) -> v5::Packet {
    let reason = |r: Option<String>| r.map(Into::into);
    match o {
        Out::ConnAck {
            session_present,
            code,
            assigned_client_id,
            server_keep_alive,
            receive_max,
            max_packet_size,
            session_expiry,
            reason: why,
        } => v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
            session_present,
            reason_code: v5::ConnectAckReason::try_from(code)
                .unwrap_or(v5::ConnectAckReason::UnspecifiedError),
            assigned_client_id: assigned_client_id.map(Into::into),
            server_keepalive_sec: server_keep_alive,
            receive_max: NonZeroU16::new(receive_max).unwrap_or(NonZeroU16::MAX),
            max_packet_size,
            session_expiry_interval_secs: session_expiry,
            reason_string: reason(why),
            topic_alias_max: 16,
            ..v5::ConnectAck::default()
        })),
        Out::Publish(p) => v5::Packet::Publish(Box::new(publish_out(*p, true))),
        Out::PubAck { packet_id, code } => v5::Packet::PublishAck(ack(packet_id, code)),
        Out::PubRec { packet_id, code } => v5::Packet::PublishReceived(ack(packet_id, code)),
        Out::PubRel { packet_id, code } => v5::Packet::PublishRelease(ack2(packet_id, code)),
        Out::PubComp { packet_id, code } => v5::Packet::PublishComplete(ack2(packet_id, code)),
        Out::SubAck { packet_id, codes } => v5::Packet::SubscribeAck(v5::SubscribeAck {
            packet_id: pid(packet_id),
            properties: Vec::new(),
            reason_string: None,
            status: reasons(codes, v5::SubscribeAckReason::UnspecifiedError),
        }),
        Out::UnsubAck { packet_id, codes } => v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id: pid(packet_id),
            properties: Vec::new(),
            reason_string: None,
            status: reasons(codes, v5::UnsubscribeAckReason::UnspecifiedError),
        }),
        Out::PingResp | Out::Raw(_) => v5::Packet::PingResponse,
        Out::Disconnect { code, reason: why } => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: v5::DisconnectReasonCode::try_from(code)
                .unwrap_or(v5::DisconnectReasonCode::UnspecifiedError),
            session_expiry_interval_secs: None,
            server_reference: None,
            reason_string: reason(why),
            user_properties: Vec::new(),
        }),
    }
}

impl Decoder for Codec {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        if let MqttCodec::Version(v) = &mut self.inner {
            // Peeks at the CONNECT header without consuming it.
            let Some(version) = v.decode(src)? else {
                return Ok(None);
            };
            let version = match version {
                ProtocolVersion::MQTT3 => Version::V3,
                ProtocolVersion::MQTT5 => {
                    self.awaiting_v5_connect = true;
                    Version::V5
                }
            };
            self.inner = versioned(version, self.max_in);
        }
        if self.awaiting_v5_connect {
            match patch_empty_client_id(src, self.max_in) {
                None => return Ok(None),
                Some(patched) => self.restore_persistent = patched,
            }
            self.awaiting_v5_connect = false;
        }
        let mut packet = match self.inner.decode(src)? {
            Some((MqttPacket::V3(p), _)) => Some(v3_in(p)),
            Some((MqttPacket::V5(p), _)) => Some(v5_in(p)),
            Some((MqttPacket::Version(_), _)) | None => None,
        };
        if let Some(In::Connect(c)) = &mut packet
            && std::mem::take(&mut self.restore_persistent)
        {
            c.clean_start = false;
        }
        Ok(packet)
    }
}

impl Encoder<Out> for Codec {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        if let Out::Raw(b) = item {
            dst.extend_from_slice(&b);
            return Ok(());
        }
        let packet = match self.inner {
            MqttCodec::V3(_) => match v3_out(item) {
                Some(p) => MqttPacket::V3(p),
                None => return Ok(()),
            },
            MqttCodec::V5(_) => MqttPacket::V5(v5_out(item)),
            MqttCodec::Version(_) => return Err(CodecError::Encode("no CONNECT yet".into())),
        };
        self.inner
            .encode(packet, dst)
            .map_err(|e| CodecError::Encode(e.to_string()))
    }
}

/// MQTT 5 allows an empty client id with clean start 0: the server assigns one and says
/// so in CONNACK (§3.1.3-6, as Mosquitto does). `rmqtt-codec` refuses that CONNECT while
/// decoding, so before it sees the packet this sets the clean-start bit of such a
/// CONNECT (the decoder undoes it on the decoded value). Looks only at a whole packet:
/// `None` while more bytes are needed; `Some(true)` when it set the bit; `Some(false)`
/// otherwise, malformed packets included (the decoder then reports them).
fn patch_empty_client_id(buf: &mut BytesMut, max_in: u32) -> Option<bool> {
    fn var_int(b: &[u8]) -> Option<Option<(usize, usize)>> {
        let mut n = 0usize;
        for i in 0..4 {
            let Some(&byte) = b.get(i) else {
                return Some(None); // incomplete
            };
            n |= usize::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(Some((n, i + 1)));
            }
        }
        None // malformed
    }
    if buf.len() < 2 {
        return None;
    }
    let (rem, vlen) = match var_int(&buf[1..]) {
        Some(Some(v)) => v,
        Some(None) => return None,
        None => return Some(false),
    };
    if buf[0] != 0x10 || (max_in != 0 && rem > max_in as usize) {
        return Some(false);
    }
    let start = 1 + vlen;
    if buf.len() < start + rem {
        return None;
    }
    let body = &buf[start..start + rem];
    // Protocol name (2 + 4), level, flags, keep-alive, then the properties.
    if body.len() < 11 || body[..6] != *b"\x00\x04MQTT" {
        return Some(false);
    }
    let flags = body[7];
    let Some(Some((plen, pvlen))) = var_int(&body[10..]) else {
        return Some(false);
    };
    let id = 10 + pvlen + plen;
    let empty_id = body.get(id..id + 2) == Some(&[0, 0][..]);
    if empty_id && flags & 0x02 == 0 {
        buf[start + 7] = flags | 0x02;
        return Some(true);
    }
    Some(false)
}

/// The exact size in bytes of a PUBLISH on the wire, fixed header and (5.0) properties
/// included, computed as the MQTT specification lays the packet out, so a message is
/// withheld only when it really exceeds the client's Maximum Packet Size (MQTT-3.1.2-25).
pub fn publish_wire_size(p: &Publish, v5: bool) -> u64 {
    fn var_int_len(n: usize) -> usize {
        match n {
            0..=127 => 1,
            128..=16_383 => 2,
            16_384..=2_097_151 => 3,
            _ => 4,
        }
    }
    let string = |s: &str| 2 + s.len();
    let mut rem = string(&p.topic) + p.payload.len();
    if p.qos > 0 {
        rem += 2;
    }
    if v5 {
        let pr = &p.props;
        let mut props = 0;
        if pr.topic_alias.is_some_and(|a| a != 0) {
            props += 3;
        }
        if let Some(c) = &pr.correlation_data {
            props += 1 + 2 + c.len();
        }
        if pr.expiry.is_some_and(|e| e != 0) {
            props += 5;
        }
        if let Some(c) = &pr.content_type {
            props += 1 + string(c);
        }
        if pr.utf8 {
            props += 2;
        }
        if let Some(r) = &pr.response_topic {
            props += 1 + string(r);
        }
        for &id in pr.subscription_ids.iter().filter(|&&id| id != 0) {
            props += 1 + var_int_len(id as usize);
        }
        for (k, v) in &pr.user {
            props += 1 + string(k) + string(v);
        }
        rem += var_int_len(props) + props;
    }
    (1 + var_int_len(rem) + rem) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(codec: &mut Codec, p: &Publish) -> usize {
        let mut buf = BytesMut::new();
        codec
            .encode(Out::Publish(Box::new(p.clone())), &mut buf)
            .unwrap();
        buf.len()
    }

    fn codec(version: u8) -> Codec {
        let mut c = Codec::new(1 << 20);
        let mut connect = BytesMut::from(if version == 5 {
            &b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01a"[..]
        } else {
            &b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a"[..]
        });
        assert!(matches!(c.decode(&mut connect), Ok(Some(In::Connect(_)))));
        c
    }

    #[test]
    fn publish_wire_size_is_the_encoded_size() {
        let (mut v3, mut v5) = (codec(4), codec(5));
        let mut n = 0;
        for payload in [0usize, 1, 40, 127, 128, 16_383, 16_384, 70_000] {
            for qos in 0..=2u8 {
                for props in 0..4 {
                    let mut p = Publish {
                        dup: false,
                        retain: false,
                        qos,
                        topic: "a/b".repeat(payload % 7 + 1),
                        packet_id: (qos > 0).then_some(7),
                        payload: Bytes::from(vec![b'x'; payload]),
                        props: Props::default(),
                    };
                    if props >= 1 {
                        p.props.utf8 = true;
                        p.props.expiry = Some(30);
                        p.props.subscription_ids = vec![1, 200, 3_000_000];
                    }
                    if props >= 2 {
                        p.props.content_type = Some("text/plain".into());
                        p.props.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
                        p.props.response_topic = Some("reply/here".into());
                        p.props.topic_alias = Some(3);
                    }
                    if props >= 3 {
                        p.props.user = (0..40).map(|i| (format!("k{i}"), "v".repeat(i))).collect();
                    }
                    assert_eq!(
                        publish_wire_size(&p, true),
                        encoded(&mut v5, &p) as u64,
                        "{p:?}"
                    );
                    let mut p3 = p.clone();
                    p3.props = Props::default();
                    assert_eq!(publish_wire_size(&p3, false), encoded(&mut v3, &p3) as u64);
                    n += 1;
                }
            }
        }
        assert_eq!(n, 8 * 3 * 4);
    }

    #[test]
    fn v5_empty_client_id_with_a_persistent_session_decodes() {
        // clean start 0, session expiry 3600, empty client id.
        let raw = b"\x10\x12\x00\x04MQTT\x05\x00\x00\x3c\x05\x11\x00\x00\x0e\x10\x00\x00";
        let mut c = Codec::new(1 << 20);
        // Byte by byte: nothing is decoded (or patched) before the packet is whole.
        let mut buf = BytesMut::new();
        for (i, b) in raw.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = c.decode(&mut buf).unwrap();
            if i + 1 < raw.len() {
                assert!(got.is_none(), "decoded at byte {i}");
            } else {
                let Some(In::Connect(connect)) = got else {
                    panic!("no CONNECT: {got:?}")
                };
                assert!(!connect.clean_start);
                assert!(connect.client_id.is_empty());
                assert_eq!(connect.session_expiry, 3600);
            }
        }
        // 3.1.1 keeps refusing it (its specification requires identifier rejected).
        let mut v3 = BytesMut::from(&b"\x10\x0c\x00\x04MQTT\x04\x00\x00\x3c\x00\x00"[..]);
        assert!(matches!(
            Codec::new(1 << 20).decode(&mut v3),
            Err(CodecError::ClientId)
        ));
    }

    fn publish(payload: usize) -> Publish {
        Publish {
            dup: false,
            retain: false,
            qos: 1,
            topic: "a/b".into(),
            packet_id: Some(7),
            payload: Bytes::from(vec![b'x'; payload]),
            props: Props::default(),
        }
    }

    /// What a codec does after decoding a CONNECT (and being told the client's maximum
    /// packet size), one made by [`Codec::connected`] does too: a parked connection's
    /// codec is made that way on revival.
    #[test]
    fn a_codec_made_for_a_revived_connection_is_the_one_it_had() {
        for (version, connect) in [
            (
                Version::V3,
                &b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a"[..],
            ),
            (
                Version::V5,
                &b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01a"[..],
            ),
        ] {
            let max_in = 100;
            let max_out = (version == Version::V5).then_some(64);
            let mut had = Codec::new(max_in);
            assert!(matches!(
                had.decode(&mut BytesMut::from(connect)),
                Ok(Some(In::Connect(_)))
            ));
            if let Some(m) = max_out {
                had.set_max_outbound(m);
            }
            let mut made = Codec::connected(version, max_in, max_out);
            assert_eq!(made.version(), Some(version));
            for c in [&mut had, &mut made] {
                // Reads a PUBLISH; refuses one over max_in.
                let mut small = BytesMut::from(if version == Version::V5 {
                    &b"\x32\x0a\x00\x03a/b\x00\x07\x00hi"[..]
                } else {
                    &b"\x32\x09\x00\x03a/b\x00\x07hi"[..]
                });
                assert!(matches!(c.decode(&mut small), Ok(Some(In::Publish(_)))));
                let mut big = BytesMut::from(&[0x30u8, 0x7f][..]);
                big.extend_from_slice(&[0u8; 0x7f]);
                assert!(matches!(
                    c.decode(&mut big),
                    Err(CodecError::TooLarge { .. })
                ));
                // Writes a PUBLISH; over the client's maximum (5.0) it refuses.
                let mut out = BytesMut::new();
                assert!(
                    c.encode(Out::Publish(Box::new(publish(10))), &mut out)
                        .is_ok()
                );
                let over = c.encode(Out::Publish(Box::new(publish(200))), &mut out);
                assert_eq!(over.is_err(), max_out.is_some(), "{version:?}");
            }
        }
    }
}
