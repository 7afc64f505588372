//! The client side of HTTP/1.1 to the server behind the gateway, as plain functions over bytes:
//! writing a request, reading a response head (with `httparse`, the parser hyper uses) and taking
//! the body apart by its framing (RFC 9112 §6). [`super::pool`] does the I/O.
//!
//! Why not hyper's client: it drives each connection from a task of its own, so every forwarded
//! call crossed two channels and woke two more tasks. Reading the answer in the request's own
//! task cut that out (benches/gateway_latency.rs, BENCHMARKS.md).

use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use bytes::{Buf as _, Bytes, BytesMut};

use super::protocol::HEADER_SESSION_ID;

/// Most headers an answer may carry.
const MAX_HEADERS: usize = 100;
/// Longest answer head (status line and headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What is wrong with the server's answer, as the gateway reports it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Http1Error {
    #[error("the server's answer head is not HTTP/1.1: {0}")]
    BadHead(String),
    #[error("the server's answer head is longer than {MAX_HEAD_BYTES} bytes")]
    HeadTooLong,
    #[error("the server answered with status {0}, which the gateway does not follow")]
    Unsupported(u16),
    #[error("the server's Content-Length {0:?} is not one non-negative number")]
    BadLength(String),
    #[error("the server's chunked body is malformed: {0}")]
    BadChunk(&'static str),
    #[error("the server closed the connection before the answer ended")]
    Truncated,
}

/// How the answer's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// The part of an answer's head the gateway uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub session_id: Option<String>,
    pub framing: Framing,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// Append the request to `out`: request line, `Host`, `headers`, and with a body its
/// `Content-Length` and the body itself, so the whole request goes out in one write.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    host: &HeaderValue,
    headers: &[(HeaderName, HeaderValue)],
    body: Option<&[u8]>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        // Values cannot hold CR or LF (`HeaderValue` refuses them), so none can split a header.
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(body) = body {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

/// Parse the answer head at the start of `buf`: `Ok(None)` until it is complete, then its
/// length and what it says. An interim (1xx) head has no body, and the final answer follows
/// it (a client must read past any, RFC 9110 §15.2); 101 is an error, as the gateway never
/// asks to switch protocols.
pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, ResponseHead)>, Http1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Http1Error::HeadTooLong);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Http1Error::BadHead(e.to_string())),
    };
    let code = response.code.unwrap_or_default();
    let status =
        StatusCode::from_u16(code).map_err(|_| Http1Error::BadHead(format!("status {code}")))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Http1Error::Unsupported(code));
    }
    let mut head = ResponseHead {
        status,
        content_type: None,
        session_id: None,
        framing: Framing::UntilClose,
        keep_alive: response.version == Some(1),
    };
    let mut length_seen: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoded = false;
    for header in response.headers.iter() {
        let text = || std::str::from_utf8(header.value).ok().map(str::trim);
        if header.name.eq_ignore_ascii_case("content-type") {
            head.content_type = text().map(str::to_owned);
        } else if header.name.eq_ignore_ascii_case(HEADER_SESSION_ID.as_str()) {
            head.session_id = text().map(str::to_owned);
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let value = text().unwrap_or_default();
            // A list of equal values is allowed (RFC 9110 §8.6); anything else is not.
            let mut parsed = value.split(',').map(|v| v.trim().parse::<u64>());
            let first = parsed.next();
            let n = match first {
                Some(Ok(n)) if parsed.all(|v| v == Ok(n)) => n,
                _ => return Err(Http1Error::BadLength(value.to_owned())),
            };
            if length_seen.is_some_and(|seen| seen != n) {
                return Err(Http1Error::BadLength(value.to_owned()));
            }
            length_seen = Some(n);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoded = true;
            // Only the last coding says how the message ends.
            chunked = text()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if header.name.eq_ignore_ascii_case("connection") {
            let close = text().is_some_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("close"))
            });
            if close {
                head.keep_alive = false;
            }
        }
    }
    head.framing = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if transfer_encoded {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length_seen {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if head.framing == Framing::UntilClose {
        head.keep_alive = false;
    }
    Ok(Some((length, head)))
}

/// One step of taking a body apart.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The body ended; whatever follows in the buffer is not part of it.
    End,
}

/// Takes a body apart by its [`Framing`], from the bytes read so far.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug)]
enum State {
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    UntilClose,
    Done,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// Whether the body was read to its end.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next piece of the body out of `buf` (which the caller fills by reading).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Http1Error> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(remaining) | State::ChunkData(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let left = remaining - take as u64;
                    self.state = match (&self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), _) => State::Length(left),
                        (_, 0) => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        buf.advance(used);
                        self.state = State::Trailers;
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = State::ChunkData(size);
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                        return Err(Http1Error::BadChunk("chunk-size line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err(Http1Error::BadChunk("bad chunk-size line")),
                },
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Http1Error::BadChunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_HEAD_BYTES {
                            return Err(Http1Error::BadChunk("trailers too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(line_end + 2);
                    if line_end == 0 {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// The connection ended: the end of a body that runs until close, an error for any other.
    pub fn at_eof(&mut self) -> Result<(), Http1Error> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(Http1Error::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> ResponseHead {
        let (length, head) = parse_head(text.as_bytes()).unwrap().unwrap();
        assert_eq!(length, text.len());
        head
    }

    /// Every piece `decoder` takes out of `input` fed `step` bytes at a time, and whether it
    /// reached the end.
    fn decode_all(
        framing: Framing,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, bool), Http1Error> {
        let mut decoder = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(bytes) => body.extend_from_slice(&bytes),
                Decoded::End => return Ok((body, true)),
                Decoded::NeedMore if fed < input.len() => {
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
                Decoded::NeedMore => {
                    decoder.at_eof()?;
                    return Ok((body, decoder.is_done()));
                }
            }
        }
    }

    #[test]
    fn a_request_is_one_buffer_with_host_headers_length_and_body() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            &Method::POST,
            "/mcp?x=1",
            &HeaderValue::from_static("127.0.0.1:8080"),
            &[(HEADER_SESSION_ID, HeaderValue::from_static("abc"))],
            Some(br#"{"jsonrpc":"2.0"}"#),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /mcp?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nmcp-session-id: abc\r\ncontent-length: 17\r\n\r\n{\"jsonrpc\":\"2.0\"}"
        );
        let mut out = Vec::new();
        write_request(
            &mut out,
            &Method::GET,
            "/",
            &HeaderValue::from_static("h"),
            &[],
            None,
        );
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: h\r\n\r\n");
    }

    #[test]
    fn a_head_gives_status_media_session_framing_and_reuse() {
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: s-1\r\nContent-Length: 12\r\n\r\n",
        );
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.content_type.as_deref(), Some("application/json"));
        assert_eq!(h.session_id.as_deref(), Some("s-1"));
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive);

        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
        );
        assert_eq!(
            h.framing,
            Framing::Chunked,
            "Transfer-Encoding wins over Content-Length"
        );
        let h = head(
            "HTTP/1.1 202 Accepted\r\nconnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n",
        );
        assert!(!h.keep_alive, "Connection: close ends reuse");
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(
            !h.keep_alive,
            "a body that runs to the close ends the connection"
        );
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 connections are not reused");
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn a_head_arrives_in_pieces_and_bad_ones_say_what_is_wrong() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le"), Ok(None));
        assert!(matches!(
            parse_head(b"SMTP ready\r\n\r\n"),
            Err(Http1Error::BadHead(_))
        ));
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n"),
            Err(Http1Error::BadLength("3, 4".into()))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"),
            Err(Http1Error::BadLength("-1".into()))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"),
            Err(Http1Error::BadLength("4".into()))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"),
            Err(Http1Error::Unsupported(101))
        );
        let interim_then_final: &[u8] =
            b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200";
        let (length, interim) = parse_head(interim_then_final).unwrap().unwrap();
        assert_eq!(
            interim.framing,
            Framing::Empty,
            "an interim head has no body"
        );
        assert_eq!(
            &interim_then_final[length..],
            b"HTTP/1.1 200",
            "the final head follows it"
        );
        let endless = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse_head(endless.as_bytes()), Err(Http1Error::HeadTooLong));
    }

    #[test]
    fn bodies_come_apart_by_their_framing_whatever_the_read_sizes() {
        let chunked = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\ntrailer: x\r\n\r\n";
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(
                decode_all(Framing::Chunked, chunked, step),
                Ok((b"hello, world".to_vec(), true)),
                "chunked, {step} bytes at a time"
            );
            assert_eq!(
                decode_all(Framing::Length(5), b"hello", step),
                Ok((b"hello".to_vec(), true))
            );
            assert_eq!(
                decode_all(Framing::UntilClose, b"all of it", step),
                Ok((b"all of it".to_vec(), true))
            );
        }
        assert_eq!(decode_all(Framing::Empty, b"", 1), Ok((Vec::new(), true)));
        assert_eq!(
            decode_all(Framing::Length(0), b"", 1),
            Ok((Vec::new(), true))
        );
    }

    #[test]
    fn a_body_stops_at_its_end_and_leaves_what_follows() {
        let mut decoder = BodyDecoder::new(Framing::Length(3));
        let mut buf = BytesMut::from(&b"abcHTTP/1.1"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
        assert!(decoder.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn a_body_cut_short_or_badly_chunked_is_an_error() {
        assert_eq!(
            decode_all(Framing::Length(10), b"short", 64),
            Err(Http1Error::Truncated)
        );
        assert_eq!(
            decode_all(Framing::Chunked, b"5\r\nhello\r\n", 64),
            Err(Http1Error::Truncated)
        );
        assert_eq!(
            decode_all(Framing::Chunked, b"zz\r\n", 64),
            Err(Http1Error::BadChunk("bad chunk-size line"))
        );
        assert_eq!(
            decode_all(Framing::Chunked, b"2\r\nhiXX", 64),
            Err(Http1Error::BadChunk("chunk data not followed by CRLF"))
        );
    }
}
