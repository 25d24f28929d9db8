//! The envelope every WebSocket text frame carries:
//! `{"uuid", "type", "body", "timestamp"}`, in that order.
//!
//! Bodies arrive already serialized, so one body can be wrapped once and the
//! resulting frame shared by every connection of a scope.

use std::io::Write;

use bytes::{BufMut, BytesMut};
use chrono::{SecondsFormat, Utc};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

/// A finished text frame, cheap to clone and share between connections.
pub type Frame = Utf8Bytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    Create,
    Delete,
    DataStatic,
    DataDynamic,
    DataDynamicDisks,
    DataDynamicConnections,
    BootupStart,
    BootupSuccess,
    BootupFail,
    ShutdownStart,
    ShutdownSuccess,
    ShutdownFail,
}

impl MessageType {
    pub const ALL: [MessageType; 12] = [
        MessageType::Create,
        MessageType::Delete,
        MessageType::DataStatic,
        MessageType::DataDynamic,
        MessageType::DataDynamicDisks,
        MessageType::DataDynamicConnections,
        MessageType::BootupStart,
        MessageType::BootupSuccess,
        MessageType::BootupFail,
        MessageType::ShutdownStart,
        MessageType::ShutdownSuccess,
        MessageType::ShutdownFail,
    ];

    /// The position of this type in [`MessageType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The type whose name is `name`, as [`MessageType::as_str`] spells it.
    pub fn named(name: &str) -> Option<MessageType> {
        let kind = match name {
            "CREATE" => MessageType::Create,
            "DELETE" => MessageType::Delete,
            "DATA_STATIC" => MessageType::DataStatic,
            "DATA_DYNAMIC" => MessageType::DataDynamic,
            "DATA_DYNAMIC_DISKS" => MessageType::DataDynamicDisks,
            "DATA_DYNAMIC_CONNECTIONS" => MessageType::DataDynamicConnections,
            "BOOTUP_START" => MessageType::BootupStart,
            "BOOTUP_SUCCESS" => MessageType::BootupSuccess,
            "BOOTUP_FAIL" => MessageType::BootupFail,
            "SHUTDOWN_START" => MessageType::ShutdownStart,
            "SHUTDOWN_SUCCESS" => MessageType::ShutdownSuccess,
            "SHUTDOWN_FAIL" => MessageType::ShutdownFail,
            _ => return None,
        };
        Some(kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Create => "CREATE",
            MessageType::Delete => "DELETE",
            MessageType::DataStatic => "DATA_STATIC",
            MessageType::DataDynamic => "DATA_DYNAMIC",
            MessageType::DataDynamicDisks => "DATA_DYNAMIC_DISKS",
            MessageType::DataDynamicConnections => "DATA_DYNAMIC_CONNECTIONS",
            MessageType::BootupStart => "BOOTUP_START",
            MessageType::BootupSuccess => "BOOTUP_SUCCESS",
            MessageType::BootupFail => "BOOTUP_FAIL",
            MessageType::ShutdownStart => "SHUTDOWN_START",
            MessageType::ShutdownSuccess => "SHUTDOWN_SUCCESS",
            MessageType::ShutdownFail => "SHUTDOWN_FAIL",
        }
    }
}

/// Where the type name starts in every frame [`frame`] builds: after
/// `{"uuid":"`, the 36 characters of a hyphenated UUID, and `","type":"`.
const TYPE_OFFSET: usize = 9 + 36 + 10;

/// The type of a frame built by [`frame`], read from its fixed header
/// without parsing the JSON; `None` for any other text.
pub fn type_of(frame: &str) -> Option<MessageType> {
    let rest = frame.get(TYPE_OFFSET..)?;
    MessageType::named(&rest[..rest.find('"')?])
}

/// Wraps a serialized JSON body in a new envelope with a fresh UUID and the
/// current time.
pub fn frame(message_type: MessageType, body: &[u8]) -> Frame {
    let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut out = BytesMut::with_capacity(body.len() + 128);
    out.put_slice(b"{\"uuid\":\"");
    write!((&mut out).writer(), "{}", Uuid::new_v4().as_hyphenated())
        .expect("writing to memory cannot fail");
    out.put_slice(b"\",\"type\":\"");
    out.put_slice(message_type.as_str().as_bytes());
    out.put_slice(b"\",\"body\":");
    out.put_slice(body);
    out.put_slice(b",\"timestamp\":\"");
    out.put_slice(timestamp.as_bytes());
    out.put_slice(b"\"}");
    Frame::try_from(out.freeze()).expect("envelope of JSON parts is UTF-8")
}

/// Builds a `{uuid: object, ...}` body from already serialized objects.
pub fn keyed_body<'a>(entries: impl IntoIterator<Item = (&'a Uuid, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    for (index, (uuid, object)) in entries.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(
            uuid.as_hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(b"\":");
        out.extend_from_slice(object);
    }
    out.push(b'}');
    out
}

/// The `{"uuid": ...}` body of DELETE and of the lifecycle events without an
/// error.
pub fn uuid_body(uuid: &Uuid) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        uuid: &'a Uuid,
    }
    serde_json::to_vec(&Body { uuid }).expect("a UUID serializes")
}

/// The `{"uuid": ..., "error": ...}` body of BOOTUP_FAIL and SHUTDOWN_FAIL.
pub fn failure_body(uuid: &Uuid, error: Option<&str>) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        uuid: &'a Uuid,
        error: Option<&'a str>,
    }
    serde_json::to_vec(&Body { uuid, error }).expect("a UUID and a string serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_tells_its_type() {
        for kind in MessageType::ALL {
            let built = frame(kind, b"{}");
            assert_eq!(type_of(built.as_str()), Some(kind));
            assert_eq!(MessageType::ALL[kind.index()], kind);
            assert_eq!(MessageType::named(kind.as_str()), Some(kind));
        }
        assert_eq!(type_of("{}"), None);
        assert_eq!(type_of(&"x".repeat(80)), None);
    }
}
