//! Plain-HTTP connections to the server behind the gateway, kept per serving thread.
//!
//! This is the gateway's hot path. Each serving thread runs its own single-threaded runtime, so
//! a connection opened on a thread is driven there and a request never wakes another thread.
//! hyper's HTTP/1 client is used directly: a general-purpose client's pool, URL handling and
//! layers cost, per request, as much CPU as everything else the gateway does (measured with
//! `benches/gateway_latency.rs`). TLS upstreams go through reqwest instead.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Request, Response, Uri, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use thread_local::ThreadLocal;

/// Idle connections kept per serving thread; more are closed when they come back.
const MAX_IDLE_PER_THREAD: usize = 256;

type Sender = SendRequest<Full<Bytes>>;

/// Connections to one `http://` server.
pub struct PlainHttp {
    /// `Host` header of every request.
    host: HeaderValue,
    /// Path and query every request is sent to.
    path: Uri,
    /// Where connections go and the idle ones; shared with background connects.
    server: Arc<Server>,
}

/// The server's address and each serving thread's idle connections to it.
struct Server {
    /// Host name or address to connect to (IPv6 without brackets).
    connect_host: String,
    port: u16,
    connect_timeout: Duration,
    idle: ThreadLocal<RefCell<Vec<Sender>>>,
}

/// A connection in use; [`Lease::give_back`] returns it to its thread's idle list once the
/// answer was read to the end. Dropped instead (an answer streamed as SSE, a failed read), it
/// closes when the answer ends, and a new connection is opened in the background to take its
/// place, so the next request does not wait for a connect.
pub struct Lease<'a> {
    pool: &'a PlainHttp,
    sender: Option<Sender>,
}

impl Lease<'_> {
    /// Keep the connection for the next request on this thread.
    pub fn give_back(mut self) {
        if let Some(sender) = self.sender.take()
            && !sender.is_closed()
        {
            self.pool.server.keep_idle(sender);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.sender.take().is_none() {
            return;
        }
        // A connection that carried an SSE answer is not reused (a server may answer the next
        // request on it late, as the Python SDK's does), so one that has never carried a
        // request is made ready now, while this thread is otherwise waiting. Outside a runtime
        // (a thread shutting down) there is nothing to make it ready for.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let server = Arc::clone(&self.pool.server);
            runtime.spawn(async move {
                match server.connect().await {
                    Ok(sender) => server.keep_idle(sender),
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
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        Some(Self {
            host: HeaderValue::from_str(&authority).ok()?,
            path: path.parse().ok()?,
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

    /// A request to the server's URL with its `Host` header set.
    pub fn request(&self, method: axum::http::Method) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(self.path.clone())
            .header(header::HOST, self.host.clone())
    }

    /// Send `request` on an idle connection of this thread, or a new one. A pooled connection
    /// the server closed meanwhile is replaced, and the request sent again, only when it was
    /// not sent at all.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease<'_>), String> {
        let (mut sender, reused) = self.checkout().await?;
        let lease = |sender| Lease {
            pool: self,
            sender: Some(sender),
        };
        match sender.try_send_request(request).await {
            Ok(response) => Ok((response, lease(sender))),
            Err(mut failed) => match failed.take_message() {
                Some(request) if reused => {
                    let mut sender = self.server.connect().await?;
                    let response = sender
                        .send_request(request)
                        .await
                        .map_err(|e| super::error_chain(&e))?;
                    Ok((response, lease(sender)))
                }
                _ => Err(super::error_chain(failed.error())),
            },
        }
    }

    async fn checkout(&self) -> Result<(Sender, bool), String> {
        loop {
            let pooled = self.server.idle.get_or_default().borrow_mut().pop();
            match pooled {
                // Ready at once unless the server closed it; then the next one is tried.
                Some(mut sender) => {
                    if sender.ready().await.is_ok() {
                        return Ok((sender, true));
                    }
                }
                None => return Ok((self.server.connect().await?, false)),
            }
        }
    }
}

impl Server {
    /// Keep `sender` for the next request on this thread, unless enough are kept already.
    fn keep_idle(&self, sender: Sender) {
        let mut idle = self.idle.get_or_default().borrow_mut();
        if idle.len() < MAX_IDLE_PER_THREAD {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<Sender, String> {
        let connecting = tokio::net::TcpStream::connect((self.connect_host.as_str(), self.port));
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| {
                format!(
                    "connecting to {}:{} took longer than {:?}",
                    self.connect_host, self.port, self.connect_timeout
                )
            })?
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.connect_host, self.port))?;
        // Requests are small and latency-bound; Nagle would hold them back.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| super::error_chain(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a connection to the MCP server ended");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A listener on a port from the OS, and the MCP URL on it.
    async fn listen() -> (tokio::net::TcpListener, url::Url) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            url::Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
        (listener, url)
    }

    /// POST `{}` through `pool`; the whole answer body and the connection's lease.
    async fn call(pool: &PlainHttp) -> (Bytes, Lease<'_>) {
        let request = pool
            .request(axum::http::Method::POST)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (response, lease) = pool.send(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (body, lease)
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

    #[test]
    fn only_plain_http_urls_are_pooled_here() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        let pool = PlainHttp::new(&url("http://127.0.0.1:8080/mcp?x=1"), Duration::ZERO).unwrap();
        assert_eq!(
            (pool.server.connect_host.as_str(), pool.server.port),
            ("127.0.0.1", 8080)
        );
        assert_eq!(pool.host, "127.0.0.1:8080");
        assert_eq!(pool.path, "/mcp?x=1");
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
