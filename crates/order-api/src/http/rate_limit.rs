//! Requests per caller (`Http__RateLimit*`): a keyed GCRA limiter from
//! `governor`, in front of everything else the API does, so a flood is
//! refused before its bodies are read or its tokens checked.
//!
//! The caller is the token's subject when the request carries a valid bearer
//! token, else the client's address. The token is validated here, once (the
//! outcome travels on as [`Checked`] for the authentication middleware): a
//! subject read from an unchecked token would let anyone spend another
//! customer's quota with a forged token, or escape their own by inventing
//! subjects.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::Response,
};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

use super::ApiError;
use crate::auth::{Access, Authenticator, Checked};

/// `Http__RateLimitPerSecond`, `Http__RateLimitBurst`, `Http__TrustForwardedFor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Requests per second per caller; `None` turns the limit off.
    pub per_second: Option<NonZeroU32>,
    /// Requests a caller may send at once after a quiet spell.
    pub burst: NonZeroU32,
    /// Take the client address from the last `X-Forwarded-For` entry (the
    /// one the trusted proxy in front added) instead of the connection.
    pub trust_forwarded_for: bool,
}

/// Callers remembered at most before forgetting the idle ones at once
/// (otherwise every [`SWEEP_PERIOD`]). A caller idle long enough to have its
/// whole burst back is indistinguishable from a new one, so forgetting it
/// changes nothing.
const MAX_TRACKED_CALLERS: usize = 100_000;
const SWEEP_PERIOD: Duration = Duration::from_secs(10);
/// Longest key kept: a subject beyond it is cut (memory per caller is bounded).
const MAX_KEY_BYTES: usize = 128;

/// The limiter of one order-api.
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    trust_forwarded_for: bool,
    started: Instant,
    /// Milliseconds since `started` of the last sweep of idle callers.
    last_sweep_ms: AtomicU64,
}

impl RateLimit {
    /// `None` when the settings turn it off.
    pub fn new(settings: RateLimitSettings) -> Option<Arc<Self>> {
        let quota = Quota::per_second(settings.per_second?).allow_burst(settings.burst);
        Some(Arc::new(Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            trust_forwarded_for: settings.trust_forwarded_for,
            started: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        }))
    }

    /// `Err` with how long to wait when `key` is over its quota.
    fn check(&self, key: &String) -> Result<(), Duration> {
        let outcome = self
            .limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()));
        self.sweep_if_due();
        outcome
    }

    /// Forgets idle callers every [`SWEEP_PERIOD`], or at once (at most once
    /// a second) past [`MAX_TRACKED_CALLERS`]; one request does it.
    fn sweep_if_due(&self) {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        let since = Duration::from_millis(now_ms.saturating_sub(last));
        let due = since >= SWEEP_PERIOD
            || (since >= Duration::from_secs(1) && self.limiter.len() > MAX_TRACKED_CALLERS);
        if due
            && self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }

    /// Callers remembered now.
    pub fn tracked_callers(&self) -> usize {
        self.limiter.len()
    }

    /// Who is calling: the caller a valid bearer token proves, else the
    /// client address. The token's outcome is left in the request as
    /// [`Checked`].
    async fn caller_key(&self, authenticator: &Authenticator, request: &mut Request) -> String {
        if request.headers().contains_key(header::AUTHORIZATION) {
            let outcome = authenticator.access(request.headers()).await;
            let subject = match &outcome {
                Ok(Access::Caller(caller)) => Some(bounded(format!("sub:{}", caller.customer_id))),
                _ => None,
            };
            request.extensions_mut().insert(Checked(outcome));
            if let Some(subject) = subject {
                return subject;
            }
        }
        self.address_key(request)
    }

    /// The client address: the proxy's `X-Forwarded-For` entry when trusted,
    /// else the connection's peer.
    fn address_key(&self, request: &Request) -> String {
        let forwarded = self
            .trust_forwarded_for
            .then(|| forwarded_for(request.headers()))
            .flatten();
        let connection = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        match forwarded.or(connection) {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".to_owned(),
        }
    }
}

fn bounded(mut key: String) -> String {
    if key.len() > MAX_KEY_BYTES {
        let mut end = MAX_KEY_BYTES;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

/// The last address of `X-Forwarded-For`: the one the proxy in front added.
/// Entries before it are whatever the client claimed.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Middleware: `429` with `Retry-After` beyond the caller's quota.
pub async fn limit_per_caller(
    State((limit, authenticator)): State<(Arc<RateLimit>, Authenticator)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = limit.caller_key(&authenticator, &mut request).await;
    limit
        .check(&key)
        .map_err(|wait| ApiError::RateLimited { wait })?;
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    v.parse().expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn only_the_address_the_proxy_added_is_trusted() {
        let forwarded = headers(&[("x-forwarded-for", "6.6.6.6, 10.0.0.7")]);
        assert_eq!(
            forwarded_for(&forwarded),
            Some("10.0.0.7".parse().expect("ip"))
        );
        assert_eq!(
            forwarded_for(&headers(&[("x-forwarded-for", "junk")])),
            None
        );
    }

    #[test]
    fn a_caller_beyond_its_burst_is_told_when_to_come_back_and_others_are_not() {
        let limit = RateLimit::new(RateLimitSettings {
            per_second: NonZeroU32::new(1),
            burst: NonZeroU32::new(3).expect("3"),
            trust_forwarded_for: false,
        })
        .expect("on");
        let (flood, other) = ("sub:flood".to_owned(), "sub:other".to_owned());
        for _ in 0..3 {
            assert_eq!(limit.check(&flood), Ok(()));
        }
        let wait = limit.check(&flood).expect_err("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(limit.check(&other), Ok(()));
        assert_eq!(limit.tracked_callers(), 2);
        assert!(bounded("x".repeat(1000)).len() <= MAX_KEY_BYTES);
    }

    #[test]
    fn zero_turns_it_off() {
        let off = RateLimitSettings {
            per_second: None,
            burst: NonZeroU32::new(1).expect("1"),
            trust_forwarded_for: false,
        };
        assert!(RateLimit::new(off).is_none());
    }
}
