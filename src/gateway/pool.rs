//! Plain-HTTP connections to the server behind the gateway, kept per serving thread.
//!
//! This is the gateway's hot path. Each serving thread runs its own single-threaded runtime, so
//! a connection opened on a thread is used only there, and the request's own task writes the
//! request and reads the answer ([`super::http1`] takes the bytes apart): no task per connection,
//! no channel between the request and its connection. TLS upstreams go through reqwest instead.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use bytes::{Buf as _, Bytes, BytesMut};
use futures::{FutureExt as _, Stream};
use thread_local::ThreadLocal;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::http1::{self, BodyDecoder, Decoded, Http1Error, ResponseHead};

/// Idle connections kept per serving thread; more are closed when they come back.
const MAX_IDLE_PER_THREAD: usize = 256;
/// Room made in a connection's read buffer before each read: an answer of the usual size
/// arrives whole in one read, and a read that does not fill it shows the socket drained.
const READ_ROOM: usize = 16 * 1024;

/// Why a request to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    /// The connection could not be made, or broke.
    #[error("{0}")]
    Unreachable(String),
    /// The server's bytes are not a well-formed HTTP/1.1 answer.
    #[error(transparent)]
    Invalid(#[from] Http1Error),
}

/// Connections to one `http://` server.
pub struct PlainHttp {
    /// `Host` header of every request.
    host: HeaderValue,
    /// Path and query every request is sent to.
    target: String,
    /// Where connections go and the idle ones; shared with background connects.
    server: Arc<Server>,
}

/// The server's address and each serving thread's idle connections to it.
struct Server {
    /// Host name or address to connect to (IPv6 without brackets).
    connect_host: String,
    port: u16,
    connect_timeout: Duration,
    idle: ThreadLocal<RefCell<Vec<Connection>>>,
}

/// An open connection, with what was read from it and not yet used.
struct Connection {
    stream: TcpStream,
    read: BytesMut,
}

impl Connection {
    /// Read what the server sent next into the buffer; 0 when it closed the connection.
    async fn read_more(&mut self) -> Result<usize, PlainError> {
        self.read.reserve(READ_ROOM);
        self.stream
            .read_buf(&mut self.read)
            .await
            .map_err(|e| PlainError::Unreachable(format!("reading the answer failed: {e}")))
    }

    /// Whether an idle connection can carry a request: the server has neither closed it nor
    /// sent anything unasked. Costs no system call unless the socket shows readable.
    fn is_usable(&mut self) -> bool {
        if self.stream.readable().now_or_never().is_none() {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn read_head(&mut self) -> Result<ResponseHead, PlainError> {
        loop {
            if !self.read.is_empty()
                && let Some((length, head)) = http1::parse_head(&self.read)?
            {
                self.read.advance(length);
                // An interim answer (100 Continue, 103 Early Hints): the final one follows.
                if !head.status.is_informational() {
                    return Ok(head);
                }
                continue;
            }
            if self.read_more().await? == 0 {
                return Err(PlainError::Unreachable(
                    "the server closed the connection without answering".into(),
                ));
            }
        }
    }
}

/// The body of an answer, read from its connection as it is asked for.
struct BodyReader {
    connection: Connection,
    decoder: BodyDecoder,
    keep_alive: bool,
}

impl BodyReader {
    /// The body's next bytes; `None` at its end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, PlainError> {
        loop {
            match self.decoder.decode(&mut self.connection.read)? {
                Decoded::Data(bytes) => return Ok(Some(bytes)),
                Decoded::End => return Ok(None),
                Decoded::NeedMore => {
                    if self.connection.read_more().await? == 0 {
                        self.decoder.at_eof()?;
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Whether the connection can carry the next request: the body was read to its end, the
    /// server keeps the connection, and sent nothing past the answer.
    fn reusable(&self) -> bool {
        self.keep_alive && self.decoder.is_done() && self.connection.read.is_empty()
    }
}

/// A connection in use; [`Lease::give_back`] returns it to its thread's idle list once the
/// answer was read to the end. Dropped instead (an answer streamed as SSE, a failed read), it
/// closes, and a new connection is opened in the background to take its place, so the next
/// request does not wait for a connect.
pub struct Lease<'a> {
    pool: &'a PlainHttp,
    body: Option<BodyReader>,
    given_back: bool,
}

impl Lease<'_> {
    /// The answer's next body bytes; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, PlainError> {
        match &mut self.body {
            Some(body) => body.next_chunk().await,
            None => Ok(None),
        }
    }

    /// Keep the connection for the next request on this thread, if it can carry one.
    pub fn give_back(mut self) {
        if let Some(body) = self.body.take()
            && body.reusable()
        {
            self.given_back = true;
            self.pool.server.keep_idle(body.connection);
        }
    }

    /// The rest of the body as a stream that owns the connection, which closes when the
    /// stream ends: the connection is not reused (a server may answer the next request on it
    /// late, as the Python SDK's does, and a stream may last long anyway).
    pub fn into_stream(mut self) -> Pin<Box<dyn Stream<Item = Result<Bytes, PlainError>> + Send>> {
        let body = self.body.take();
        Box::pin(futures::stream::unfold(body, |body| async move {
            let mut body = body?;
            match body.next_chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(body))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        }))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.given_back {
            return;
        }
        // Outside a runtime (a thread shutting down) there is nothing to make a spare for.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let server = Arc::clone(&self.pool.server);
            runtime.spawn(async move {
                match server.connect().await {
                    Ok(connection) => server.keep_idle(connection),
                    Err(e) => tracing::debug!(error = %e, "opening a spare connection failed"),
                }
            });
        }
    }
}

impl PlainHttp {
    /// Connections for `url`, or `None` when it is not a plain `http://` URL with a host.
    pub fn new(url: &url::Url, connect_timeout: Duration) -> Option<Self> {
        if url.scheme() != "http" {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        Some(Self {
            host: HeaderValue::from_str(&authority).ok()?,
            target,
            server: Arc::new(Server {
                connect_host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port,
                connect_timeout,
                idle: ThreadLocal::new(),
            }),
        })
    }

    /// Send a request to the server's URL on an idle connection of this thread, or a new one,
    /// and read the answer's head. A pooled connection the server closed meanwhile is passed
    /// over, and one that fails while the request is written is replaced: a request is sent
    /// again only when the server cannot have seen it whole.
    pub async fn send(
        &self,
        method: &Method,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<&[u8]>,
    ) -> Result<(ResponseHead, Lease<'_>), PlainError> {
        let mut request = Vec::with_capacity(512 + body.map_or(0, <[u8]>::len));
        http1::write_request(
            &mut request,
            method,
            &self.target,
            &self.host,
            headers,
            body,
        );
        let mut connection = loop {
            let pooled = self.server.idle.get_or_default().borrow_mut().pop();
            match pooled {
                Some(mut connection) => {
                    if connection.is_usable() && connection.stream.write_all(&request).await.is_ok()
                    {
                        break connection;
                    }
                }
                None => {
                    let mut connection = self.server.connect().await?;
                    connection.stream.write_all(&request).await.map_err(|e| {
                        PlainError::Unreachable(format!("sending the request failed: {e}"))
                    })?;
                    break connection;
                }
            }
        };
        let head = connection.read_head().await?;
        let lease = Lease {
            pool: self,
            body: Some(BodyReader {
                connection,
                decoder: BodyDecoder::new(head.framing),
                keep_alive: head.keep_alive,
            }),
            given_back: false,
        };
        Ok((head, lease))
    }
}

impl Server {
    /// Keep `connection` for the next request on this thread, unless enough are kept already.
    fn keep_idle(&self, connection: Connection) {
        let mut idle = self.idle.get_or_default().borrow_mut();
        if idle.len() < MAX_IDLE_PER_THREAD {
            idle.push(connection);
        }
    }

    async fn connect(&self) -> Result<Connection, PlainError> {
        let connecting = TcpStream::connect((self.connect_host.as_str(), self.port));
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| {
                PlainError::Unreachable(format!(
                    "connecting to {}:{} took longer than {:?}",
                    self.connect_host, self.port, self.connect_timeout
                ))
            })?
            .map_err(|e| {
                PlainError::Unreachable(format!(
                    "cannot connect to {}:{}: {e}",
                    self.connect_host, self.port
                ))
            })?;
        // Requests are small and latency-bound; Nagle would hold them back.
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            read: BytesMut::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener on a port from the OS, and the MCP URL on it.
    async fn listen() -> (tokio::net::TcpListener, url::Url) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            url::Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
        (listener, url)
    }

    /// POST `{}` through `pool`; the whole answer body and the connection's lease.
    async fn call(pool: &PlainHttp) -> (Bytes, Lease<'_>) {
        let (_, mut lease) = pool.send(&Method::POST, &[], Some(b"{}")).await.unwrap();
        let mut body = Vec::new();
        while let Some(chunk) = lease.next_chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        (Bytes::from(body), lease)
    }

    /// A server that answers one request per connection with keep-alive, then closes it when
    /// told to, as a server whose keep-alive timeout is shorter than the gateway's idle time does.
    async fn one_answer_per_connection(
        listener: tokio::net::TcpListener,
        mut close: tokio::sync::mpsc::UnboundedReceiver<()>,
        closed: tokio::sync::mpsc::UnboundedSender<usize>,
    ) {
        for connection in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let body = format!("answer {connection}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            if close.recv().await.is_none() {
                return;
            }
            let _ = stream.shutdown().await;
            drop(stream);
            let _ = closed.send(connection);
        }
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let (listener, url) = listen().await;
        let (close, closing) = tokio::sync::mpsc::unbounded_channel();
        let (closed, mut was_closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(one_answer_per_connection(listener, closing, closed));
        let pool = PlainHttp::new(&url, Duration::from_secs(5)).unwrap();
        for expected in 0..3 {
            let (body, lease) = call(&pool).await;
            assert_eq!(body, format!("answer {expected}"));
            lease.give_back();
            // The server closes the idle connection that was just given back.
            close.send(()).unwrap();
            assert_eq!(was_closed.recv().await, Some(expected));
        }
    }

    /// A keep-alive server that answers `answer N` on its Nth connection and reports each
    /// connection it accepts.
    async fn numbered_connections(
        listener: tokio::net::TcpListener,
        accepted: tokio::sync::mpsc::UnboundedSender<usize>,
    ) {
        for connection in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let _ = accepted.send(connection);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                loop {
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    request.clear();
                    let body = format!("answer {connection}");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn a_connection_not_given_back_is_replaced_before_the_next_request() {
        let (listener, url) = listen().await;
        let (accepted, mut was_accepted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(numbered_connections(listener, accepted));
        let pool = PlainHttp::new(&url, Duration::from_secs(5)).unwrap();
        let (body, lease) = call(&pool).await;
        assert_eq!(body, "answer 0");
        drop(lease); // as after an SSE answer
        assert_eq!(was_accepted.recv().await, Some(0));
        let spare = tokio::time::timeout(Duration::from_secs(10), was_accepted.recv()).await;
        assert_eq!(
            spare,
            Ok(Some(1)),
            "a spare connection is opened before any request needs it"
        );
        // The spare is kept once its connect completes on this thread.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.server.idle.get_or_default().borrow().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no spare was kept");
            tokio::task::yield_now().await;
        }
        let (body, lease) = call(&pool).await;
        assert_eq!(body, "answer 1", "the next request goes on the spare");
        lease.give_back();
        let (body, _lease) = call(&pool).await;
        assert_eq!(body, "answer 1", "a connection given back is reused");
        assert!(
            was_accepted.try_recv().is_err(),
            "no other connection was opened"
        );
    }

    /// A server that answers requests, on whichever connection they come, with `answers` in
    /// order (each written in the pieces given, as separate writes), closes a connection after
    /// an answer that says `connection: close`, and reports the connection each answer went on.
    async fn scripted(
        listener: tokio::net::TcpListener,
        answers: Vec<Vec<&'static [u8]>>,
        served: tokio::sync::mpsc::UnboundedSender<usize>,
    ) {
        let answers = Arc::new(std::sync::Mutex::new(answers.into_iter()));
        for connection in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (answers, served) = (answers.clone(), served.clone());
            tokio::spawn(async move {
                loop {
                    // The whole request, body included: closing a socket with unread bytes
                    // resets the connection, and the answer with it.
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.ends_with(b"\r\n\r\n{}") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let Some(pieces) = answers.lock().unwrap().next() else {
                        return;
                    };
                    let _ = served.send(connection);
                    let mut closes = false;
                    for piece in pieces {
                        closes |= piece.windows(17).any(|w| w == b"connection: close");
                        let _ = stream.write_all(piece).await;
                        let _ = stream.flush().await;
                        tokio::task::yield_now().await;
                    }
                    if closes {
                        return;
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn a_chunked_answer_is_read_whole_and_its_connection_reused() {
        let (listener, url) = listen().await;
        let (served, mut was_served) = tokio::sync::mpsc::unbounded_channel();
        let chunked: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirs",
            b"t\r\n8\r\n, secon",
            b"d\r\n0\r\n\r\n",
        ];
        let plain: Vec<&'static [u8]> = vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nthird"];
        tokio::spawn(scripted(listener, vec![chunked, plain], served));
        let pool = PlainHttp::new(&url, Duration::from_secs(5)).unwrap();
        let (body, lease) = call(&pool).await;
        assert_eq!(body, "first, second");
        lease.give_back();
        let (body, _lease) = call(&pool).await;
        assert_eq!(body, "third");
        let first = was_served.recv().await;
        assert_eq!(
            was_served.recv().await,
            first,
            "the second request went on the first connection"
        );
    }

    #[tokio::test]
    async fn interim_answers_before_the_final_one_are_read_past() {
        let (listener, url) = listen().await;
        let (served, _was_served) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(scripted(
            listener,
            vec![vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
            ]],
            served,
        ));
        let pool = PlainHttp::new(&url, Duration::from_secs(5)).unwrap();
        let (head, mut lease) = pool.send(&Method::POST, &[], Some(b"{}")).await.unwrap();
        assert_eq!(head.status, axum::http::StatusCode::OK);
        assert_eq!(
            lease.next_chunk().await.unwrap().as_deref(),
            Some(&b"final"[..])
        );
    }

    #[tokio::test]
    async fn a_connection_the_answer_closes_or_overruns_is_not_reused() {
        let (listener, url) = listen().await;
        let (served, mut was_served) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(scripted(
            listener,
            vec![
                vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\none"],
                // Bytes past the declared length: the connection cannot be trusted again.
                vec![b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwoXX"],
                vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nthree"],
            ],
            served,
        ));
        let pool = PlainHttp::new(&url, Duration::from_secs(5)).unwrap();
        let mut connections = Vec::new();
        for expected in ["one", "two", "three"] {
            let (body, lease) = call(&pool).await;
            assert_eq!(body, expected);
            lease.give_back();
            connections.push(was_served.recv().await.unwrap());
        }
        assert!(
            connections[0] != connections[1] && connections[1] != connections[2],
            "each answer after one that ends its connection's use goes on another: {connections:?}"
        );
    }

    #[tokio::test]
    async fn a_malformed_or_cut_short_answer_is_an_error_that_says_so() {
        for (answer, expected) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"[..],
                "Content-Length \"x\"",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nshort",
                "closed the connection before the answer ended",
            ),
            (b"hello\r\n\r\n", "not HTTP/1.1"),
        ] {
            let (listener, url) = listen().await;
            let (served, _was_served) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(scripted(listener, vec![vec![answer]], served));
            let pool = PlainHttp::new(&url, Duration::from_secs(5)).unwrap();
            let error = match pool.send(&Method::POST, &[], Some(b"{}")).await {
                Err(e) => e,
                Ok((_, mut lease)) => loop {
                    match lease.next_chunk().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => panic!("{answer:?} was read as a whole answer"),
                        Err(e) => break e,
                    }
                },
            };
            assert!(
                error.to_string().contains(expected),
                "{answer:?}: {error} does not say {expected:?}"
            );
        }
    }

    #[test]
    fn only_plain_http_urls_are_pooled_here() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        let pool = PlainHttp::new(&url("http://127.0.0.1:8080/mcp?x=1"), Duration::ZERO).unwrap();
        assert_eq!(
            (pool.server.connect_host.as_str(), pool.server.port),
            ("127.0.0.1", 8080)
        );
        assert_eq!(pool.host, "127.0.0.1:8080");
        assert_eq!(pool.target, "/mcp?x=1");
        let pool = PlainHttp::new(&url("http://server.tools.svc/"), Duration::ZERO).unwrap();
        assert_eq!(
            (pool.server.connect_host.as_str(), pool.server.port),
            ("server.tools.svc", 80)
        );
        assert_eq!(pool.host, "server.tools.svc");
        let pool = PlainHttp::new(&url("http://[::1]:9000/mcp"), Duration::ZERO).unwrap();
        assert_eq!(
            (pool.server.connect_host.as_str(), pool.server.port),
            ("::1", 9000)
        );
        assert_eq!(pool.host, "[::1]:9000");
        assert!(PlainHttp::new(&url("https://server.example/mcp"), Duration::ZERO).is_none());
    }
}
