//! `/api/docs`: the interactive API page (Swagger UI) over `/api/openapi.json`.
//! Its assets are compiled into the binary (`utoipa-swagger-ui`'s `vendored`
//! feature), so the page works with no CDN and no internet access. Its
//! Authorize button takes a bearer token, from the document's `bearer` scheme.

use axum::Router;
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the page is served.
pub const DOCS_PATH: &str = "/api/docs";
/// The document the page reads (served by [`super::openapi::document`]).
pub const OPENAPI_PATH: &str = "/api/openapi.json";

/// The page's routes. The document itself is not served here: the page
/// points at the one route that already serves it.
pub fn router() -> Router {
    SwaggerUi::new(DOCS_PATH)
        .config(Config::new([OPENAPI_PATH]).persist_authorization(true))
        .into()
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        http::{Request, StatusCode, header},
    };
    use utoipa::OpenApi;

    use super::*;

    async fn get(path: &str) -> (StatusCode, String, String) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let (status, headers, body) = crate::test_util::send(&router(), request).await;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, body)
    }

    #[tokio::test]
    async fn the_page_and_its_assets_come_from_the_binary() {
        let (status, _, _) = get(DOCS_PATH).await;
        assert!(status.is_redirection(), "{DOCS_PATH} redirects to the page");
        let (status, content_type, page) = get(&format!("{DOCS_PATH}/")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(page.contains("swagger-ui"), "{page}");
        // Every script and stylesheet is local: no CDN.
        assert!(!page.contains("https://"), "{page}");
        let (status, _, initializer) = get(&format!("{DOCS_PATH}/swagger-initializer.js")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(initializer.contains(OPENAPI_PATH), "{initializer}");
        let (status, _, bundle) = get(&format!("{DOCS_PATH}/swagger-ui-bundle.js")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(bundle.len() > 100_000, "the Swagger UI bundle itself");
    }

    #[test]
    fn the_document_declares_the_bearer_scheme_for_the_authorize_button() {
        let document =
            serde_json::to_value(super::super::openapi::ApiDoc::openapi()).expect("json");
        let scheme = &document["components"]["securitySchemes"]["bearer"];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        assert_eq!(scheme["bearerFormat"], "JWT");
    }
}
