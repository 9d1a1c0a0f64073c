//! Framing: `int32 size` then `size` bytes. Pure parsing plus one async reader; no
//! knowledge of what the bytes mean beyond the fixed request prefix.

use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::Encodable;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

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
    /// No byte of a next frame arrived before the idle deadline.
    #[error("connection idle: no request before the idle deadline")]
    Idle,
    /// A frame's bytes did not all arrive within the time allowed for one frame.
    #[error("request frame not complete within {0:?} of its first byte")]
    Slow(Duration),
    /// A socket error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A frame's buffer grows by at most this much at a time.
const FRAME_READ_CHUNK_BYTES: usize = 1 << 20;

/// Reads one frame body. `Ok(None)` means the peer closed the connection cleanly between
/// frames. The simple form of [`FrameReader`] (which the server uses, as it must be
/// cancel-safe), kept for the tests of the size rules.
#[cfg(test)]
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
    // The buffer grows with the bytes that arrive, not with the size the peer claims: a
    // thousand connections each announcing 100 MiB and sending nothing hold no memory.
    // Nor is it zeroed first: the socket writes every byte of it.
    let mut body = BytesMut::with_capacity(size.min(FRAME_READ_CHUNK_BYTES));
    while body.len() < size {
        let want = size - body.len();
        if body.capacity() == body.len() {
            body.reserve(want.min(FRAME_READ_CHUNK_BYTES));
        }
        let n = r.read_buf(&mut (&mut body).limit(want)).await?;
        if n == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(Some(body))
}

/// Reads frames from a byte stream, keeping partial frames in its own buffer, so that
/// [`FrameReader::next_within`] is cancel-safe: a connection loop can `select!` on it.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max: usize,
}

/// Bytes asked of the socket per read at least: several small pipelined requests
/// arrive in one system call.
const READ_BYTES_MIN: usize = 64 << 10;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames of `inner`, each at most `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_BYTES_MIN),
            max,
        }
    }

    /// The next frame body; `Ok(None)` when the peer closed cleanly between frames.
    /// Memory grows with the bytes that arrive, not with the size a peer claims.
    ///
    /// Two deadlines bound the wait. Until a frame's first byte arrives, `idle_until`
    /// (none: wait as long as it takes); from then on, `frame_time_max` for the whole
    /// frame ([`FrameError::Idle`], [`FrameError::Slow`]). A frame already begun when
    /// this is called gets its time from the call: the caller was busy serving, not
    /// reading, and bytes the peer sent meanwhile wait in the socket.
    pub async fn next_within(
        &mut self,
        idle_until: Option<Instant>,
        frame_time_max: Duration,
    ) -> Result<Option<BytesMut>, FrameError> {
        let mut frame_until = (!self.buf.is_empty()).then(|| Instant::now() + frame_time_max);
        loop {
            let mut want = READ_BYTES_MIN;
            if let Some(head) = self.buf.first_chunk::<4>() {
                let size = i32::from_be_bytes(*head);
                if size < REQUEST_PREFIX_BYTES as i32 {
                    return Err(FrameError::BadSize(size));
                }
                let size = size as usize;
                if size > self.max {
                    return Err(FrameError::TooLarge {
                        size,
                        max: self.max,
                    });
                }
                if self.buf.len() >= 4 + size {
                    let mut frame = self.buf.split_to(4 + size);
                    frame.advance(4);
                    return Ok(Some(frame));
                }
                want = want.max((4 + size - self.buf.len()).min(FRAME_READ_CHUNK_BYTES));
            }
            self.buf.reserve(want);
            let read = self.inner.read_buf(&mut self.buf);
            let n = match frame_until.or(idle_until) {
                None => read.await?,
                Some(until) => match tokio::time::timeout_at(until, read).await {
                    Ok(n) => n?,
                    Err(_) if frame_until.is_some() => {
                        return Err(FrameError::Slow(frame_time_max));
                    }
                    Err(_) => return Err(FrameError::Idle),
                },
            };
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            frame_until.get_or_insert_with(|| Instant::now() + frame_time_max);
        }
    }
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

/// Reads the prefix of a frame body (at least 8 bytes: api key, version, correlation id).
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

    /// A frame that announces 100 MiB and sends ten bytes holds about a read chunk, not
    /// 100 MiB; and it is given up once the frame deadline passes.
    #[tokio::test(start_paused = true)]
    async fn a_huge_announced_frame_holds_little_memory_and_times_out() {
        let (mut peer, broker_side) = tokio::io::duplex(1 << 16);
        let mut head = (100i32 << 20).to_be_bytes().to_vec();
        head.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1, 0, 0]);
        tokio::io::AsyncWriteExt::write_all(&mut peer, &head)
            .await
            .unwrap();
        let mut frames = FrameReader::new(broker_side, 200 << 20);
        let r = frames.next_within(None, Duration::from_secs(30)).await;
        assert!(matches!(r, Err(FrameError::Slow(_))), "{r:?}");
        assert!(
            frames.buf.capacity() <= 2 * FRAME_READ_CHUNK_BYTES,
            "{} bytes reserved for 14 received",
            frames.buf.capacity()
        );
    }

    /// The idle deadline applies between frames only; once a frame has begun, the frame
    /// deadline counts from its first byte.
    #[tokio::test(start_paused = true)]
    async fn idle_and_frame_deadlines() {
        let (_peer, broker_side) = tokio::io::duplex(1 << 16);
        let mut frames = FrameReader::new(broker_side, 1 << 20);
        let idle_until = Instant::now() + Duration::from_secs(1);
        let r = frames
            .next_within(Some(idle_until), Duration::from_secs(60))
            .await;
        assert!(matches!(r, Err(FrameError::Idle)), "{r:?}");

        let frame = [0, 0, 0, 8, 0, 18, 0, 3, 0, 0, 0, 7];
        for (gap_secs, served) in [(2, true), (20, false)] {
            let (mut peer, broker_side) = tokio::io::duplex(1 << 16);
            let mut frames = FrameReader::new(broker_side, 1 << 20);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                // Silent for longer than a frame may take: that is idle time, not frame time.
                tokio::time::sleep(Duration::from_secs(30)).await;
                peer.write_all(&frame[..6]).await.unwrap();
                tokio::time::sleep(Duration::from_secs(gap_secs)).await;
                let _ = peer.write_all(&frame[6..]).await;
                peer
            });
            let idle_until = Instant::now() + Duration::from_secs(600);
            let r = frames
                .next_within(Some(idle_until), Duration::from_secs(10))
                .await;
            if served {
                assert_eq!(r.unwrap().unwrap().len(), 8);
            } else {
                assert!(matches!(r, Err(FrameError::Slow(_))), "{r:?}");
            }
            drop(frames);
            let _ = writer.await;
        }
    }
}
