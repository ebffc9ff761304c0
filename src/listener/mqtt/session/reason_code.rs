//! Reason codes used here (MQTT 5 §2.4).

pub const SUCCESS: u8 = 0x00;
pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
pub const DISCONNECT_WITH_WILL: u8 = 0x04;
pub const UNSPECIFIED: u8 = 0x80;
pub const PROTOCOL_ERROR: u8 = 0x82;
pub const CLIENT_ID_INVALID: u8 = 0x85;
pub const BAD_CREDENTIALS: u8 = 0x86;
pub const NOT_AUTHORIZED: u8 = 0x87;
pub const SERVER_UNAVAILABLE: u8 = 0x88;
pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
pub const SESSION_TAKEN_OVER: u8 = 0x8E;
pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
pub const TOPIC_NAME_INVALID: u8 = 0x90;
pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
pub const RECEIVE_MAX_EXCEEDED: u8 = 0x93;
pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
pub const QUOTA_EXCEEDED: u8 = 0x97;
pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
pub const SHARED_NOT_SUPPORTED: u8 = 0x9E;
