//! Who is calling, and what they may see.
//!
//! - [`settings`]: `Auth__*` (provider, secret, issuer, audience, claim names);
//! - [`keys`]: the identity provider's key set, fetched through OIDC
//!   discovery or from a JWKS URL, cached and refreshed on an unknown `kid`;
//! - [`validator`]: bearer token validation, giving a [`Caller`];
//! - [`refusal`]: why a token was refused (`401` + `WWW-Authenticate`);
//! - [`token`]: HS256 tokens for development (`order-api token`).
//!
//! [`authenticate`] is the middleware that puts an [`Access`] into every
//! request it guards; handlers take `Access` as an extractor.

pub mod keys;
pub mod refusal;
pub mod settings;
pub mod token;
pub mod validator;

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use catga_core::{
    contracts::{metrics as names, services},
    domain::{limits, validate_text},
};

use crate::http::ApiError;

pub use refusal::Refusal;
pub use settings::{AuthSettings, ClaimNames, JwtSecret, KeyLocation};
pub use validator::{Validator, ValidatorError};

/// A caller proven by a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// From the customer claim (`Auth__CustomerClaim`, default `sub`).
    pub customer_id: String,
    /// The admin claim holds the admin value (default `role` = `admin`).
    pub is_admin: bool,
}

/// What a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Authentication is off (embedded mode, or `Auth__AllowAnonymous`): the
    /// request names its customer and sees every order.
    Anonymous,
    Caller(Caller),
}

/// An order body naming a customer other than the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("customerId must be the caller's own ({caller:?}) or left out")]
pub struct ForeignCustomer {
    pub caller: String,
}

impl Access {
    /// Whether the caller may read or cancel an order of `owner`. Answer a
    /// `false` exactly as a missing order, so ids cannot be probed.
    pub fn may_access(&self, owner: &str) -> bool {
        match self {
            Access::Anonymous => true,
            Access::Caller(caller) => caller.is_admin || caller.customer_id == owner,
        }
    }

    /// Whose orders a listing shows: `None` for every order.
    pub fn listing_owner(&self) -> Option<&str> {
        match self {
            Access::Caller(caller) if !caller.is_admin => Some(&caller.customer_id),
            _ => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Access::Caller(Caller { is_admin: true, .. }))
    }

    /// The customer a new order is for: the caller's own (the body may
    /// repeat it), or for anonymous access whatever the body names.
    pub fn order_customer<'a>(
        &'a self,
        named: Option<&'a str>,
    ) -> Result<Option<&'a str>, ForeignCustomer> {
        match (self, named) {
            (Access::Anonymous, named) => Ok(named),
            (Access::Caller(caller), Some(named)) if named != caller.customer_id => {
                Err(ForeignCustomer {
                    caller: caller.customer_id.clone(),
                })
            }
            (Access::Caller(caller), _) => Ok(Some(&caller.customer_id)),
        }
    }

    /// `Idempotency-Key` scoped to the caller, so two callers' equal keys
    /// never meet. The length prefix keeps `("a:b", "c")` and `("a", "b:c")` apart.
    pub fn scoped_idempotency_key(&self, key: &str) -> String {
        match self {
            Access::Anonymous => format!("-:{key}"),
            Access::Caller(caller) => {
                format!("{}:{}:{key}", caller.customer_id.len(), caller.customer_id)
            }
        }
    }
}

/// A customer id a token may carry: the same bounds as an order's `customerId`.
pub fn is_valid_customer_id(id: &str) -> bool {
    validate_text("customerId", id, limits::MAX_ID_LEN).is_ok()
}

/// How requests are authenticated.
#[derive(Clone)]
pub enum Authenticator {
    Anonymous,
    Tokens(Arc<Validator>),
}

impl Authenticator {
    /// Validates tokens with `validator`. Every refusal series starts at 0,
    /// so dashboards and alerts see it before the first refusal.
    pub fn tokens(validator: impl Into<Arc<Validator>>) -> Self {
        for reason in Refusal::REASONS {
            metrics::counter!(names::AUTH_REFUSALS, "service" => services::ORDER_API, "reason" => reason)
                .increment(0);
        }
        Authenticator::Tokens(validator.into())
    }

    /// The access `headers` prove. Refusals are counted by reason.
    pub async fn access(&self, headers: &HeaderMap) -> Result<Access, Refusal> {
        let Authenticator::Tokens(validator) = self else {
            return Ok(Access::Anonymous);
        };
        let result = match bearer_token(headers) {
            Ok(token) => validator.validate(token).await.map(Access::Caller),
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = &result {
            metrics::counter!(names::AUTH_REFUSALS, "service" => services::ORDER_API, "reason" => refusal.reason())
                .increment(1);
            tracing::debug!(reason = refusal.reason(), error = %refusal, "token refused");
        }
        result
    }
}

/// The token of `Authorization: Bearer <token>` (scheme in any case).
fn bearer_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Refusal::Missing);
    };
    let value = value.to_str().map_err(|_| Refusal::Malformed(None))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Refusal::Malformed(None)),
    }
}

/// The outcome of checking a request's bearer token, kept in the request's
/// extensions by whoever checked it first (the rate limiter keys on the
/// proven caller), so that [`authenticate`] does not check it twice.
/// Extensions are set by the server alone: a client cannot supply one.
#[derive(Debug, Clone)]
pub struct Checked(pub Result<Access, Refusal>);

/// Middleware: authenticates the request and hands its [`Access`] to the
/// handler, or answers the refusal. Mount with
/// `axum::middleware::from_fn_with_state(authenticator, auth::authenticate)`.
pub async fn authenticate(
    State(authenticator): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let outcome = match request.extensions_mut().remove::<Checked>() {
        Some(Checked(outcome)) => outcome,
        None => authenticator.access(request.headers()).await,
    };
    match outcome {
        Ok(access) => {
            request.extensions_mut().insert(access);
            next.run(request).await
        }
        Err(refusal) => ApiError::from(refusal).into_response(),
    }
}

/// The [`Access`] that [`authenticate`] established. A route without the
/// middleware fails closed (500), never open.
impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Access>()
            .cloned()
            .ok_or_else(|| ApiError::Unguarded(parts.uri.path().to_owned()))
    }
}

#[cfg(test)]
mod tests;
