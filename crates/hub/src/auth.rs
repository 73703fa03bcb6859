//! Who may talk to the hub.
//!
//! Nodes present a credential (`authorization: Bearer …`); operators an admin
//! token. Both are 256-bit secrets of which the hub keeps only hashes. A node
//! credential check is one indexed lookup by hash, async, under a deadline;
//! an admin token check is one hash and a constant-time comparison.
//!
//! The credential is always checked first, so a valid one always passes, even
//! from an address that is over its failure budget (another user behind the
//! same NAT, or an attacker spamming from the operator's own machine, must
//! never lock the operator or a node out). Only failures are counted, per
//! peer address; an address over its budget is told to wait
//! (ResourceExhausted / 429) instead of being told why it failed. What a bad
//! attempt costs the hub is bounded: a malformed secret costs nothing, a
//! well-formed one one indexed read under the deadline.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ganglion_core::secret::Purpose;
use ganglion_core::{Secret, SecretHash, Timestamp};
use ganglion_store::{NodeRecord, Store};
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use crate::Error;
use crate::metrics::Metrics;

/// Extracts the bearer secret from an `authorization` header value.
pub fn bearer(value: Option<&str>) -> Result<Secret, Error> {
    let token = value
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Error::Unauthenticated)?;
    Secret::decode(token).map_err(|_| Error::Unauthenticated)
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    deadline: Duration,
    /// Failed node credentials and invite redemptions (the gRPC plane).
    limiter: FailureLimiter,
    /// Failed admin tokens (the HTTP API): kept apart, so a node retrying a
    /// revoked credential cannot lock out the operator on the same address,
    /// nor a mistyped token the nodes.
    admin_limiter: FailureLimiter,
    admin_hashes: RwLock<Vec<SecretHash>>,
    metrics: Metrics,
}

impl Authenticator {
    pub fn new(
        store: Arc<dyn Store>,
        deadline: Duration,
        limiter: FailureLimiter,
        admin_limiter: FailureLimiter,
        admin_hashes: Vec<SecretHash>,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            deadline,
            limiter,
            admin_limiter,
            admin_hashes: RwLock::new(admin_hashes),
            metrics,
        }
    }

    pub fn limiter(&self) -> &FailureLimiter {
        &self.limiter
    }

    /// Authenticates a node from its `authorization` header.
    pub async fn node(
        &self,
        header: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<NodeRecord, Error> {
        match self.node_inner(header).await {
            Ok(node) => {
                self.metrics.handshake("ok");
                Ok(node)
            }
            Err(Error::StoreTimeout) => {
                self.metrics.handshake("timeout");
                Err(Error::StoreTimeout)
            }
            Err(e) => {
                self.metrics.auth_failure("node");
                Err(self.limiter.failed(peer, e))
            }
        }
    }

    /// Looks an invite up without redeeming it, under the deadline: whether
    /// it could be redeemed now. For addresses over their failure budget.
    pub async fn invite_redeemable(&self, secret: &Secret, now: Timestamp) -> Result<bool, Error> {
        let hash = secret.hash(Purpose::Invite);
        let lookup = self.store.invite_redeemable(&hash, now);
        Ok(tokio::time::timeout(self.deadline, lookup)
            .await
            .map_err(|_| Error::StoreTimeout)??)
    }

    async fn node_inner(&self, header: Option<&str>) -> Result<NodeRecord, Error> {
        let hash = bearer(header)?.hash(Purpose::NodeCredential);
        let lookup = self.store.node_by_credential(&hash);
        let node = tokio::time::timeout(self.deadline, lookup)
            .await
            .map_err(|_| Error::StoreTimeout)??
            .ok_or(Error::BadCredential)?;
        if node.revoked_at.is_some() {
            return Err(Error::Revoked(node.name.to_string()));
        }
        Ok(node)
    }

    /// Checks an operator's bearer token (constant-time comparison of hashes).
    /// A valid token always passes; a bad one counts against the address.
    pub fn admin(&self, header: Option<&str>, peer: Option<IpAddr>) -> Result<(), Error> {
        let ok = bearer(header).ok().is_some_and(|s| {
            let h = s.hash(Purpose::AdminToken);
            let known = self.admin_hashes.read();
            // Compare against every hash, so timing does not depend on which matched.
            known.iter().fold(false, |acc, k| acc | (*k == h))
        });
        if ok {
            return Ok(());
        }
        self.metrics.auth_failure("admin");
        Err(self.admin_limiter.failed(peer, Error::Unauthenticated))
    }

    /// Counts a failed invite redemption against the peer; the error to answer.
    pub fn join_failed(&self, peer: Option<IpAddr>, error: Error) -> Error {
        self.metrics.auth_failure("invite");
        self.limiter.failed(peer, error)
    }
}

/// Token buckets of failed attempts, per peer address. Only failures take
/// tokens; a failure from an address with none left is answered "retry
/// later" instead of its cause, until the address regains one. Nothing here
/// ever refuses a valid credential: callers check the credential first.
pub struct FailureLimiter {
    burst: f64,
    refill_per_s: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Addresses tracked at most; past that, full buckets are forgotten first.
const MAX_TRACKED: usize = 65_536;

impl FailureLimiter {
    pub fn new(burst: u32, refill_per_s: f64) -> Self {
        Self {
            burst: f64::from(burst),
            refill_per_s,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refreshed(&self, b: Bucket, now: Instant) -> Bucket {
        let gained = now.duration_since(b.at).as_secs_f64() * self.refill_per_s;
        Bucket {
            tokens: (b.tokens + gained).min(self.burst),
            at: now,
        }
    }

    /// Whether an address is over its budget (`RateLimited` if so).
    pub fn check(&self, peer: Option<IpAddr>) -> Result<(), Error> {
        let Some(ip) = peer else { return Ok(()) };
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let Some(b) = buckets.get_mut(&ip) else {
            return Ok(());
        };
        *b = self.refreshed(*b, now);
        if b.tokens >= 1.0 {
            return Ok(());
        }
        let retry_after_s = ((1.0 - b.tokens) / self.refill_per_s).ceil() as u64;
        Err(Error::RateLimited {
            retry_after_s: retry_after_s.max(1),
        })
    }

    /// Records a failure: the error to answer with, `error` itself while the
    /// address is within its budget, `RateLimited` once it is over.
    pub fn failed(&self, peer: Option<IpAddr>, error: Error) -> Error {
        match self.check(peer) {
            Ok(()) => {
                self.record_failure(peer);
                error
            }
            Err(limited) => limited,
        }
    }

    pub fn record_failure(&self, peer: Option<IpAddr>) {
        let Some(ip) = peer else { return };
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            let burst = self.burst;
            let refill = self.refill_per_s;
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * refill < burst);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        *b = self.refreshed(*b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }

    pub fn tracked(&self) -> usize {
        self.buckets.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limits_failures_per_address_and_recovers() {
        let l = FailureLimiter::new(3, 1.0);
        let bad: IpAddr = "127.0.0.2".parse().unwrap();
        let good: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            l.check(Some(bad)).unwrap();
            l.record_failure(Some(bad));
        }
        assert!(matches!(l.check(Some(bad)), Err(Error::RateLimited { .. })));
        l.check(Some(good)).unwrap();
        tokio::time::advance(Duration::from_millis(1100)).await;
        l.check(Some(bad)).unwrap();
    }

    /// Bad admin tokens and bad node credentials from one address are
    /// limited apart: neither locks the other out.
    #[tokio::test]
    async fn admin_and_node_failures_are_limited_apart() {
        let store = Arc::new(ganglion_store::SqliteStore::in_memory().await.unwrap());
        let token = Secret::generate();
        let auth = Authenticator::new(
            store,
            Duration::from_secs(2),
            FailureLimiter::new(3, 0.001),
            FailureLimiter::new(3, 0.001),
            vec![token.hash(Purpose::AdminToken)],
            Metrics::new(),
        );
        let peer = Some("127.0.0.1".parse().unwrap());
        let good = format!("Bearer {}", token.encode());
        let wrong = format!("Bearer {}", Secret::generate().encode());
        for _ in 0..3 {
            assert!(matches!(
                auth.admin(Some(&wrong), peer),
                Err(Error::Unauthenticated)
            ));
        }
        assert!(matches!(
            auth.admin(Some(&wrong), peer),
            Err(Error::RateLimited { .. })
        ));
        // A valid token passes even while its address is over the budget.
        auth.admin(Some(&good), peer).unwrap();
        for _ in 0..3 {
            let e = auth.node(Some(&wrong), peer).await.unwrap_err();
            assert!(matches!(e, Error::BadCredential), "{e}");
        }
        let e = auth.node(Some(&wrong), peer).await.unwrap_err();
        assert!(matches!(e, Error::RateLimited { .. }), "{e}");

        let other = Authenticator::new(
            Arc::new(ganglion_store::SqliteStore::in_memory().await.unwrap()),
            Duration::from_secs(2),
            FailureLimiter::new(3, 0.001),
            FailureLimiter::new(3, 0.001),
            vec![token.hash(Purpose::AdminToken)],
            Metrics::new(),
        );
        for _ in 0..3 {
            other.join_failed(peer, Error::BadCredential);
        }
        other.admin(Some(&good), peer).unwrap();
    }

    #[test]
    fn bearer_parsing() {
        assert!(bearer(None).is_err());
        assert!(bearer(Some("Basic abc")).is_err());
        assert!(bearer(Some("Bearer nope")).is_err());
        let s = Secret::generate();
        assert_eq!(bearer(Some(&format!("Bearer {}", s.encode()))).unwrap(), s);
    }
}
