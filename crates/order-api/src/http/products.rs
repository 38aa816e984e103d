//! `/api/products`: the catalog (public), and its administration by admins.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::request::Parts,
};
use catga_core::{
    domain::{self, Product, limits},
    http::Problem,
};
use rust_decimal::Decimal;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, extract::JsonBody};
use crate::auth::Access;

/// `PUT /api/products/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductUpsert {
    #[schema(
        example = "Mechanical Keyboard",
        min_length = 1,
        max_length = 200,
        pattern = r"\S"
    )]
    pub name: String,
    /// Exact decimal; a JSON number or string, at most 2 decimal places.
    #[schema(value_type = f64, example = 19.99, exclusive_minimum = 0, maximum = 1_000_000, multiple_of = 0.01)]
    pub unit_price: Decimal,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub stock: i64,
}

/// A caller with the admin role (any kind of key). Anyone else is refused
/// with 403 before the body is read.
pub struct Admin(pub Access);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let access = Access::from_request_parts(parts, state).await?;
        if !access.is_admin() {
            return Err(ApiError::NotAdmin);
        }
        Ok(Admin(access))
    }
}

/// The catalog.
#[utoipa::path(
    get,
    path = "/api/products",
    tag = "products",
    responses(
        (status = 200, description = "All products", body = Vec<Product>),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Product>>, ApiError> {
    Ok(Json(state.store.products().await?))
}

/// Creates or replaces a product. Requires a bearer token with the admin role.
#[utoipa::path(
    put,
    path = "/api/products/{product_id}",
    tag = "products",
    params(("product_id" = String, Path, description = "Product id")),
    request_body = ProductUpsert,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stored product", body = Product),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Token without the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid product", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store or identity provider unavailable; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upsert(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(product_id): Path<String>,
    JsonBody { value: body, .. }: JsonBody<ProductUpsert>,
) -> Result<Json<Product>, ApiError> {
    domain::validate_text("productId", &product_id, limits::MAX_ID_LEN)?;
    crate::catalog::validate_product(&body.name, body.unit_price, body.stock)?;
    let product = Product {
        product_id,
        name: body.name.trim().to_owned(),
        unit_price: body.unit_price.normalize(),
        stock: body.stock,
    };
    state.store.upsert_product(&product).await?;
    tracing::info!(product_id = %product.product_id, admin = ?admin, "product upserted");
    Ok(Json(product))
}
