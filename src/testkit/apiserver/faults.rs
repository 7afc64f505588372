//! Injected faults: errors by verb, added latency and dropped watch streams.

use std::collections::BTreeMap;
use std::time::Duration;

/// What to break, and how often. The default breaks nothing.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Share of requests of each verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`) answered with an injected error instead of being served.
    pub error_rate: BTreeMap<&'static str, f64>,
    /// Status codes injected errors use, picked uniformly (429, 500, 409 ...).
    pub error_codes: Vec<u16>,
    /// Added to every request.
    pub latency: Duration,
    /// Chance, after each delivered watch event, that the stream is cut.
    pub watch_drop_rate: f64,
    rng: fastrand::Rng,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: BTreeMap::new(),
            error_codes: vec![500],
            latency: Duration::ZERO,
            watch_drop_rate: 0.0,
            rng: fastrand::Rng::with_seed(7),
        }
    }
}

impl Faults {
    /// The same error rate for every verb but `watch`, spread over `codes`.
    pub fn errors(rate: f64, codes: &[u16]) -> Self {
        let mut faults = Faults::default();
        for verb in ["get", "list", "create", "update", "patch", "delete"] {
            faults.error_rate.insert(verb, rate);
        }
        faults.error_codes = codes.to_vec();
        faults
    }

    /// Also cut watch streams with chance `rate` after each event.
    pub fn with_watch_drops(mut self, rate: f64) -> Self {
        self.watch_drop_rate = rate;
        self
    }

    /// Re-seed the random choices (for reproducible runs).
    pub fn seeded(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// The status code to answer `verb` with, if this request is to fail.
    pub fn inject(&mut self, verb: &str) -> Option<u16> {
        let rate = self.error_rate.get(verb).copied().unwrap_or(0.0);
        if rate <= 0.0 || self.rng.f64() >= rate || self.error_codes.is_empty() {
            return None;
        }
        let index = self.rng.usize(..self.error_codes.len());
        self.error_codes.get(index).copied()
    }

    /// Whether to cut a watch stream now.
    pub fn drop_watch(&mut self) -> bool {
        self.watch_drop_rate > 0.0 && self.rng.f64() < self.watch_drop_rate
    }
}
