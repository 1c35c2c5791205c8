//! The stream's messages: `sigil.federation.v1` carries the control plane's
//! own types, postcard-encoded. Decoding a peer's bytes is the only way in,
//! and it yields those types or an error, never a panic.

use sigil_proto::federation::v1 as pb;

use super::session::{Reply, Request};
use crate::replica::{Digest, Entry, StateSnapshot};

/// The most bytes one decoded payload may have. A state snapshot of the
/// largest federation we expect is a few MB; this bounds a peer's damage.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;

/// Why a peer's message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed sync message: {0}")]
pub struct WireError(pub String);

fn decode<T: for<'de> serde::Deserialize<'de>>(what: &str, raw: &[u8]) -> Result<T, WireError> {
    if raw.len() > MAX_PAYLOAD_BYTES {
        return Err(WireError(format!(
            "{what} is {} bytes; at most {MAX_PAYLOAD_BYTES} are accepted",
            raw.len()
        )));
    }
    postcard::from_bytes(raw).map_err(|e| WireError(format!("{what} does not decode: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our own types always encode; an empty payload would be refused by the peer.
    postcard::to_stdvec(v).unwrap_or_default()
}

pub fn request_to_pb(req: &Request) -> pb::SyncRequest {
    pb::SyncRequest {
        digest: encode(&req.digest).into(),
    }
}

pub fn request_from_pb(req: &pb::SyncRequest) -> Result<Request, WireError> {
    Ok(Request {
        digest: decode::<Digest>("digest", &req.digest)?,
    })
}

pub fn reply_to_pb(reply: &Reply) -> pb::SyncReply {
    use pb::sync_reply::Body;
    let body = match reply {
        Reply::Entries(es) => Body::Entries(encode(es).into()),
        Reply::State(s) => Body::State(encode(&**s).into()),
        Reply::Digest(d) => Body::Digest(encode(d).into()),
    };
    pb::SyncReply { body: Some(body) }
}

pub fn reply_from_pb(reply: &pb::SyncReply) -> Result<Reply, WireError> {
    use pb::sync_reply::Body;
    match &reply.body {
        Some(Body::Entries(raw)) => Ok(Reply::Entries(decode::<Vec<Entry>>("entries", raw)?)),
        Some(Body::State(raw)) => Ok(Reply::State(Box::new(decode::<StateSnapshot>(
            "state", raw,
        )?))),
        Some(Body::Digest(raw)) => Ok(Reply::Digest(decode::<Digest>("digest", raw)?)),
        None => Err(WireError("a reply with no body".into())),
    }
}

/// The encoded size of a reply's payload, for bandwidth figures.
pub fn payload_len(reply: &pb::SyncReply) -> usize {
    use pb::sync_reply::Body;
    match &reply.body {
        Some(Body::Entries(b) | Body::State(b) | Body::Digest(b)) => b.len(),
        None => 0,
    }
}
