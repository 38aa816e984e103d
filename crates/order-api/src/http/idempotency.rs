//! `Idempotency-Key` on `POST /api/orders`, in zero-to-production's shape:
//! [`try_processing`] says what to do with a request ([`NextAction`]), and
//! [`Claimed::save_response`] keeps the answer for the retries that follow.
//!
//! The record is `catga_core::idempotency`'s; its outcome here is the HTTP
//! response to replay ([`SavedResponse`]), an order-api concern only. Keys are
//! scoped to the caller ([`Access::scoped_idempotency_key`]).

use std::{sync::Arc, time::Duration};

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use catga_core::{
    contracts::{headers, metrics as names, services},
    domain::OrderId,
    error::Chain,
    idempotency::{Claim, IdempotencyError, IdempotencyStore, Terms},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::auth::Access;

/// How long a claimed `Idempotency-Key` stays in flight before a retry may
/// take it over (the first request's replica is presumed dead by then).
const LEASE: Duration = Duration::from_secs(30);
const MAX_KEY_LEN: usize = 255;
const REPLAYED_HEADER: &str = "idempotent-replayed";

/// What to do with a request, given its `Idempotency-Key`.
pub(crate) enum NextAction {
    /// Process it, creating the order under `order_id` (with a key, the id the
    /// first attempt chose, so a retry cannot create a second order). With a
    /// `claim`, save the response when done.
    StartProcessing {
        order_id: OrderId,
        claim: Option<Claimed>,
    },
    /// Answered before: send the same answer again.
    ReturnSavedResponse(Response),
}

/// Decides what to do with a request whose body is `body`. A key still in
/// flight and a key used with another body are answered as errors
/// ([`ApiError::RequestInFlight`], [`ApiError::IdempotencyKeyReused`]).
pub(crate) async fn try_processing(
    state: &AppState,
    access: &Access,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<NextAction, ApiError> {
    // The header is validated even when idempotency is switched off. The
    // stored key is the caller's: two callers' equal keys never meet, so one
    // cannot replay or block another's request.
    let key = idempotency_key(headers)?.map(|key| access.scoped_idempotency_key(&key));
    let proposed = OrderId::new();
    let (Some(store), Some(key)) = (&state.idempotency, key) else {
        return Ok(NextAction::StartProcessing {
            order_id: proposed,
            claim: None,
        });
    };
    let fingerprint = hex::encode(Sha256::digest(body));
    let terms = Terms {
        lease: LEASE,
        ttl: state.idempotency_ttl,
    };
    match store
        .claim(&key, &fingerprint, &proposed.to_string(), terms)
        .await?
    {
        Claim::Acquired { resource_id } => {
            let order_id = resource_id
                .parse()
                .map_err(|err: uuid::Error| corrupt(&key, err.into()))?;
            Ok(NextAction::StartProcessing {
                order_id,
                claim: Some(Claimed {
                    store: store.clone(),
                    key,
                    ttl: terms.ttl,
                }),
            })
        }
        Claim::Completed { outcome } => {
            metrics::counter!(names::IDEMPOTENCY_HITS, "service" => services::ORDER_API, "kind" => "http")
                .increment(1);
            let saved: SavedResponse =
                serde_json::from_slice(&outcome).map_err(|err| corrupt(&key, err.into()))?;
            Ok(NextAction::ReturnSavedResponse(saved.respond(true)))
        }
        Claim::InFlight => Err(ApiError::RequestInFlight),
        Claim::Mismatch => Err(ApiError::IdempotencyKeyReused),
    }
}

fn corrupt(key: &str, source: catga_core::error::BoxError) -> ApiError {
    IdempotencyError::Corrupt {
        key: key.to_owned(),
        source,
    }
    .into()
}

/// The `Idempotency-Key` header, validated.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(headers::IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::InvalidIdempotencyKey("must be visible ASCII"))?
        .trim();
    // The draft standard allows a structured-field string: accept it quoted.
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(key);
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::InvalidIdempotencyKey(
            "must be 1 to 255 characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// An `Idempotency-Key` this request holds.
pub(crate) struct Claimed {
    store: Arc<dyn IdempotencyStore>,
    key: String,
    ttl: Duration,
}

impl Claimed {
    /// Keeps `response` for retries with this key, and returns it to send now.
    pub(crate) async fn save_response(self, response: SavedResponse) -> Response {
        match serde_json::to_vec(&response) {
            Ok(outcome) => {
                if let Err(err) = self.store.complete(&self.key, &outcome, self.ttl).await {
                    // The order is accepted; a retry would take over the key
                    // and reuse the same order id, so nothing is doubled.
                    tracing::warn!(error = %Chain(&err), "cannot record the idempotent response");
                }
            }
            Err(err) => {
                tracing::error!(error = %Chain(&err), "cannot encode the idempotent response")
            }
        }
        response.respond(false)
    }

    /// Gives the key up after a failure so a retry takes over at once. The
    /// record keeps the order id: if the command did reach the stream, the
    /// retry's is the same command and is still applied only once.
    pub(crate) async fn abandon(self) {
        if let Err(err) = self.store.abandon(&self.key).await {
            tracing::warn!(error = %Chain(&err), "cannot release the idempotency key; its lease runs out by itself");
        }
    }
}

/// A JSON response in a form that can be saved and sent again. The field
/// names are those of records already stored: keep them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedResponse {
    status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    location: Option<String>,
    body: String,
}

impl SavedResponse {
    pub(crate) fn new(status: StatusCode, location: Option<String>, body: String) -> Self {
        Self {
            status: status.as_u16(),
            location,
            body,
        }
    }

    /// The response; a replay says so in `Idempotent-Replayed`.
    fn respond(self, replayed: bool) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body,
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if replayed {
            headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        }
        response
    }
}

impl IntoResponse for SavedResponse {
    fn into_response(self) -> Response {
        self.respond(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_validated() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).expect("none"), None);
        headers.insert("idempotency-key", HeaderValue::from_static("\"abc\""));
        assert_eq!(
            idempotency_key(&headers).expect("ok").as_deref(),
            Some("abc")
        );
        headers.insert("idempotency-key", HeaderValue::from_static("  "));
        assert!(idempotency_key(&headers).is_err());
        let long = "k".repeat(256);
        headers.insert(
            "idempotency-key",
            HeaderValue::from_str(&long).expect("ascii"),
        );
        assert!(idempotency_key(&headers).is_err());
    }
}
