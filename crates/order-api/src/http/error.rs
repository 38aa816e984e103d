//! The one error type of the API and its one rendering: every failure a
//! handler, an extractor or a fallback can have is an [`ApiError`] variant,
//! and [`ApiError::into_response`] turns it into an RFC 9457 problem document
//! (with `Retry-After` on 503). Server-side failures are logged there, once,
//! with their causes (the shape of axum's `error-handling` example).

use std::time::Duration;

use crate::auth::{ForeignCustomer, Refusal};
use axum::{
    extract::rejection::BytesRejection,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use catga_core::{
    contracts::headers,
    domain::{OrderId, OrderStatus, ValidationError},
    error::Chain,
    http::{BodyError, Problem},
    idempotency::IdempotencyError,
    messaging::MessagingError,
    store::StoreError,
};

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 2;
/// Seconds before retrying a shed request or a key still in flight: the slot
/// or the first request is expected to free up sooner than a dependency.
const RETRY_SOON_SECONDS: u32 = 1;

/// Why a request was not answered with success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    // The request is at fault (4xx).
    #[error("the body is not JSON")]
    UnsupportedMediaType,
    #[error("request body too large")]
    PayloadTooLarge(#[source] BytesRejection),
    #[error("cannot read the request body")]
    UnreadableBody(#[source] BytesRejection),
    /// The body came too slowly, or broke off, before any handler ran.
    #[error("request body")]
    Body(#[from] BodyError),
    #[error("malformed JSON")]
    MalformedJson(#[source] serde_json::Error),
    #[error("the body does not match the schema")]
    SchemaMismatch {
        /// The JSON path at fault, when there is one.
        field: Option<String>,
        #[source]
        source: serde_json::Error,
    },
    #[error("malformed query string")]
    MalformedQuery(#[source] serde_urlencoded::de::Error),
    #[error("invalid query parameter {field}: {detail}")]
    InvalidQueryParameter { field: &'static str, detail: String },
    #[error("invalid request")]
    Invalid(#[from] ValidationError),
    #[error("invalid Idempotency-Key: {0}")]
    InvalidIdempotencyKey(&'static str),
    #[error("a request with this Idempotency-Key is still in flight")]
    RequestInFlight,
    #[error("Idempotency-Key reused with another body")]
    IdempotencyKeyReused,
    #[error("no order {0:?}")]
    OrderNotFound(String),
    #[error("order {order_id} is {status}")]
    OrderNotCancellable {
        order_id: OrderId,
        status: OrderStatus,
    },
    /// The bearer token is missing or refused (401 with a `WWW-Authenticate`
    /// challenge), or the keys to check it cannot be had (503).
    #[error("not authenticated")]
    Unauthenticated(#[from] Refusal),
    #[error("an order for another customer")]
    ForeignCustomer(#[from] ForeignCustomer),
    #[error("admin role required")]
    NotAdmin,
    #[error("no such route")]
    NoSuchRoute,
    #[error("method not allowed")]
    MethodNotAllowed,

    /// The caller is over `Http__RateLimitPerSecond`; it may come back after `wait`.
    #[error("rate limit exceeded; retry in {wait:?}")]
    RateLimited { wait: Duration },

    // We cannot answer now (503) or at all (500).
    #[error("too many requests in flight")]
    Overloaded,
    #[error("order store")]
    Store(#[from] StoreError),
    #[error("message broker")]
    Messaging(#[from] MessagingError),
    #[error("no publish acknowledgement within {0:?}")]
    PublishTimedOut(Duration),
    #[error("idempotency records")]
    Idempotency(#[from] IdempotencyError),
    #[error("cannot encode JSON")]
    Encode(#[source] serde_json::Error),
    #[error("a handler panicked: {0}")]
    Panicked(String),
    /// A handler that needs the caller's access on a route not behind
    /// `auth::authenticate`: fails closed.
    #[error("route {0} is not behind the authentication middleware")]
    Unguarded(String),
}

impl ApiError {
    /// The problem document the client gets.
    fn problem(&self) -> Problem {
        match self {
            ApiError::UnsupportedMediaType => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .detail("send the body as application/json"),
            ApiError::PayloadTooLarge(rejection) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            )
            .detail(rejection.body_text()),
            ApiError::UnreadableBody(rejection) => Problem::new(
                rejection.status(),
                "bad-request",
                "Cannot read the request body",
            )
            .detail(rejection.body_text()),
            ApiError::Body(err @ BodyError::TimedOut(_)) => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "The request body came too slowly",
            )
            .detail(err.to_string()),
            ApiError::Body(BodyError::Unreadable(_)) => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Cannot read the request body",
            ),
            ApiError::MalformedJson(source) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
                    .detail(source.to_string())
            }
            ApiError::SchemaMismatch { field, source } => {
                let problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-request",
                    "The request does not match the schema",
                )
                .detail(source.to_string());
                match field {
                    Some(field) => problem.field(field.as_str()),
                    None => problem,
                }
            }
            ApiError::MalformedQuery(source) => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                "Malformed query string",
            )
            .detail(source.to_string()),
            ApiError::InvalidQueryParameter { field, detail } => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                "Invalid query parameter",
            )
            .field(*field)
            .detail(detail.as_str()),
            ApiError::Invalid(err) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "The request is not valid",
            )
            .detail(err.to_string())
            .field(err.field()),
            ApiError::InvalidIdempotencyKey(detail) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
            )
            .detail(*detail)
            .field(headers::IDEMPOTENCY_KEY),
            ApiError::RequestInFlight => Problem::new(
                StatusCode::CONFLICT,
                "request-in-flight",
                "A request with this Idempotency-Key is still being processed",
            )
            .retry_after(RETRY_SOON_SECONDS),
            ApiError::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key already used with a different request body",
            )
            .field(headers::IDEMPOTENCY_KEY),
            ApiError::OrderNotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found")
                    .detail(self.to_string())
            }
            ApiError::OrderNotCancellable { .. } => Problem::new(
                StatusCode::CONFLICT,
                "order-not-cancellable",
                "The order cannot be cancelled",
            )
            .detail(self.to_string()),
            ApiError::Unauthenticated(Refusal::KeysUnavailable) => {
                unavailable("the identity provider's signing keys cannot be fetched; retry shortly")
            }
            ApiError::Unauthenticated(refusal) => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            )
            .detail(match refusal {
                Refusal::Missing => "send Authorization: Bearer <token>".to_owned(),
                other => other.to_string(),
            })
            .field("Authorization"),
            ApiError::ForeignCustomer(err) => Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Orders may only be placed for the caller",
            )
            .detail(err.to_string())
            .field("customerId"),
            ApiError::NotAdmin => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Admin role required")
            }
            ApiError::NoSuchRoute => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "No such resource")
            }
            ApiError::MethodNotAllowed => Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed on this resource",
            ),
            ApiError::RateLimited { wait } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            )
            .detail("this caller is over its request rate; retry after the time given")
            // Whole seconds, rounded up: never `0`, which would invite an immediate retry.
            .retry_after(u32::try_from(wait.as_millis().div_ceil(1000).max(1)).unwrap_or(u32::MAX)),
            ApiError::Overloaded => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Too many requests in flight",
            )
            .detail("order-api is at its limit of concurrent requests; retry shortly")
            .retry_after(RETRY_SOON_SECONDS),
            // A refusal or data the store cannot read will not do better on retry.
            ApiError::Store(err) if err.is_out_of_memory() => storage_full(),
            ApiError::Idempotency(err) if err.is_out_of_memory() => storage_full(),
            ApiError::Store(err) if !err.is_transient() => internal(),
            ApiError::Store(_) => unavailable("the order store is unavailable; retry shortly"),
            ApiError::Messaging(_) | ApiError::PublishTimedOut(_) => {
                unavailable("the message broker is unavailable; retry shortly")
            }
            ApiError::Idempotency(err) if err.is_transient() => {
                unavailable("the idempotency store is unavailable; retry shortly")
            }
            ApiError::Idempotency(_)
            | ApiError::Encode(_)
            | ApiError::Panicked(_)
            | ApiError::Unguarded(_) => internal(),
        }
    }
}

impl ApiError {
    /// A panic caught by `CatchPanicLayer`, with its message when it has one.
    pub fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        ApiError::Panicked(message)
    }
}

/// A dependency is away: the client should retry.
fn unavailable(detail: &'static str) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Temporarily unavailable",
    )
    .detail(detail)
    .retry_after(RETRY_AFTER_SECONDS)
}

/// Redis refuses writes for memory: new orders wait until retention or an
/// operator frees some (`CatgaRedisMemoryNearMax` fired before this).
fn storage_full() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage-full",
        "Order storage is full",
    )
    .detail("the order store has reached its memory limit and accepts no new orders for now; retry later")
    .retry_after(RETRY_AFTER_SECONDS)
}

/// Our fault; what went wrong is in the log, not in the answer.
fn internal() -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        match problem.status() {
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %Chain(&self), "internal error");
            }
            // Shedding is the limit working as meant, and would flood the log.
            StatusCode::SERVICE_UNAVAILABLE if !matches!(self, ApiError::Overloaded) => {
                tracing::warn!(error = %Chain(&self), "dependency unavailable");
            }
            _ => {}
        }
        let mut response = problem.into_response();
        if let ApiError::Unauthenticated(refusal) = &self
            && response.status() == StatusCode::UNAUTHORIZED
            && let Ok(challenge) = HeaderValue::from_str(&refusal.challenge())
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(response: &Response, name: header::HeaderName) -> Option<&str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn every_error_is_a_problem_document_and_503s_say_when_to_retry() {
        let cases = [
            (
                ApiError::PublishTimedOut(Duration::from_secs(5)),
                503,
                Some("2"),
            ),
            (ApiError::Overloaded, 503, Some("1")),
            (
                ApiError::RateLimited {
                    wait: Duration::from_millis(1200),
                },
                429,
                Some("2"),
            ),
            (
                ApiError::RateLimited {
                    wait: Duration::from_millis(3),
                },
                429,
                Some("1"),
            ),
            (ApiError::RequestInFlight, 409, Some("1")),
            (ApiError::IdempotencyKeyReused, 422, None),
            (ApiError::Panicked("boom".to_owned()), 500, None),
            (ApiError::NoSuchRoute, 404, None),
        ];
        for (err, status, retry_after) in cases {
            let name = format!("{err:?}");
            let response = err.into_response();
            assert_eq!(response.status().as_u16(), status, "{name}");
            assert_eq!(
                header(&response, header::CONTENT_TYPE),
                Some("application/problem+json"),
                "{name}"
            );
            assert_eq!(
                header(&response, header::RETRY_AFTER),
                retry_after,
                "{name}"
            );
        }
    }

    #[test]
    fn token_errors_challenge_for_a_bearer_token_and_others_do_not() {
        let missing = ApiError::from(Refusal::Missing).into_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&missing, header::WWW_AUTHENTICATE), Some("Bearer"));
        assert_eq!(
            header(&missing, header::CONTENT_TYPE),
            Some("application/problem+json")
        );
        let expired = ApiError::from(Refusal::Expired).into_response();
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            header(&expired, header::WWW_AUTHENTICATE),
            Some("Bearer error=\"invalid_token\", error_description=\"the token has expired\"")
        );
        let not_admin = ApiError::NotAdmin.into_response();
        assert_eq!(not_admin.status(), StatusCode::FORBIDDEN);
        assert_eq!(header(&not_admin, header::WWW_AUTHENTICATE), None);
        let foreign = ApiError::from(ForeignCustomer {
            caller: "c-1".to_owned(),
        })
        .into_response();
        assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
        assert_eq!(header(&foreign, header::WWW_AUTHENTICATE), None);
        let keys = ApiError::from(Refusal::KeysUnavailable).into_response();
        assert_eq!(keys.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&keys, header::RETRY_AFTER), Some("2"));
        assert_eq!(header(&keys, header::WWW_AUTHENTICATE), None);
    }

    #[test]
    fn internal_errors_keep_their_cause_out_of_the_answer() {
        let problem = ApiError::Panicked("secret detail".to_owned()).problem();
        assert_eq!(problem.detail, None);
        assert!(problem.kind.ends_with("/internal"));
    }
}
