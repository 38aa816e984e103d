//! The OpenAPI 3 document, generated from the handlers' annotations so it
//! cannot drift from them.

use axum::Json;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{orders, products};

#[derive(OpenApi)]
#[openapi(
    info(title = "Catga Order API", description = "Accepts orders, answers queries; commands travel over NATS JetStream."),
    paths(
        orders::create,
        orders::list,
        orders::get_one,
        orders::cancel,
        products::list,
        products::upsert,
    ),
    components(schemas(
        catga_core::domain::Order,
        catga_core::domain::OrderStatus,
        catga_core::domain::PricedItem,
        catga_core::domain::Product,
        catga_core::http::Problem,
        orders::CreateOrderRequest,
        orders::OrderItemRequest,
        orders::OrderPage,
        products::ProductUpsert,
    )),
    modifiers(&BearerAuth),
    tags((name = "orders"), (name = "products"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `GET /api/openapi.json`: the document is built once, on first request.
pub async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    static DOCUMENT: std::sync::LazyLock<utoipa::openapi::OpenApi> =
        std::sync::LazyLock::new(ApiDoc::openapi);
    Json(&DOCUMENT)
}
