//! Bearer tokens for load runs against an order-api that authenticates:
//! one fixed token (`--token`, all orders are its customer's), or one HS256
//! token per simulated customer minted from order-api's `Auth__JwtSecret`
//! (`--jwt-secret`), the way `order-api token` mints them.

use std::{convert::Infallible, fmt, str::FromStr, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use order_api::auth::{
    JwtSecret,
    token::{MintError, TokenSigner},
};
use reqwest::header::HeaderValue;

/// Tokens are minted up front; this bounds the time and memory that takes.
pub const MAX_MINTED_CUSTOMERS: u64 = 100_000;

/// A secret or token from the command line, kept out of debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Redacted {
    type Err = Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How a run authenticates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LoadAuth {
    /// No `Authorization` header.
    #[default]
    None,
    /// This token on every request.
    Token(Redacted),
    /// A token per customer, signed with this HS256 secret.
    PerCustomer(Redacted),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("--token is not a JWT with a sub claim (the customer its orders are for)")]
    TokenSubject,
    #[error("--token cannot be sent as a header value")]
    TokenHeader,
    #[error("--jwt-secret: {0}")]
    Secret(#[source] catga_core::config::ConfigError),
    #[error("--jwt-secret mints a token per customer: at most {MAX_MINTED_CUSTOMERS} --customers")]
    TooManyCustomers,
    #[error("cannot mint the customers' tokens")]
    Mint(#[from] MintError),
}

/// The `Authorization` header of each customer's requests.
#[derive(Debug, Default)]
pub enum Credentials {
    #[default]
    None,
    Fixed(HeaderValue),
    PerCustomer(Vec<HeaderValue>),
}

impl Credentials {
    /// Headers for `customers` customers, valid for `ttl`.
    pub fn new(auth: &LoadAuth, customers: u64, ttl: Duration) -> Result<Self, AuthError> {
        match auth {
            LoadAuth::None => Ok(Credentials::None),
            LoadAuth::Token(token) => bearer(token.expose())
                .map(Credentials::Fixed)
                .ok_or(AuthError::TokenHeader),
            LoadAuth::PerCustomer(secret) => {
                if customers > MAX_MINTED_CUSTOMERS {
                    return Err(AuthError::TooManyCustomers);
                }
                let secret = JwtSecret::new(secret.expose()).map_err(AuthError::Secret)?;
                let signer = TokenSigner::new(&secret)?;
                (0..customers.max(1))
                    .map(|index| {
                        let token = signer.mint(&crate::workload::customer_id(index), None, ttl)?;
                        // A JWT is base64url and dots: always a valid header value.
                        bearer(&token).ok_or(AuthError::TokenHeader)
                    })
                    .collect::<Result<_, _>>()
                    .map(Credentials::PerCustomer)
            }
        }
    }

    /// The header for customer `index`, if the run authenticates.
    pub fn for_customer(&self, index: u64) -> Option<&HeaderValue> {
        match self {
            Credentials::None => None,
            Credentials::Fixed(header) => Some(header),
            Credentials::PerCustomer(headers) => {
                usize::try_from(index).ok().and_then(|i| headers.get(i))
            }
        }
    }
}

fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The `sub` of a token, read without verifying it: the customer whose
/// orders a fixed token may place.
pub fn token_subject(token: &str) -> Result<String, AuthError> {
    let payload = token.split('.').nth(1).ok_or(AuthError::TokenSubject)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthError::TokenSubject)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| AuthError::TokenSubject)?;
    claims
        .get("sub")
        .and_then(|sub| sub.as_str())
        .map(str::to_owned)
        .ok_or(AuthError::TokenSubject)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "loadgen-test-secret-long-enough-for-hs256";

    #[test]
    fn each_customer_gets_its_own_token() {
        let auth = LoadAuth::PerCustomer(SECRET.parse().expect("infallible"));
        let credentials = Credentials::new(&auth, 3, Duration::from_secs(60)).expect("credentials");
        for index in 0..3 {
            let header = credentials.for_customer(index).expect("a token");
            let token = header
                .to_str()
                .expect("ascii")
                .strip_prefix("Bearer ")
                .expect("bearer");
            assert_eq!(
                token_subject(token).expect("sub"),
                crate::workload::customer_id(index)
            );
        }
        assert!(credentials.for_customer(3).is_none());
    }

    #[test]
    fn secrets_and_tokens_are_checked_and_never_shown() {
        let short = LoadAuth::PerCustomer("hunter2".parse().expect("infallible"));
        let err = Credentials::new(&short, 3, Duration::from_secs(60)).expect_err("short");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{short:?}").contains("hunter2"));
        let many = LoadAuth::PerCustomer(SECRET.parse().expect("infallible"));
        assert!(matches!(
            Credentials::new(&many, MAX_MINTED_CUSTOMERS + 1, Duration::from_secs(60)),
            Err(AuthError::TooManyCustomers)
        ));
        assert!(matches!(
            token_subject("not-a-token"),
            Err(AuthError::TokenSubject)
        ));
        assert!(
            Credentials::new(&LoadAuth::None, 3, Duration::from_secs(60))
                .expect("none")
                .for_customer(0)
                .is_none()
        );
    }
}
