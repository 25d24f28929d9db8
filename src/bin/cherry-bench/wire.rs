//! The envelope as the bench sees it: reading a frame's type and server
//! timestamp without parsing its JSON, and building floor frames of an
//! exact size in the same layout.
//!
//! Both rely on the layout the bridge writes: `{"uuid":"<36>","type":"..."`
//! first and `"timestamp":"YYYY-MM-DDTHH:MM:SS.ffffffZ"}` last.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// Where the type starts: after `{"uuid":"`, 36 UUID characters and
/// `","type":"`.
const TYPE_AT: usize = 9 + 36 + 10;

/// `"timestamp":"` + 27 characters + `"}`: the timestamp is this many
/// bytes from the end and 27 long.
const TIMESTAMP_FROM_END: usize = 29;
const TIMESTAMP_LEN: usize = 27;

/// The message kinds the bench measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// DATA_DYNAMIC: the per-tick state message.
    State,
    /// DATA_DYNAMIC_CONNECTIONS, every ten seconds.
    Connections,
    /// BOOTUP_* and SHUTDOWN_*.
    Lifecycle,
    Other,
}

pub fn kind(frame: &str) -> Kind {
    let Some(rest) = frame.get(TYPE_AT..) else {
        return Kind::Other;
    };
    if rest.starts_with("DATA_DYNAMIC\"") {
        return Kind::State;
    }
    if rest.starts_with("DATA_DYNAMIC_CONNECTIONS\"") {
        return Kind::Connections;
    }
    if rest.starts_with("BOOTUP_") || rest.starts_with("SHUTDOWN_") {
        return Kind::Lifecycle;
    }
    Kind::Other
}

/// The envelope's timestamp in microseconds since the epoch.
pub fn timestamp_us(frame: &str) -> Option<i64> {
    let start = frame.len().checked_sub(TIMESTAMP_FROM_END)?;
    let text = frame.get(start..start + TIMESTAMP_LEN)?;
    let parsed = DateTime::parse_from_rfc3339(text).ok()?;
    Some(parsed.timestamp_micros())
}

/// The wall clock in microseconds since the epoch: the clock the bridge
/// stamps envelopes with, on the same machine.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or_default()
}

/// An envelope of `message_type` exactly `size` bytes long (or the
/// smallest possible, if `size` is smaller), stamped now, its body padding.
pub fn padded_frame(message_type: &str, size: usize) -> String {
    let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let head = format!(
        "{{\"uuid\":\"{}\",\"type\":\"{message_type}\",\"body\":{{\"pad\":\"",
        Uuid::new_v4().as_hyphenated()
    );
    let tail = format!("\"}},\"timestamp\":\"{timestamp}\"}}");
    let padding = size.saturating_sub(head.len() + tail.len());
    let mut frame = String::with_capacity(head.len() + padding + tail.len());
    frame.push_str(&head);
    frame.extend(std::iter::repeat_n('x', padding));
    frame.push_str(&tail);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_frame_has_the_requested_size_and_reads_back() {
        let frame = padded_frame("DATA_DYNAMIC", 500);
        assert_eq!(frame.len(), 500);
        assert_eq!(kind(&frame), Kind::State);
        assert!(timestamp_us(&frame).is_some());
        let parsed: serde_json::Value = serde_json::from_str(&frame).expect("valid JSON");
        assert_eq!(parsed["type"], "DATA_DYNAMIC");
    }

    #[test]
    fn bridge_frames_read_back() {
        use cherry_bridge::envelope::{MessageType, frame};
        let state = frame(MessageType::DataDynamic, b"{}");
        assert_eq!(kind(&state), Kind::State);
        assert!(timestamp_us(&state).is_some());
        let disks = frame(MessageType::DataDynamicDisks, b"{}");
        assert_eq!(kind(&disks), Kind::Other);
        let connections = frame(MessageType::DataDynamicConnections, b"{}");
        assert_eq!(kind(&connections), Kind::Connections);
        let event = frame(MessageType::BootupStart, b"{}");
        assert_eq!(kind(&event), Kind::Lifecycle);
    }
}
