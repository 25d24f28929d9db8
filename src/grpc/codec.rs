//! The protobuf codec of the bridge's services: prost's encoding, with
//! decoding that refuses a message it cannot read as INVALID_ARGUMENT (a
//! string that is not UTF-8, a truncated field) instead of INTERNAL.
//!
//! On the agent stream a message that does not decode must not end the
//! stream: it becomes a message without a body, carrying the sequence
//! number it was sent with, which the stream then rejects by that number.

use std::any::Any;
use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::grpc::proto::AgentMessage;

/// Used by every generated service and client (see `build.rs`).
pub struct BridgeCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BridgeCodec<T, U> {
    fn default() -> Self {
        BridgeCodec(PhantomData)
    }
}

impl<T, U> Codec for BridgeCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BridgeDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BridgeDecoder(PhantomData)
    }
}

pub struct BridgeDecoder<U>(PhantomData<U>);

/// Reads only the sequence number of an agent message: every other field
/// is skipped unread, so a broken body cannot stop it.
#[derive(Clone, PartialEq, Message)]
struct SequenceOnly {
    #[prost(uint64, tag = "1")]
    seq: u64,
}

impl<U: Message + Default + 'static> Decoder for BridgeDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let length = buf.remaining();
        let raw = buf.copy_to_bytes(length);
        let error = match U::decode(raw.clone()) {
            Ok(message) => return Ok(Some(message)),
            Err(error) => error,
        };

        // LIMITATION: the stream's rejection names only `body`, not the
        // broken field inside it; the unary answer names it.
        let unreadable_agent_message = (&U::default() as &dyn Any).is::<AgentMessage>();
        if !unreadable_agent_message {
            return Err(Status::invalid_argument(error.to_string()));
        }
        let seq = SequenceOnly::decode(raw)
            .map_err(|_| Status::invalid_argument(error.to_string()))?
            .seq;
        let recovered: Box<dyn Any> = Box::new(AgentMessage { seq, body: None });
        let recovered = recovered
            .downcast::<U>()
            .expect("U was checked to be AgentMessage");
        Ok(Some(*recovered))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
