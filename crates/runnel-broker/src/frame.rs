//! Framing: `int32 size` then `size` bytes. Pure parsing plus one async reader; no
//! knowledge of what the bytes mean beyond the fixed request prefix.

use std::io;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::Encodable;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The fixed start of every request: api key, api version, correlation id.
pub const REQUEST_PREFIX_BYTES: usize = 8;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The size field is larger than the limit; the body is not read.
    #[error("request frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The size field is negative or smaller than a request prefix.
    #[error("invalid request frame size {0}")]
    BadSize(i32),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// A socket error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one frame body. `Ok(None)` means the peer closed the connection cleanly between
/// frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<BytesMut>, FrameError> {
    let mut size = [0u8; 4];
    match r.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size);
    if size < REQUEST_PREFIX_BYTES as i32 {
        return Err(FrameError::BadSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    let mut body = BytesMut::zeroed(size);
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(body))
}

/// The request prefix, read as raw bytes before any decoding so the broker can answer
/// (or at least log) a request whose body does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestPrefix {
    /// The API key.
    pub api_key: i16,
    /// The API version.
    pub api_version: i16,
    /// The correlation id to echo.
    pub correlation_id: i32,
}

/// Reads the prefix of a frame body (at least [`REQUEST_PREFIX_BYTES`] long).
#[must_use]
pub fn request_prefix(frame: &[u8]) -> Option<RequestPrefix> {
    let b = frame.get(..REQUEST_PREFIX_BYTES)?;
    Some(RequestPrefix {
        api_key: i16::from_be_bytes([b[0], b[1]]),
        api_version: i16::from_be_bytes([b[2], b[3]]),
        correlation_id: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    })
}

/// The codec crate reports failures as `anyhow` errors; the broker keeps that type at
/// this edge and carries only the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

impl From<anyhow::Error> for CodecError {
    fn from(e: anyhow::Error) -> Self {
        CodecError(format!("{e:#}"))
    }
}

/// Builds a whole response frame: size, response header of `header_version`, then the
/// body that `encode_body` writes.
pub fn response_frame(
    correlation_id: i32,
    header_version: i16,
    encode_body: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
) -> Result<BytesMut, CodecError> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header.encode(&mut buf, header_version)?;
    encode_body(&mut buf)?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| CodecError("response too large".into()))?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_whole_and_limits_hold() {
        let mut input: &[u8] = &[0, 0, 0, 8, 0, 18, 0, 3, 0, 0, 0, 7];
        let f = read_frame(&mut input, 100).await.unwrap().unwrap();
        assert_eq!(
            request_prefix(&f),
            Some(RequestPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 7
            })
        );
        assert!(
            read_frame(&mut input, 100).await.unwrap().is_none(),
            "clean EOF"
        );

        let mut big: &[u8] = &[0, 0, 1, 0];
        assert!(matches!(
            read_frame(&mut big, 100).await,
            Err(FrameError::TooLarge {
                size: 256,
                max: 100
            })
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut negative, 100).await,
            Err(FrameError::BadSize(-1))
        ));
        let mut cut: &[u8] = &[0, 0, 0, 20, 1, 2, 3];
        assert!(matches!(
            read_frame(&mut cut, 100).await,
            Err(FrameError::Truncated)
        ));
    }
}
