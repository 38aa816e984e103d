//! `/api/orders`: accept, query and cancel orders.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use catga_core::{
    contracts::{CancelOrder, PlaceOrder, metrics as names, services, subjects},
    domain::{self, Order, OrderDraft, OrderId, OrderStatus, RequestedItem},
    http::Problem,
    messaging::OutgoingMessage,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::auth::Access;

use super::{
    ApiError, AppState, PUBLISH_TIMEOUT,
    extract::{JsonBody, QueryParams},
    idempotency::{self, NextAction, SavedResponse},
};

const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

/// `POST /api/orders` body. Prices are never sent: they come from the catalog.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrderRequest {
    /// The customer is the token's; if given, it must be that same customer
    /// (else 403). Required only when authentication is off.
    #[schema(example = "c-42", min_length = 1, max_length = 64, pattern = r"\S")]
    #[serde(default)]
    pub customer_id: Option<String>,
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<OrderItemRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderItemRequest {
    #[schema(example = "PROD-001", min_length = 1, max_length = 64, pattern = r"\S")]
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

fn parse_order_id(raw: &str) -> Result<OrderId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::OrderNotFound(raw.to_owned()))
}

/// `202 Accepted` with the order as it is now and its URL.
fn accepted(order: &Order) -> Result<SavedResponse, ApiError> {
    let body = serde_json::to_string(order).map_err(ApiError::Encode)?;
    let location = format!("/api/orders/{}", order.order_id);
    Ok(SavedResponse::new(
        StatusCode::ACCEPTED,
        Some(location),
        body,
    ))
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
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[ -~]*[!-~][ -~]*$", description = "Makes retries safe: a repeat with the same key and body by the same caller replays the first answer; other callers' keys never meet it")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted; the command is durably stored", body = Order,
            headers(("Location" = String, description = "URL of the order"))),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (see WWW-Authenticate)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "customerId names another customer than the token's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still in flight", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid order, unknown product, or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot make the order durable now, or the identity provider's keys are unavailable; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    access: Access,
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
    // A malformed customerId is a 422 before it is compared with the caller's.
    let named = request.customer_id.as_deref().map(str::trim);
    if let Some(named) = named {
        domain::validate_text("customerId", named, domain::limits::MAX_ID_LEN)?;
    }
    let customer_id = access.order_customer(named)?.unwrap_or_default().to_owned();
    domain::validate_order_request(&customer_id, &requested)?;
    let ids: Vec<&str> = requested.iter().map(|i| i.product_id.as_str()).collect();
    let catalog = state.store.products_by_id(&ids).await?;
    let (items, total_amount) = crate::catalog::price_items(&requested, &catalog)?;

    let (order_id, claim) =
        match idempotency::try_processing(&state, &access, &headers, &raw).await? {
            NextAction::StartProcessing { order_id, claim } => (order_id, claim),
            NextAction::ReturnSavedResponse(saved) => return Ok(saved),
        };
    let draft = OrderDraft {
        order_id,
        customer_id,
        items,
        total_amount,
        created_at: OffsetDateTime::now_utc(),
    };
    let answer = place(&state, &draft)
        .await
        .and_then(|order| accepted(&order));
    match (answer, claim) {
        (Ok(response), Some(claim)) => Ok(claim.save_response(response).await),
        (Ok(response), None) => Ok(response.into_response()),
        (Err(err), Some(claim)) => {
            claim.abandon().await;
            Err(err)
        }
        (Err(err), None) => Err(err),
    }
}

/// Records the pending order, then makes the command durable. If the command
/// cannot be stored the pending record is removed again and the client gets
/// 503; a command that did reach the stream despite the error recreates it.
async fn place(state: &AppState, draft: &OrderDraft) -> Result<Order, ApiError> {
    state.store.create_pending(draft).await?;
    // A crash here leaves a pending order whose command was never published:
    // crate::pending re-publishes it.
    fail::fail_point!("catga::after-pending", |_| std::process::abort());
    let command = PlaceOrder::from_draft(draft);
    let published =
        publish_command(state, subjects::PLACE_ORDER, &command.command_id, &command).await;
    if let Err(err) = published {
        if let Err(cleanup) = state.store.discard_pending(&draft.order_id).await {
            tracing::warn!(error = %cleanup, order_id = %draft.order_id, "cannot discard the pending order");
        }
        return Err(err);
    }
    metrics::counter!(names::ORDERS, "service" => services::ORDER_API, "status" => OrderStatus::Pending.as_str())
        .increment(1);
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
    let payload = serde_json::to_vec(command).map_err(ApiError::Encode)?;
    let message = OutgoingMessage::new(subject, command_id, payload.into());
    tokio::time::timeout(PUBLISH_TIMEOUT, state.publisher.publish(message))
        .await
        .map_err(|_| ApiError::PublishTimedOut(PUBLISH_TIMEOUT))??;
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
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 401, description = "Missing or invalid bearer token (see WWW-Authenticate)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or another customer's (the same answer, so ids cannot be probed)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store or identity provider unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    access: Access,
    Path(order_id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(visible_order(&state, &access, order_id).await?))
}

/// The order `raw_id` names, if the caller may see it. Another customer's
/// order is answered exactly as one that does not exist.
async fn visible_order(
    state: &AppState,
    access: &Access,
    raw_id: String,
) -> Result<Order, ApiError> {
    let id = parse_order_id(&raw_id)?;
    state
        .store
        .order(&id)
        .await?
        .filter(|order| access.may_access(&order.customer_id))
        .ok_or(ApiError::OrderNotFound(raw_id))
}

/// Lists the caller's orders (an admin's: everyone's), newest first.
#[utoipa::path(
    get,
    path = "/api/orders",
    tag = "orders",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 20)"),
        ("cursor" = Option<String>, Query, format = Uuid, description = "The nextCursor of the previous page (an order id)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (see WWW-Authenticate)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store or identity provider unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    access: Access,
    query: QueryParams,
) -> Result<Json<OrderPage>, ApiError> {
    let bad = |field, detail| ApiError::InvalidQueryParameter { field, detail };
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
    let cursor = match query.get("cursor") {
        None => None,
        Some(raw) => Some(
            raw.parse::<OrderId>()
                .map_err(|_| bad("cursor", "cursor is not one this API returned".to_owned()))?,
        ),
    };
    // A customer's page comes from their own index: as fast with a million
    // orders in the store as with ten.
    let items = match access.listing_owner() {
        Some(customer_id) => {
            state
                .store
                .list_customer_orders(customer_id, limit, cursor.as_ref())
                .await?
        }
        None => state.store.list_orders(limit, cursor.as_ref()).await?,
    };
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
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Cancellation accepted; the order as it is now", body = Order),
        (status = 401, description = "Missing or invalid bearer token (see WWW-Authenticate)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or another customer's (the same answer, so ids cannot be probed)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is already rejected or cancelled", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot make the command durable now", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    access: Access,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    let order = visible_order(&state, &access, order_id).await?;
    let id = order.order_id;
    if !is_cancellable(order.status) {
        return Err(ApiError::OrderNotCancellable {
            order_id: id,
            status: order.status,
        });
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
    Ok(accepted(&order)?.into_response())
}

/// Whether a cancel request can still take effect: a fast 409 instead of a
/// command that order-service would find unchanged (the write model's rule is
/// `store/lua/apply_cancel.lua`).
fn is_cancellable(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Pending | OrderStatus::Confirmed)
}
