//! The audit log: one JSON line per `tools/call`, `prompts/get` and `resources/read`, each carrying
//! the SHA-256 of the line before it, so a removed, inserted or edited line breaks the chain.
//! Tokens and raw arguments never appear: session ids and arguments are hashed.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::inventory::{definition_hash, rfc3339};
use crate::builders::gateway::sha256_hex;

/// `prev` of the first line.
pub const CHAIN_START: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited request.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// When the request arrived; written as RFC 3339 when the record is chained.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub time: SystemTime,
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

fn serialize_rfc3339<S: serde::Serializer>(at: &SystemTime, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(&rfc3339(*at))
}

impl AuditRecord {
    /// The record as one JSON object, byte for byte what its `Serialize` derive writes. Member
    /// names are written as they are, and a string that needs no escaping (the usual case:
    /// digests, the time, names) is copied after one check of its bytes; the rest goes through
    /// serde_json's escaping. The derive spent most of a record's serialisation escaping
    /// strings that do not need it.
    fn write_json(&self, out: &mut Vec<u8>, clock: &mut SecondsCache) -> serde_json::Result<()> {
        out.extend_from_slice(br#"{"time":""#);
        clock.write_rfc3339(self.time, out);
        out.push(b'"');
        write_member(out, br#","server":"#, &self.server)?;
        write_member(out, br#","method":"#, &self.method)?;
        write_member(out, br#","subject":"#, &self.subject)?;
        if let Some(client_id) = &self.client_id {
            write_member(out, br#","clientId":"#, client_id)?;
        }
        if let Some(session) = &self.session {
            write_member(out, br#","session":"#, session)?;
        }
        if let Some(target) = &self.target {
            write_member(out, br#","target":"#, target)?;
        }
        if let Some(tool) = &self.tool_sha256 {
            write_member(out, br#","toolSha256":"#, tool)?;
        }
        if let Some(arguments) = &self.arguments_sha256 {
            write_member(out, br#","argumentsSha256":"#, arguments)?;
        }
        write_member(out, br#","decision":"#, self.decision)?;
        write_member(out, br#","decidedBy":"#, &self.decided_by)?;
        out.extend_from_slice(br#","latencyMs":"#);
        serde_json::to_writer(&mut *out, &self.latency_ms)?;
        if let Some(trace) = &self.trace_id {
            write_member(out, br#","traceId":"#, trace)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// `member` (written as it is) followed by `value` as a JSON string.
fn write_member(out: &mut Vec<u8>, member: &[u8], value: &str) -> serde_json::Result<()> {
    out.extend_from_slice(member);
    if needs_escaping(value) {
        serde_json::to_writer(out, value)
    } else {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        Ok(())
    }
}

/// Whether serde_json changes `value` when it writes it as a string: it escapes control
/// characters, `"` and `\` and nothing else. No early exit, so the check runs on whole
/// vector registers.
fn needs_escaping(value: &str) -> bool {
    value.bytes().fold(false, |seen, b| {
        seen | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// What a record's hashed fields are computed from when it is chained, off the request's path;
/// held in memory only until then, never written.
#[derive(Debug, Default)]
pub struct Unhashed {
    /// Becomes [`AuditRecord::session`], unless `session_hash` is known.
    pub session_id: Option<String>,
    /// The session id's hash, when the session table had it.
    pub session_hash: Option<Arc<str>>,
    /// Becomes [`AuditRecord::arguments_sha256`].
    pub arguments: Option<serde_json::Value>,
}

impl Unhashed {
    fn fill(self, record: &mut AuditRecord) {
        if let Some(hashed) = self.session_hash {
            record.session = Some(hashed.to_string());
        } else if let Some(session) = self.session_id {
            record.session = Some(sha256_hex(session.as_bytes()));
        }
        if let Some(arguments) = &self.arguments {
            record.arguments_sha256 = Some(definition_hash(arguments));
        }
    }
}

/// The chain's head and the sink, held by whichever thread is writing.
struct Writer {
    prev: String,
    sink: Box<dyn Write + Send>,
    /// Reused between batches.
    batch: Vec<u8>,
    clock: SecondsCache,
}

/// [`rfc3339`] with the whole-second part formatted once per second: records come in time
/// order, thousands a second, and formatting a date was most of writing the `time` member.
#[derive(Default)]
struct SecondsCache {
    /// Seconds since the epoch, and their RFC 3339 form without the `Z`.
    second: Option<(u64, String)>,
}

impl SecondsCache {
    /// Append `at` as [`rfc3339`] writes it.
    fn write_rfc3339(&mut self, at: SystemTime, out: &mut Vec<u8>) {
        let since = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let seconds = since.as_secs();
        let prefix = match &self.second {
            Some((cached, prefix)) if *cached == seconds => prefix,
            _ => {
                let whole = rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
                let prefix = whole.strip_suffix('Z').unwrap_or(&whole).to_owned();
                &self.second.insert((seconds, prefix)).1
            }
        };
        out.extend_from_slice(prefix.as_bytes());
        let nanos = since.subsec_nanos();
        if nanos > 0 {
            // As jiff writes it: nine digits less the trailing zeros.
            let mut digits = *b".000000000";
            let mut rest = nanos;
            for digit in digits[1..].iter_mut().rev() {
                *digit = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            let end = digits
                .iter()
                .rposition(|&d| d != b'0')
                .map_or(1, |last| last + 1);
            out.extend_from_slice(&digits[..end]);
        }
        out.push(b'Z');
    }
}

/// Records waiting that make [`AuditLog::append`] write them itself, waiting for the sink: a
/// sink slower than the traffic slows the traffic instead of growing memory or dropping lines.
/// Far above what [`WRITE_EVERY`] lets pile up at tens of thousands of calls a second.
pub const WRITE_AT_RECORDS: usize = 8192;

/// How often the writer thread ([`AuditLog::spawn_writer`]) writes the records waiting while
/// calls keep coming. Small batches: one 50 ms batch at 32 clients was 3 ms of work that doubled
/// the calls' p99 (`benches/gateway_latency.rs`).
pub const WRITE_EVERY: Duration = Duration::from_millis(5);

/// The writer thread's longest sleep: after each round that finds nothing it sleeps twice as
/// long, up to this, so an idle gateway wakes a few times a second, not two hundred.
pub const WRITE_EVERY_WHEN_QUIET: Duration = Duration::from_millis(200);

/// Writes chained audit lines to a sink (standard output in the gateway).
///
/// A serving thread only queues its record, in the order its request ends. Serialising and
/// chaining happen when a serving thread is about to wait with nothing else to do
/// ([`AuditLog::chain_queued`]), or on the writer thread for threads that never wait; the write
/// system call happens on the writer thread every [`WRITE_EVERY`] (and at shutdown, and on the
/// serving thread only past [`WRITE_AT_RECORDS`]). So none of that work sits between an
/// upstream's answer and the client's: with one client it was about 3 µs of each `tools/call`.
/// Chaining on the writer thread alone gave it bursts of work that delayed calls on the same
/// CPU (one-client p99 0.16-0.18 → 0.22-0.23 ms, see `benches/gateway_latency.rs`).
pub struct AuditLog {
    queued: Mutex<Vec<(AuditRecord, Unhashed)>>,
    writer: Mutex<Writer>,
}

impl AuditLog {
    /// A log writing to `sink`.
    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        Self {
            queued: Mutex::new(Vec::new()),
            writer: Mutex::new(Writer {
                prev: CHAIN_START.to_owned(),
                sink,
                batch: Vec::new(),
                clock: SecondsCache::default(),
            }),
        }
    }

    /// Queue one record, to be chained to the line before it by [`AuditLog::chain_queued`] or
    /// [`AuditLog::flush`], and written by the next flush.
    pub fn append(&self, record: AuditRecord) {
        self.append_unhashed(record, Unhashed::default());
    }

    /// [`AuditLog::append`], with the hashed fields still to compute from `unhashed`.
    pub fn append_unhashed(&self, record: AuditRecord, unhashed: Unhashed) {
        let waiting = {
            let mut queued = lock(&self.queued);
            queued.push((record, unhashed));
            queued.len()
        };
        if waiting >= WRITE_AT_RECORDS {
            let _ = self.flush();
        }
    }

    /// Turn the queued records into chained lines, to be written by the next
    /// [`AuditLog::flush`]; for a serving thread about to wait with nothing else to do, so the
    /// writer thread is left with the write system call alone. Skipped while another thread
    /// holds the chain: it takes these records too.
    pub fn chain_queued(&self) {
        let mut writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let records = std::mem::take(&mut *lock(&self.queued));
        writer.chain(records);
    }

    /// Write every record queued so far; returns once they are written, with how many bytes
    /// that took.
    pub fn flush(&self) -> usize {
        let mut writer = lock(&self.writer);
        loop {
            // Taken under the writer's lock, so records are chained in the order they queued.
            let records = std::mem::take(&mut *lock(&self.queued));
            if records.is_empty() {
                break;
            }
            writer.chain(records);
        }
        writer.write_out()
    }

    /// A thread that writes the queued records every [`WRITE_EVERY`] (backing off to
    /// [`WRITE_EVERY_WHEN_QUIET`] while there are none) until `stop` is dropped, then once more.
    pub fn spawn_writer(
        self: &Arc<Self>,
        stop: std::sync::mpsc::Receiver<()>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let log = self.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let mut sleep = WRITE_EVERY;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(sleep)
                {
                    sleep = if log.flush() > 0 {
                        WRITE_EVERY
                    } else {
                        (sleep * 2).min(WRITE_EVERY_WHEN_QUIET)
                    };
                }
                log.flush();
            })
    }
}

impl Writer {
    /// Append the records to the batch as chained lines.
    fn chain(&mut self, records: Vec<(AuditRecord, Unhashed)>) {
        for (mut record, unhashed) in records {
            unhashed.fill(&mut record);
            let start = self.batch.len();
            if let Err(e) = record.write_json(&mut self.batch, &mut self.clock) {
                tracing::error!(error = %e, "cannot serialise an audit record");
                self.batch.truncate(start);
                continue;
            }
            // `{...}` becomes `{...,"prev":"<hash of the line before>"}`.
            self.batch.pop();
            self.batch.extend_from_slice(br#","prev":""#);
            self.batch.extend_from_slice(self.prev.as_bytes());
            self.batch.extend_from_slice(br#""}"#);
            self.prev = sha256_hex(&self.batch[start..]);
            self.batch.push(b'\n');
        }
    }

    /// Write the batch; the number of bytes written.
    fn write_out(&mut self) -> usize {
        if self.batch.is_empty() {
            return 0;
        }
        // One write per batch of whole lines: with O_APPEND a line is never interleaved with
        // another writer's.
        if let Err(e) = self
            .sink
            .write_all(&self.batch)
            .and_then(|()| self.sink.flush())
        {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        let written = self.batch.len();
        self.batch.clear();
        written
    }
}

/// A lock a panicking thread left is still whole: every change under it is one step.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
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
                        log.append(record(t * 1000 + n));
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
        log.append(record(0));
        assert_eq!(written(&buffer), "", "written before a flush");
        log.flush();
        assert_eq!(written(&buffer).lines().count(), 1);
        // Enough lines to pass the limit are written without a flush.
        let mut appended = 1;
        while written(&buffer).lines().count() == 1 {
            log.append(record(appended));
            appended += 1;
            assert!(appended < 10_000, "never written without a flush");
        }
        assert_eq!(
            verify_chain(written(&buffer).lines()),
            Ok(appended as usize)
        );
        log.append(record(appended));
        drop(log);
        assert_eq!(
            verify_chain(written(&buffer).lines()),
            Ok(appended as usize + 1),
            "the last line is written when the log is dropped"
        );
    }

    #[test]
    fn the_writer_thread_writes_queued_lines_by_itself_and_the_rest_when_stopped() {
        let buffer = Shared::default();
        let written = |b: &Shared| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        let log = Arc::new(AuditLog::new(Box::new(buffer.clone())));
        let (stop, stopped) = std::sync::mpsc::channel();
        let writer = log.spawn_writer(stopped).unwrap();
        log.append(record(0));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while written(&buffer).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer thread never wrote"
            );
            std::thread::sleep(WRITE_EVERY / 5);
        }
        for n in 1..5 {
            log.append(record(n));
        }
        drop(stop);
        writer.join().unwrap();
        assert_eq!(verify_chain(written(&buffer).lines()), Ok(5));
    }

    #[test]
    fn lines_chained_by_a_waiting_thread_are_written_by_the_next_flush_in_order() {
        let buffer = Shared::default();
        let log = AuditLog::new(Box::new(buffer.clone()));
        log.append(record(0));
        log.append(record(1));
        log.chain_queued();
        assert!(
            buffer.0.lock().unwrap().is_empty(),
            "chaining does not write"
        );
        log.append(record(2));
        assert!(log.flush() > 0);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(verify_chain(text.lines()), Ok(3));
        let subjects: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["subject"].to_string())
            .collect();
        assert_eq!(subjects, [r#""user-0""#, r#""user-1""#, r#""user-2""#]);
        assert_eq!(log.flush(), 0, "nothing is written twice");
    }

    #[test]
    fn the_fixed_writer_matches_the_serde_derive_byte_for_byte() {
        let digest = sha256_hex(b"x");
        let awkward = "q\"uote \\ back\u{1}ctl\ttab é 🦀 \u{2028}";
        // Each character serde_json escapes, alone and among plain ones; DEL and U+2028 it keeps.
        for escaped in ["\"", "\\", "\u{0}", "\u{1f}", "a\nb", "\u{7f}", "x\u{2028}"] {
            let mut fixed = Vec::new();
            write_member(&mut fixed, b"", escaped).unwrap();
            assert_eq!(fixed, serde_json::to_vec(escaped).unwrap(), "{escaped:?}");
        }
        let mut cases = vec![record(1)];
        for latency in [0.0, 1.5, 1e-7, 12345.678, f64::NAN] {
            cases.push(AuditRecord {
                client_id: Some("client-a".into()),
                session: Some(digest.clone()),
                tool_sha256: Some(digest.clone()),
                arguments_sha256: Some(digest.clone()),
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                latency_ms: latency,
                ..record(2)
            });
        }
        cases.push(AuditRecord {
            server: awkward.into(),
            method: awkward.into(),
            subject: awkward.into(),
            client_id: Some(awkward.into()),
            session: Some(awkward.into()),
            target: Some(awkward.into()),
            tool_sha256: Some(awkward.into()),
            arguments_sha256: Some("ABCDEF0123456789".into()),
            decided_by: awkward.into(),
            trace_id: Some(awkward.into()),
            ..record(3)
        });
        cases.push(AuditRecord {
            target: None,
            trace_id: Some(String::new()),
            decision: "deny",
            ..record(4)
        });
        let mut clock = SecondsCache::default();
        for case in cases {
            let mut fixed = Vec::new();
            case.write_json(&mut fixed, &mut clock).unwrap();
            let derived = serde_json::to_vec(&case).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&fixed),
                String::from_utf8_lossy(&derived)
            );
        }
    }

    #[test]
    fn cached_seconds_write_the_time_as_rfc3339_does() {
        let mut clock = SecondsCache::default();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let nanos = [
            0,
            1,
            10,
            999_999_999,
            120_000_000,
            500_000_000,
            123_456_789,
            7_000,
        ];
        // The same second again and again, then the next ones, then back (a clock step).
        for second in [0, 0, 1, 86_399, 0] {
            for n in nanos {
                let at = base + Duration::new(second, n);
                let mut written = Vec::new();
                clock.write_rfc3339(at, &mut written);
                assert_eq!(String::from_utf8(written).unwrap(), rfc3339(at), "{at:?}");
            }
        }
    }

    #[test]
    fn session_ids_and_arguments_are_written_only_as_their_hashes() {
        let buffer = Shared::default();
        let log = AuditLog::new(Box::new(buffer.clone()));
        let arguments = serde_json::json!({"text": "secret words", "n": 1});
        log.append_unhashed(
            record(0),
            Unhashed {
                session_id: Some("session-123".into()),
                session_hash: None,
                arguments: Some(arguments.clone()),
            },
        );
        // A session the session table knows comes with its hash.
        let sessions = super::super::sessions::Sessions::default();
        sessions.open("session-456", "alice");
        log.append_unhashed(
            record(1),
            Unhashed {
                session_hash: sessions.touch("session-456", "alice").ok(),
                ..Unhashed::default()
            },
        );
        log.flush();
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            !text.contains("session-123") && !text.contains("secret words"),
            "{text}"
        );
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let line = &lines[0];
        assert_eq!(line["session"], sha256_hex(b"session-123"));
        assert_eq!(lines[1]["session"], sha256_hex(b"session-456"));
        // The hash of the canonical form: member order does not matter.
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{"n": 1, "text": "secret words"}"#).unwrap();
        assert_eq!(line["argumentsSha256"], definition_hash(&reordered));
    }

    #[test]
    fn the_chain_detects_edits_removals_and_insertions() {
        let buffer = Shared::default();
        let log = AuditLog::new(Box::new(buffer.clone()));
        for n in 0..4 {
            log.append(record(n));
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
