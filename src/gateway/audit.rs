//! The audit log: one JSON line per `tools/call`, `prompts/get` and `resources/read`, each carrying
//! the SHA-256 of the line before it, so a removed, inserted or edited line breaks the chain.
//! Tokens and raw arguments never appear: session ids and arguments are hashed.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

use crate::builders::gateway::sha256_hex;

/// `prev` of the first line.
pub const CHAIN_START: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited request.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// `namespace/name` of the server.
    pub server: String,
    /// JSON-RPC method.
    pub method: String,
    /// Token subject, empty when unauthenticated.
    pub subject: String,
    /// OAuth client id, when the token names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// SHA-256 of the session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Tool, prompt or resource named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// SHA-256 of the tool's definition, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_sha256: Option<String>,
    /// SHA-256 of the canonical JSON of the arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<String>,
    /// `allow`, `deny`, `invalid`, `rate_limited` or `error`.
    pub decision: &'static str,
    /// What decided (`authorization.rules[N]`, `defaultDeny`, `inputSchema`, ...).
    pub decided_by: String,
    /// Milliseconds from arrival to the end of the answer.
    pub latency_ms: f64,
    /// W3C trace id, when the request is traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// The chain's head and the lines chained but not yet written, in chain order.
struct Chain {
    prev: String,
    pending: Vec<u8>,
}

/// Pending bytes that make `append` write at once instead of waiting for [`AuditLog::flush`].
pub const WRITE_AT_BYTES: usize = 64 * 1024;

/// Writes chained audit lines to a sink (standard output in the gateway).
///
/// A line is chained when its request ends, and written by [`AuditLog::flush`], which each
/// serving thread calls once it has sent its answers and is about to wait (and every half second,
/// and at shutdown), or at once when [`WRITE_AT_BYTES`] are pending. So the write system call
/// is not paid between an upstream's answer and the client's (about 5 µs of a one-client
/// `tools/call` in `benches/gateway_latency.rs`), and under load one write carries many lines.
///
/// Serving threads chain their lines under one short lock; whichever thread finds the sink free
/// writes everything pending, in chain order. No thread waits for another's write: a lock held
/// across the write system call put serving threads to sleep (a futex wait every other request
/// at 32 clients).
pub struct AuditLog {
    chain: Mutex<Chain>,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl AuditLog {
    /// A log writing to `sink`.
    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        Self {
            chain: Mutex::new(Chain {
                prev: CHAIN_START.to_owned(),
                pending: Vec::new(),
            }),
            sink: Mutex::new(sink),
        }
    }

    /// Append one record, chained to the line before it. It is written by the next
    /// [`AuditLog::flush`], or now when [`WRITE_AT_BYTES`] are pending.
    pub fn append(&self, record: &AuditRecord) {
        // The record is serialised outside the lock; only `prev` depends on the chain.
        let mut line = Vec::with_capacity(512);
        if let Err(e) = serde_json::to_writer(&mut line, record) {
            tracing::error!(error = %e, "cannot serialise an audit record");
            return;
        }
        // `{...}` becomes `{...,"prev":"<hash of the line before>"}`.
        line.pop();
        {
            let mut chain = self.chain();
            line.extend_from_slice(br#","prev":""#);
            line.extend_from_slice(chain.prev.as_bytes());
            line.extend_from_slice(br#""}"#);
            chain.prev = sha256_hex(&line);
            line.push(b'\n');
            chain.pending.extend_from_slice(&line);
            if chain.pending.len() < WRITE_AT_BYTES {
                return;
            }
        }
        self.write_pending();
    }

    /// Write every line chained so far, unless another thread is writing (which then writes
    /// them too).
    pub fn flush(&self) {
        if !self.chain().pending.is_empty() {
            self.write_pending();
        }
    }

    /// The chain; a thread that panicked holding it left it whole (every change is one step).
    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.chain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_pending(&self) {
        loop {
            let mut sink = match self.sink.try_lock() {
                Ok(sink) => sink,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                // The thread writing now checks for pending lines once it is done.
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            loop {
                let batch = std::mem::take(&mut self.chain().pending);
                if batch.is_empty() {
                    break;
                }
                // One write per batch of whole lines: with O_APPEND a line is never interleaved
                // with another writer's.
                if let Err(e) = sink.write_all(&batch).and_then(|()| sink.flush()) {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
            }
            drop(sink);
            // A line chained while the sink was being released would otherwise wait for the
            // next request.
            if self.chain().pending.is_empty() {
                return;
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Check a chain of audit lines; the index of the first line whose `prev` does not match.
pub fn verify_chain<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<usize, usize> {
    let mut prev = CHAIN_START.to_owned();
    let mut count = 0;
    for (index, line) in lines.into_iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|_| index)?;
        if value.get("prev").and_then(|p| p.as_str()) != Some(prev.as_str()) {
            return Err(index);
        }
        prev = sha256_hex(line.as_bytes());
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(n: u32) -> AuditRecord {
        AuditRecord {
            time: "2026-01-01T00:00:00Z".into(),
            server: "tools/github".into(),
            method: "tools/call".into(),
            subject: format!("user-{n}"),
            client_id: None,
            session: None,
            target: Some("echo".into()),
            tool_sha256: None,
            arguments_sha256: None,
            decision: "allow",
            decided_by: "defaultAllow".into(),
            latency_ms: 1.0,
            trace_id: None,
        }
    }

    #[test]
    fn lines_appended_from_many_threads_form_one_unbroken_chain() {
        let buffer = Shared::default();
        let log = Arc::new(AuditLog::new(Box::new(buffer.clone())));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for n in 0..200 {
                        log.append(&record(t * 1000 + n));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        log.flush();
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(verify_chain(text.lines()), Ok(1600));
        let mut subjects: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["subject"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        subjects.sort();
        subjects.dedup();
        assert_eq!(subjects.len(), 1600, "every record is written exactly once");
    }

    #[test]
    fn lines_wait_for_a_flush_or_a_full_buffer_and_none_is_lost_on_drop() {
        let buffer = Shared::default();
        let written = |b: &Shared| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        let log = AuditLog::new(Box::new(buffer.clone()));
        log.append(&record(0));
        assert_eq!(written(&buffer), "", "written before a flush");
        log.flush();
        assert_eq!(written(&buffer).lines().count(), 1);
        // Enough lines to pass the limit are written without a flush.
        let mut appended = 1;
        while written(&buffer).lines().count() == 1 {
            log.append(&record(appended));
            appended += 1;
            assert!(appended < 10_000, "never written without a flush");
        }
        assert_eq!(
            verify_chain(written(&buffer).lines()),
            Ok(appended as usize)
        );
        log.append(&record(appended));
        drop(log);
        assert_eq!(
            verify_chain(written(&buffer).lines()),
            Ok(appended as usize + 1),
            "the last line is written when the log is dropped"
        );
    }

    #[test]
    fn the_chain_detects_edits_removals_and_insertions() {
        let buffer = Shared::default();
        let log = AuditLog::new(Box::new(buffer.clone()));
        for n in 0..4 {
            log.append(&record(n));
        }
        log.flush();
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(verify_chain(lines.iter().copied()), Ok(4));
        let edited = lines[1].replace("user-1", "user-9");
        let tampered = [lines[0], edited.as_str(), lines[2], lines[3]];
        assert_eq!(verify_chain(tampered), Err(2));
        assert_eq!(verify_chain([lines[0], lines[2], lines[3]]), Err(1));
    }
}
