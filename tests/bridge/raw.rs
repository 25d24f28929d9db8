//! A WebSocket client at the byte level, for sending what no well-behaved
//! library would: invalid UTF-8, frame headers promising gigabytes, ping
//! floods, half-written requests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::PATIENCE;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A request head for `path_and_query`, with `headers` after the Host line.
pub fn request(path_and_query: &str, headers: &[&str]) -> String {
    let mut head = format!("GET {path_and_query} HTTP/1.1\r\nHost: localhost\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// The headers of a well-formed upgrade.
pub const UPGRADE: [&str; 4] = [
    "Connection: Upgrade",
    "Upgrade: websocket",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

/// Sends `head` and reads the response head; returns its status code.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, head: &str) -> u16 {
    stream
        .write_all(head.as_bytes())
        .await
        .expect("request sent");
    read_status(stream).await
}

/// Reads a response head byte by byte (so nothing after it is consumed)
/// and returns its status code, or 0 if the connection ended first.
pub async fn read_status<S: AsyncRead + Unpin>(stream: &mut S) -> u16 {
    let mut head = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
    });
    read.await.expect("a response or an end in time");
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// An upgraded socket on `path_and_query`.
pub async fn upgrade(addr: SocketAddr, path_and_query: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let status = exchange(&mut stream, &request(path_and_query, &UPGRADE)).await;
    assert_eq!(status, 101, "upgrade accepted");
    stream
}

/// One masked client frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    header_length(&mut out, payload.len() as u64);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A frame header that promises `length` bytes, without the payload.
pub fn header_only(opcode: u8, length: u64) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    header_length(&mut out, length);
    out.extend_from_slice(&[1, 2, 3, 4]);
    out
}

fn header_length(out: &mut Vec<u8>, length: u64) {
    match length {
        0..=125 => out.push(0x80 | length as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&length.to_be_bytes());
        }
    }
}

/// One server frame: its opcode and payload. `None` once the connection
/// ends.
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.ok()?;
    let length = match head[1] & 0x7f {
        126 => u64::from(stream.read_u16().await.ok()?),
        127 => stream.read_u64().await.ok()?,
        short => u64::from(short),
    };
    let mut payload = vec![0u8; usize::try_from(length).ok()?];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[0] & 0x0f, payload))
}

/// Reads frames until a close; returns its code, or `None` if the
/// connection ended without one.
pub async fn close_code<S: AsyncRead + Unpin>(stream: &mut S) -> Option<u16> {
    let read = async {
        loop {
            let (opcode, payload) = read_frame(stream).await?;
            if opcode == CLOSE {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a close or an end in time")
}

/// Whether the peer ends the connection within `within`: reading gives
/// end-of-file or an error, whatever was sent before.
pub async fn dropped_within<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let drain = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, drain).await.is_ok()
}
