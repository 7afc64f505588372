//! Request rate limits per caller and per (caller, tool): token buckets from `governor` (GCRA,
//! which admits exactly what a token bucket of the same rate and burst admits).

use std::num::NonZeroU32;
use std::time::Duration;

use globset::GlobSet;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::access::GlobError;
use crate::api::common::RateLimit;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

struct ToolLimit {
    tools: GlobSet,
    limiter: Keyed<(String, String)>,
}

/// Every rate limit of one gateway.
pub struct RateLimits {
    clock: DefaultClock,
    per_caller: Option<Keyed<String>>,
    per_tool: Vec<ToolLimit>,
}

/// A refused request: when the caller may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Time until the bucket has a token again, rounded up to whole seconds (at least 1).
    pub retry_after_seconds: u64,
}

fn quota(per_minute: i32, burst: Option<i32>) -> Quota {
    let rate = NonZeroU32::new(per_minute.max(1) as u32).unwrap_or(NonZeroU32::MIN);
    let burst = burst.unwrap_or((per_minute / 6).max(1));
    let burst = NonZeroU32::new(burst.max(1) as u32).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(burst)
}

fn limited(wait: Duration) -> Limited {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Limited {
        retry_after_seconds: whole.max(1),
    }
}

impl RateLimits {
    /// Build from the configuration; no configuration means no limits.
    pub fn new(config: Option<&RateLimit>) -> Result<Self, GlobError> {
        let clock = DefaultClock::default();
        let Some(config) = config else {
            return Ok(Self {
                clock,
                per_caller: None,
                per_tool: Vec::new(),
            });
        };
        let per_tool = config
            .per_tool
            .iter()
            .enumerate()
            .map(|(index, limit)| {
                Ok(ToolLimit {
                    tools: super::access::compile_globs(
                        &format!("limits.rateLimit.perTool[{index}].tools"),
                        &limit.tools,
                    )?,
                    limiter: RateLimiter::keyed(quota(limit.requests_per_minute, None)),
                })
            })
            .collect::<Result<_, GlobError>>()?;
        Ok(Self {
            clock,
            per_caller: Some(RateLimiter::keyed(quota(
                config.requests_per_minute,
                config.burst,
            ))),
            per_tool,
        })
    }

    /// Take a token for one request of `caller`, and for `tool` when it is a tool call.
    pub fn check(&self, caller: &str, tool: Option<&str>) -> Result<(), Limited> {
        if let Some(limiter) = &self.per_caller
            && let Err(not_until) = limiter.check_key(&caller.to_owned())
        {
            return Err(limited(not_until.wait_time_from(self.clock.now())));
        }
        if let Some(tool) = tool {
            for limit in self.per_tool.iter().filter(|l| l.tools.is_match(tool)) {
                if let Err(not_until) = limit
                    .limiter
                    .check_key(&(caller.to_owned(), tool.to_owned()))
                {
                    return Err(limited(not_until.wait_time_from(self.clock.now())));
                }
            }
        }
        Ok(())
    }

    /// Forget callers whose buckets are full again, so memory follows active callers.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_caller {
            limiter.retain_recent();
        }
        for limit in &self.per_tool {
            limit.limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::ToolRateLimit;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limits = RateLimits::new(Some(&RateLimit {
            requests_per_minute: 60,
            burst: Some(3),
            per_tool: vec![],
        }))
        .unwrap();
        for _ in 0..3 {
            limits.check("alice", None).unwrap();
        }
        let refused = limits.check("alice", None).unwrap_err();
        assert_eq!(refused.retry_after_seconds, 1);
        limits.check("bob", None).unwrap();
    }

    #[test]
    fn per_tool_limits_apply_per_caller_and_tool() {
        let limits = RateLimits::new(Some(&RateLimit {
            requests_per_minute: 6000,
            burst: Some(100),
            per_tool: vec![ToolRateLimit {
                tools: vec!["delete_*".into()],
                requests_per_minute: 6,
            }],
        }))
        .unwrap();
        limits.check("alice", Some("delete_repo")).unwrap();
        let refused = limits.check("alice", Some("delete_repo")).unwrap_err();
        assert!(refused.retry_after_seconds >= 9, "{refused:?}");
        limits.check("alice", Some("delete_branch")).unwrap();
        limits.check("alice", Some("get_issue")).unwrap();
        limits.check("bob", Some("delete_repo")).unwrap();
    }

    #[test]
    fn no_configuration_means_no_limit() {
        let limits = RateLimits::new(None).unwrap();
        for _ in 0..1000 {
            limits.check("alice", Some("x")).unwrap();
        }
    }
}
