//! `/api/orders`: accept, query and cancel orders.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use catga_core::{
    contracts::{CancelOrder, PlaceOrder, headers, metrics as names, services, subjects},
    domain::{self, Order, OrderDraft, OrderId, OrderStatus, RequestedItem},
    http::Problem,
    idempotency::{Claim, StoredResponse},
    messaging::{MessagingError, OutgoingMessage},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{
    ApiError, AppState, PUBLISH_TIMEOUT,
    extract::{JsonBody, QueryParams},
};

/// How long a claimed `Idempotency-Key` stays in flight before a retry may
/// take it over (the first request's replica is presumed dead by then).
const IDEMPOTENCY_LEASE: std::time::Duration = std::time::Duration::from_secs(30);
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

/// `POST /api/orders` body. Prices are never sent: they come from the catalog.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrderRequest {
    #[schema(example = "c-42", min_length = 1, max_length = 64)]
    pub customer_id: String,
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<OrderItemRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderItemRequest {
    #[schema(example = "PROD-001", min_length = 1, max_length = 64)]
    pub product_id: String,
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: u32,
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub items: Vec<Order>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn not_found(order_id: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found")
        .detail(format!("no order {order_id:?}"))
}

fn location(order_id: &OrderId) -> String {
    format!("/api/orders/{order_id}")
}

fn parse_order_id(raw: &str) -> Result<OrderId, Problem> {
    raw.parse().map_err(|_| not_found(raw))
}

/// The `Idempotency-Key` header, validated.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(headers::IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = |detail: &str| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
        )
        .detail(detail.to_owned())
        .field(headers::IDEMPOTENCY_KEY)
    };
    let key = value
        .to_str()
        .map_err(|_| bad("must be visible ASCII"))?
        .trim();
    // The draft standard allows a structured-field string: accept it quoted.
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(key);
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(bad("must be 1 to 255 characters"));
    }
    Ok(Some(key.to_owned()))
}

fn accepted(order: &Order, replayed: bool) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(order)).into_response();
    set_location(&mut response, &location(&order.order_id));
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn set_location(response: &mut Response, location: &str) {
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::ACCEPTED);
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        stored.body,
    )
        .into_response();
    if let Some(location) = stored.location.as_deref() {
        set_location(&mut response, location);
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Places an order.
///
/// Answers 202 once the command is durably stored in JetStream; the order is
/// `Pending` until order-service confirms or rejects it.
#[utoipa::path(
    post,
    path = "/api/orders",
    tag = "orders",
    request_body = CreateOrderRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a repeat with the same key and body replays the first answer")),
    responses(
        (status = 202, description = "Accepted; the command is durably stored", body = Order,
            headers(("Location" = String, description = "URL of the order"))),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still in flight", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid order, unknown product, or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot make the order durable now; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody {
        value: request,
        raw,
    }: JsonBody<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    let requested: Vec<RequestedItem> = request
        .items
        .iter()
        .map(|item| RequestedItem {
            product_id: item.product_id.clone(),
            quantity: item.quantity,
        })
        .collect();
    domain::validate_order_request(&request.customer_id, &requested).map_err(ApiError::from)?;
    let ids: Vec<&str> = requested.iter().map(|i| i.product_id.as_str()).collect();
    let catalog = state.store.products_by_id(&ids).await?;
    let (items, total_amount) =
        domain::price_items(&requested, &catalog).map_err(ApiError::from)?;

    let key = match (&state.idempotency, idempotency_key(&headers)?) {
        (Some(store), Some(key)) => Some((store, key)),
        _ => None,
    };
    let mut order_id = OrderId::new();
    if let Some((store, key)) = &key {
        let fingerprint = hex::encode(Sha256::digest(&raw));
        match store
            .claim(
                key,
                &fingerprint,
                &order_id.to_string(),
                IDEMPOTENCY_LEASE,
                state.idempotency_ttl,
            )
            .await?
        {
            Claim::Acquired { resource_id } => {
                order_id = resource_id.parse().map_err(|_| {
                    catga_core::store::StoreError::Corrupt(format!("idempotency record {key}"))
                })?;
            }
            Claim::Completed(stored) => {
                metrics::counter!(names::IDEMPOTENCY_HITS, "service" => services::ORDER_API, "kind" => "http")
                    .increment(1);
                return Ok(replay(stored));
            }
            Claim::InFlight => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "request-in-flight",
                    "A request with this Idempotency-Key is still being processed",
                )
                .retry_after(1)
                .into());
            }
            Claim::Mismatch => {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency-Key already used with a different request body",
                )
                .field(headers::IDEMPOTENCY_KEY)
                .into());
            }
        }
    }

    let draft = OrderDraft {
        order_id,
        customer_id: request.customer_id.trim().to_owned(),
        items,
        total_amount,
        created_at: OffsetDateTime::now_utc(),
    };
    let placed = place(&state, &draft).await;
    let order = match placed {
        Ok(order) => order,
        Err(err) => {
            if let Some((store, key)) = &key {
                // Keep the order id with the key: a retry reuses it, so if the
                // command did reach the stream it is still applied only once.
                if let Err(release) = store.abandon(key).await {
                    tracing::warn!(error = %release, "cannot release the idempotency key; its lease runs out by itself");
                }
            }
            return Err(err);
        }
    };
    if let Some((store, key)) = &key {
        let stored = StoredResponse {
            status: StatusCode::ACCEPTED.as_u16(),
            location: Some(location(&order.order_id)),
            body: serde_json::to_string(&order).unwrap_or_default(),
        };
        if let Err(err) = store.complete(key, &stored, state.idempotency_ttl).await {
            // The order is accepted; a retry would take over the key and
            // reuse the same order id, so nothing is doubled.
            tracing::warn!(error = %err, "cannot record the idempotent response");
        }
    }
    metrics::counter!(names::ORDERS, "service" => services::ORDER_API, "status" => OrderStatus::Pending.as_str())
        .increment(1);
    Ok(accepted(&order, false))
}

/// Records the pending order, then makes the command durable. If the command
/// cannot be stored the pending record is removed again and the client gets
/// 503; a command that did reach the stream despite the error recreates it.
async fn place(state: &AppState, draft: &OrderDraft) -> Result<Order, ApiError> {
    state.store.create_pending(draft).await?;
    let command = PlaceOrder {
        command_id: format!("place:{}", draft.order_id),
        order_id: draft.order_id,
        customer_id: draft.customer_id.clone(),
        items: draft.items.clone(),
        total_amount: draft.total_amount,
        created_at: draft.created_at,
    };
    let published =
        publish_command(state, subjects::PLACE_ORDER, &command.command_id, &command).await;
    if let Err(err) = published {
        if let Err(cleanup) = state.store.discard_pending(&draft.order_id).await {
            tracing::warn!(error = %cleanup, order_id = %draft.order_id, "cannot discard the pending order");
        }
        return Err(err);
    }
    let now = OffsetDateTime::now_utc();
    Ok(Order::from_draft(
        draft.clone(),
        OrderStatus::Pending,
        None,
        now,
    ))
}

/// Makes a command durable: published with its id as `Nats-Msg-Id`, answered
/// by JetStream within [`PUBLISH_TIMEOUT`], or a 503 for the client to retry.
async fn publish_command(
    state: &AppState,
    subject: &'static str,
    command_id: &str,
    command: &impl Serialize,
) -> Result<(), ApiError> {
    let payload = serde_json::to_vec(command).map_err(|err| {
        ApiError(
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            )
            .detail(err.to_string()),
        )
    })?;
    let message = OutgoingMessage::new(subject, command_id, payload.into());
    tokio::time::timeout(PUBLISH_TIMEOUT, state.publisher.publish(message))
        .await
        .unwrap_or_else(|_| {
            Err(MessagingError::TimedOut {
                operation: format!("publish on {subject}"),
                after: PUBLISH_TIMEOUT,
            })
        })?;
    metrics::counter!(names::MESSAGES_PUBLISHED, "service" => services::ORDER_API, "subject" => subject)
        .increment(1);
    Ok(())
}

/// Reads one order.
#[utoipa::path(
    get,
    path = "/api/orders/{order_id}",
    tag = "orders",
    params(("order_id" = String, Path, description = "Order id (UUID)")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let id = parse_order_id(&order_id)?;
    let order = state
        .store
        .order(&id)
        .await?
        .ok_or_else(|| not_found(&order_id))?;
    Ok(Json(order))
}

/// Lists orders, newest first.
#[utoipa::path(
    get,
    path = "/api/orders",
    tag = "orders",
    params(
        ("limit" = Option<usize>, Query, description = "Page size, 1 to 100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "The nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    query: QueryParams,
) -> Result<Json<OrderPage>, ApiError> {
    let bad = |field: &str, detail: String| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-query",
            "Invalid query parameter",
        )
        .field(field)
        .detail(detail)
    };
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                bad(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_PAGE}"),
                )
            })?,
    };
    let cursor = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => Some(
            raw.parse::<OrderId>()
                .map_err(|_| bad("cursor", "cursor is not one this API returned".to_owned()))?,
        ),
    };
    let items = state.store.list_orders(limit, cursor.as_ref()).await?;
    let next_cursor = if items.len() == limit {
        items.last().map(|o| o.order_id.to_string())
    } else {
        None
    };
    Ok(Json(OrderPage { items, next_cursor }))
}

/// Cancels an order. A pending or confirmed order becomes `Cancelled` and its
/// stock is released.
#[utoipa::path(
    post,
    path = "/api/orders/{order_id}/cancel",
    tag = "orders",
    params(("order_id" = String, Path, description = "Order id (UUID)")),
    responses(
        (status = 202, description = "Cancellation accepted; the order as it is now", body = Order),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is already rejected or cancelled", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot make the command durable now", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_order_id(&order_id)?;
    let order = state
        .store
        .order(&id)
        .await?
        .ok_or_else(|| not_found(&order_id))?;
    if !is_cancellable(order.status) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "order-not-cancellable",
            "The order cannot be cancelled",
        )
        .detail(format!("order {id} is {}", order.status))
        .into());
    }
    let command = CancelOrder {
        command_id: format!("cancel:{id}"),
        order_id: id,
    };
    publish_command(
        &state,
        subjects::CANCEL_ORDER,
        &command.command_id,
        &command,
    )
    .await?;
    let mut response = (StatusCode::ACCEPTED, Json(&order)).into_response();
    set_location(&mut response, &location(&id));
    Ok(response)
}

/// Whether a cancel request can still take effect: a fast 409 instead of a
/// command that order-service would find unchanged (the write model's rule is
/// `store/lua/apply_cancel.lua`).
fn is_cancellable(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Pending | OrderStatus::Confirmed)
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
