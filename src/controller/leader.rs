//! Leader election with a `coordination.k8s.io/v1` Lease, built on kube's primitives: every
//! change to the Lease is a replace guarded by its resourceVersion, so two replicas can never
//! both believe they hold it. The holder renews every `renew_interval`; another replica takes
//! over once `renewTime + leaseDurationSeconds` has passed.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and how often others try to take over.
    pub renew_interval: Duration,
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "lost the leader lease {namespace}/{name} to {holder:?}: stopping so that only the leader writes"
    )]
    Lost {
        namespace: String,
        name: String,
        holder: Option<String>,
    },
    #[error(
        "could not renew the leader lease {namespace}/{name} within {lease_duration:?}: {source}"
    )]
    RenewFailed {
        namespace: String,
        name: String,
        lease_duration: Duration,
        #[source]
        source: kube::Error,
    },
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

enum Attempt {
    Holding,
    HeldBy(Option<String>),
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Wait until this replica holds the lease. API errors are retried on the next interval.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(Attempt::Holding) => return,
                Ok(Attempt::HeldBy(holder)) => {
                    tracing::debug!(?holder, "waiting for the leader lease")
                }
                Err(e) => tracing::warn!(error = %e, "leader lease attempt failed"),
            }
            // The lease protocol is time-based: polling at the renew interval is the protocol.
            tokio::time::sleep(self.config.renew_interval).await;
        }
    }

    /// Keep renewing; returns when leadership is lost (another holder, or no renewal in time).
    pub async fn hold(&self) -> LeaseError {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_interval).await;
            match self.try_acquire().await {
                Ok(Attempt::Holding) => last_renewal = tokio::time::Instant::now(),
                Ok(Attempt::HeldBy(holder)) => {
                    return LeaseError::Lost {
                        namespace: self.config.namespace.clone(),
                        name: self.config.name.clone(),
                        holder,
                    };
                }
                Err(source) if last_renewal.elapsed() >= self.config.lease_duration => {
                    return LeaseError::RenewFailed {
                        namespace: self.config.namespace.clone(),
                        name: self.config.name.clone(),
                        lease_duration: self.config.lease_duration,
                        source,
                    };
                }
                Err(e) => tracing::warn!(error = %e, "leader lease renewal failed; retrying"),
            }
        }
    }

    /// Give the lease up (on shutdown), so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(mut lease) = self.api.get(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        if let Err(e) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "could not release the leader lease");
        }
    }

    async fn try_acquire(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let duration_seconds =
            i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let existing = match self.api.get_opt(&self.config.name).await? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(duration_seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Attempt::Holding),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::HeldBy(None)),
                    Err(e) => Err(e),
                };
            }
        };
        let mut lease = existing;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        if !mine {
            let expires = spec.renew_time.as_ref().map(|t| {
                t.0 + SignedDuration::from_secs(i64::from(
                    spec.lease_duration_seconds.unwrap_or(duration_seconds),
                ))
            });
            let expired = holder.is_none() || expires.is_none_or(|e| e < now);
            if !expired {
                return Ok(Attempt::HeldBy(holder));
            }
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(duration_seconds);
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Holding),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::HeldBy(holder)),
            Err(e) => Err(e),
        }
    }
}
