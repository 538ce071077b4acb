//! The request-response codec of both p2pstore protocols: one CBOR message
//! each way per stream, behind a 4-byte big-endian length.
//!
//! libp2p's own cbor codec reads up to its limit and decodes whatever it
//! got: a longer message is silently cut (and the rest never read, so the
//! sender hangs), bytes after a valid message are ignored, and a shard's
//! buffer doubles its way up, copied and zeroed each time. This one
//! - refuses a message longer than the limit from its length, before
//!   reading its body;
//! - refuses anything after the message, and a message that does not
//!   decode exactly to its end;
//! - reads a body into a buffer of exactly its length, once;
//! - hands a well-framed request that does not decode to the node as
//!   [`Incoming::Malformed`], so that the peer is answered `BadRequest`
//!   instead of seeing its stream close with no word, which it could not
//!   tell from a busy node.

use std::convert::Infallible;
use std::io;
use std::marker::PhantomData;

use cbor4ii::core::dec::Read as _;
use cbor4ii::core::utils::SliceReader;
use futures::prelude::*;
use libp2p::StreamProtocol;
use serde::{Serialize, de::DeserializeOwned};

/// Bytes of the length in front of each message.
const LEN_BYTES: usize = 4;

/// A request as read off the wire.
#[derive(Debug)]
pub enum Incoming<M> {
    Message(M),
    /// Framed within the limit but not a valid message: why, from the
    /// decoder (our text, not the peer's).
    Malformed(String),
}

pub struct Codec<Req, Resp> {
    request_max: u64,
    response_max: u64,
    phantom: PhantomData<(Req, Resp)>,
}

impl<Req, Resp> Codec<Req, Resp> {
    /// Largest request and response accepted (or sent), in bytes of the
    /// encoded message without its length prefix.
    pub fn new(request_max: u64, response_max: u64) -> Self {
        Codec {
            request_max,
            response_max,
            phantom: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for Codec<Req, Resp> {
    fn clone(&self) -> Self {
        Codec::new(self.request_max, self.response_max)
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Decodes exactly one CBOR value that spans all of `buf`.
pub fn decode<M: DeserializeOwned>(buf: &[u8]) -> io::Result<M> {
    let mut de = cbor4ii::serde::Deserializer::new(SliceReader::new(buf));
    let msg = M::deserialize(&mut de).map_err(|e: cbor4ii::serde::DecodeError<Infallible>| {
        invalid(format!("undecodable message: {e}"))
    })?;
    let mut rest = de.into_inner();
    match rest.fill(1) {
        Ok(r) if r.as_ref().is_empty() => Ok(msg),
        _ => Err(invalid("trailing bytes inside the message")),
    }
}

/// The message's encoding, refused before sending when over `max`.
pub fn encode<M: Serialize>(msg: &M, max: u64) -> io::Result<Vec<u8>> {
    let body = cbor4ii::serde::to_vec(Vec::new(), msg).map_err(io::Error::other)?;
    if body.len() as u64 > max {
        return Err(invalid(format!(
            "message of {} bytes exceeds the limit of {max}",
            body.len()
        )));
    }
    Ok(body)
}

/// One frame's body: its length checked against `max` before it is read,
/// and nothing after it.
async fn read_frame<T>(io: &mut T, max: u64) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut len = [0u8; LEN_BYTES];
    io.read_exact(&mut len).await?;
    let len = u64::from(u32::from_be_bytes(len));
    if len > max {
        return Err(invalid(format!(
            "message of {len} bytes exceeds the limit of {max}"
        )));
    }
    let mut body = vec![0u8; len as usize];
    io.read_exact(&mut body).await?;
    // The sender closes its side after one message: anything more is
    // refused, not left unread.
    let mut extra = [0u8; 1];
    if io.read(&mut extra).await? != 0 {
        return Err(invalid("bytes after the message"));
    }
    Ok(body)
}

/// Writes an [`encode`]d body behind its length.
async fn write_message<T>(io: &mut T, body: Vec<u8>) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    // encode bounds it by max, which fits in u32 for every protocol here.
    let len = u32::try_from(body.len()).map_err(|_| invalid("message too long"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&body).await
}

impl<Req, Resp> libp2p::request_response::Codec for Codec<Req, Resp>
where
    Req: Send + Serialize + DeserializeOwned,
    Resp: Send + Serialize + DeserializeOwned,
{
    type Protocol = StreamProtocol;
    type Request = Incoming<Req>;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Incoming<Req>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, self.request_max).await?;
        Ok(match decode(&body) {
            Ok(m) => Incoming::Message(m),
            Err(e) => Incoming::Malformed(e.to_string()),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode(&read_frame(io, self.response_max).await?)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Incoming<Req>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let Incoming::Message(req) = req else {
            return Err(invalid("a malformed request is never sent"));
        };
        // The message goes before the write: a shard is not held twice.
        let body = encode(&req, self.request_max)?;
        drop(req);
        write_message(io, body).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let body = encode(&resp, self.response_max)?;
        drop(resp);
        write_message(io, body).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    use super::*;

    type TestCodec = Codec<Vec<u32>, Vec<u32>>;
    const P: StreamProtocol = StreamProtocol::new("/test/1");

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn round_trip() {
        let mut c = TestCodec::new(64, 64);
        let mut wire = Vec::new();
        c.write_request(&P, &mut wire, Incoming::Message(vec![1, 2, 3]))
            .await
            .unwrap();
        let got = c.read_request(&P, &mut Cursor::new(wire)).await.unwrap();
        assert!(matches!(got, Incoming::Message(m) if m == vec![1, 2, 3]));
    }

    #[tokio::test]
    async fn refuses_oversize_trailing_and_garbage() {
        let mut c = TestCodec::new(64, 64);
        let body = cbor4ii::serde::to_vec(Vec::new(), &vec![7u32; 10]).unwrap();
        // Over the limit: refused from the length alone, body never sent.
        let mut long = 1_000_000u32.to_be_bytes().to_vec();
        long.extend_from_slice(&body);
        let e = c
            .read_request(&P, &mut Cursor::new(long))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        // A valid message followed by more bytes on the stream.
        let mut trailing = framed(&body);
        trailing.extend_from_slice(&[0; 100]);
        let e = c
            .read_request(&P, &mut Cursor::new(trailing))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("after the message"), "{e}");
        // Extra bytes inside the declared length, and garbage: a request
        // is handed on as malformed (so the peer gets an answer); a
        // response is refused.
        let mut padded = body.clone();
        padded.push(0);
        for bad in [framed(&padded), framed(&[0xff; 9])] {
            let got = c
                .read_request(&P, &mut Cursor::new(bad.clone()))
                .await
                .unwrap();
            assert!(matches!(got, Incoming::Malformed(_)), "{got:?}");
            let e = c
                .read_response(&P, &mut Cursor::new(bad))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        }
        let Incoming::Malformed(why) = c
            .read_request(&P, &mut Cursor::new(framed(&padded)))
            .await
            .unwrap()
        else {
            unreachable!()
        };
        assert!(why.contains("trailing"), "{why}");
        // A cut message.
        let e = c
            .read_request(&P, &mut Cursor::new(framed(&body)[..8].to_vec()))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Nor is an oversize message ever sent.
        let e = c
            .write_request(&P, &mut Vec::new(), Incoming::Message(vec![1; 100]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
    }
}
