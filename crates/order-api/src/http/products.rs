//! `/api/products`: the catalog, and its administration by admin tokens.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{header, request::Parts},
};
use catga_core::{
    domain::{self, Product, limits},
    http::Problem,
};
use rust_decimal::Decimal;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, extract::JsonBody};

/// `PUT /api/products/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductUpsert {
    #[schema(example = "Mechanical Keyboard", min_length = 1, max_length = 200)]
    pub name: String,
    /// Exact decimal; a JSON number or string, at most 2 decimal places.
    #[schema(value_type = f64, example = 19.99)]
    pub unit_price: Decimal,
    #[schema(minimum = 0)]
    pub stock: i64,
}

/// Claims an admin token must carry.
#[derive(Debug, Deserialize)]
pub struct AdminClaims {
    pub role: String,
    #[serde(default)]
    pub sub: Option<String>,
}

/// A request authenticated with an HS256 bearer token whose `role` is `admin`.
pub struct Admin(pub AdminClaims);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(key) = &state.jwt_key else {
            return Err(ApiError::AdministrationDisabled);
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ApiError::MissingToken)?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<AdminClaims>(token, key, &validation)
            .map_err(ApiError::InvalidToken)?
            .claims;
        if claims.role != "admin" {
            return Err(ApiError::NotAdmin);
        }
        Ok(Admin(claims))
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

/// Creates or replaces a product. Requires an admin bearer token.
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
        (status = 404, description = "Administration disabled (no Auth__JwtSecret)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid product", body = Problem, content_type = "application/problem+json"),
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
    tracing::info!(product_id = %product.product_id, admin = admin.sub.as_deref().unwrap_or("?"), "product upserted");
    Ok(Json(product))
}
