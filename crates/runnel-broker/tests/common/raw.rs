//! A blocking Kafka client over one raw TCP connection, for tests that speak the protocol
//! directly (bad input, pipelining, group errors). Requests are built with
//! `kafka-protocol`'s client half; every read and write has a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::TestBroker;

/// Every read and write on a test socket gives up after this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A blocking Kafka client over one TCP connection.
pub struct Client {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

impl Client {
    pub fn connect(b: &TestBroker) -> Client {
        Client::connect_to(b.addr)
    }

    /// Connects to a broker that is not a [`TestBroker`].
    pub fn connect_to(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            next_correlation_id: 1,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the broker");
    }

    /// Sends `req` at `version`; returns its correlation id.
    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> i32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let frame = request_frame(req, version, correlation_id);
        self.send_raw(&frame);
        correlation_id
    }

    /// Reads one response frame body (after the size prefix).
    pub fn read_frame(&mut self) -> Bytes {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .unwrap_or_else(|e| panic!("no response frame within {IO_TIMEOUT:?}: {e}"));
        let size = i32::from_be_bytes(size);
        assert!(
            (4..=64 << 20).contains(&size),
            "implausible response size {size}"
        );
        let mut body = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut body)
            .unwrap_or_else(|e| panic!("response frame cut short: {e}"));
        Bytes::from(body)
    }

    /// Reads the response to the request `correlation_id` of type `R` at `version`.
    pub fn receive<R: Request>(&mut self, version: i16, correlation_id: i32) -> R::Response {
        let mut frame = self.read_frame();
        let header = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .expect("response header decodes");
        assert_eq!(
            header.correlation_id, correlation_id,
            "responses out of order"
        );
        let response =
            <R::Response as Decodable>::decode(&mut frame, version).expect("response body decodes");
        assert_eq!(frame.remaining(), 0, "bytes left after the response body");
        response
    }

    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        let correlation_id = self.send(req, version);
        self.receive::<R>(version, correlation_id)
    }

    /// Asserts that the broker closes this connection without answering: the next read
    /// sees end of stream (or a reset, when the broker closed with our bytes unread).
    pub fn expect_closed(&mut self, what: &str) {
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("{what}: expected the connection closed, got {n} bytes"),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
            Err(e) => panic!(
                "{what}: expected the connection closed within {IO_TIMEOUT:?}, got {e} \
                 (a timeout means the broker kept it open)"
            ),
        }
    }
}

/// A whole request frame: size, header of the version the API wants, body.
pub fn request_frame<R: Request>(req: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    let key = ApiKey::try_from(R::KEY).expect("known api key");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .expect("header encodes");
    req.encode(&mut body, version).expect("request encodes");
    framed(&body)
}

pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}
