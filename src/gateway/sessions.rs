//! Open sessions, each bound to the subject that opened it: a session id is never
//! authentication, so another caller presenting it is told the session does not exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::builders::gateway::sha256_hex;

/// A session unused this long is forgotten.
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

struct Entry {
    owner: Box<str>,
    last_used: Instant,
    /// The id's SHA-256 (hex), as audit lines and traces name the session; hashed once.
    hashed: Arc<str>,
}

/// The session table.
#[derive(Default)]
pub struct Sessions {
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

/// Why a session cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionError {
    /// Unknown, ended, expired, or opened by someone else.
    NotFound,
}

impl Sessions {
    /// Record a new session opened by `owner`.
    pub fn open(&self, id: &str, owner: &str) -> usize {
        let Ok(mut entries) = self.entries.lock() else {
            return 0;
        };
        entries.insert(
            id.into(),
            Entry {
                owner: owner.into(),
                last_used: Instant::now(),
                hashed: sha256_hex(id.as_bytes()).into(),
            },
        );
        entries.len()
    }

    /// Check that `owner` may use session `id`, and mark it used; the id's hash.
    pub fn touch(&self, id: &str, owner: &str) -> Result<Arc<str>, SessionError> {
        let Ok(mut entries) = self.entries.lock() else {
            return Err(SessionError::NotFound);
        };
        match entries.get_mut(id) {
            Some(entry) if &*entry.owner == owner => {
                entry.last_used = Instant::now();
                Ok(entry.hashed.clone())
            }
            _ => Err(SessionError::NotFound),
        }
    }

    /// End a session; returns how many remain.
    pub fn close(&self, id: &str) -> usize {
        let Ok(mut entries) = self.entries.lock() else {
            return 0;
        };
        entries.remove(id);
        entries.len()
    }

    /// Forget sessions idle longer than `idle`; returns how many remain.
    pub fn expire(&self, idle: Duration) -> usize {
        let Ok(mut entries) = self.entries.lock() else {
            return 0;
        };
        entries.retain(|_, e| e.last_used.elapsed() < idle);
        entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_belongs_to_its_opener() {
        let sessions = Sessions::default();
        sessions.open("s1", "alice");
        assert_eq!(sessions.touch("s1", "alice"), Ok(sha256_hex(b"s1").into()));
        assert_eq!(sessions.touch("s1", "mallory"), Err(SessionError::NotFound));
        assert_eq!(sessions.touch("s2", "alice"), Err(SessionError::NotFound));
        assert_eq!(sessions.close("s1"), 0);
        assert_eq!(sessions.touch("s1", "alice"), Err(SessionError::NotFound));
    }

    #[test]
    fn idle_sessions_expire() {
        let sessions = Sessions::default();
        sessions.open("s1", "");
        assert_eq!(sessions.expire(Duration::ZERO), 0);
    }
}
