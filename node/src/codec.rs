//! The request-response codec for direct envelopes: a u32 length prefix and the
//! envelope bytes, checked against the size limit before anything is allocated. The
//! response is a one-byte acknowledgement (the protocol tolerates loss, so a response
//! only tells the sender the bytes arrived).
//!
//! A frame that claims more than the limit is read as [`DirectFrame::Refused`], not as
//! an error: request-response drops a request whose decoding fails without telling
//! the behaviour's owner, so an error would leave an oversize frame unseen, uncounted
//! and unpunished.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};
use starling_protocol::codec::MAX_MESSAGE_BYTES;

/// Protocol name of direct envelopes.
pub const DIRECT_PROTOCOL: StreamProtocol = StreamProtocol::new("/starling/direct/1.0.0");

/// Envelope bytes over request-response.
#[derive(Debug, Clone, Default)]
pub struct DirectCodec;

/// A direct request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectFrame {
    /// Envelope bytes (not yet verified).
    Envelope(Vec<u8>),
    /// A frame refused while reading it, and why. Never sent.
    Refused(String),
}

/// Reads one request: the envelope, or why its frame is refused.
async fn read_request_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
) -> std::io::Result<DirectFrame> {
    match read_frame(io).await {
        Ok(bytes) => Ok(DirectFrame::Envelope(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Ok(DirectFrame::Refused(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_MESSAGE_BYTES}"),
        ));
    }
    let mut buf = Vec::new();
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "truncated frame",
        ));
    }
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> std::io::Result<()> {
    if data.len() > MAX_MESSAGE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "frame too large",
        ));
    }
    io.write_all(&(data.len() as u32).to_be_bytes()).await?;
    io.write_all(data).await?;
    io.close().await
}

impl request_response::Codec for DirectCodec {
    type Protocol = StreamProtocol;
    type Request = DirectFrame;
    type Response = u8;

    async fn read_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<DirectFrame>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_request_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<u8>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack).await?;
        Ok(ack[0])
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: DirectFrame,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            DirectFrame::Envelope(bytes) => write_frame(io, &bytes).await,
            DirectFrame::Refused(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a refused frame is never sent",
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: u8,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[res]).await?;
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversize_frame_is_refused_before_reading_it() {
        let mut claim = ((MAX_MESSAGE_BYTES + 1) as u32).to_be_bytes().to_vec();
        claim.extend_from_slice(&[0; 16]);
        let mut io = futures::io::Cursor::new(claim);
        let err = futures::executor::block_on(read_frame(&mut io)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let mut short = futures::io::Cursor::new([0u8, 0, 0, 10, 1, 2].to_vec());
        assert!(futures::executor::block_on(read_frame(&mut short)).is_err());
        let mut ok = futures::io::Cursor::new([0u8, 0, 0, 2, 7, 8].to_vec());
        assert_eq!(
            futures::executor::block_on(read_frame(&mut ok)).unwrap(),
            vec![7, 8]
        );
        // As a request, the oversize claim is a refused frame the node can count.
        let mut claim = ((MAX_MESSAGE_BYTES + 1) as u32).to_be_bytes().to_vec();
        claim.extend_from_slice(&[0; 16]);
        let frame =
            futures::executor::block_on(read_request_frame(&mut futures::io::Cursor::new(claim)))
                .unwrap();
        assert!(matches!(frame, DirectFrame::Refused(r) if r.contains("exceeds")));
    }
}
