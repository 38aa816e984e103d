//! Request extraction that answers every malformed request with a problem
//! document naming what is wrong.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{StatusCode, header, request::Parts},
};
use catga_core::http::Problem;
use serde::de::DeserializeOwned;

/// A JSON body, with its raw bytes (for idempotency fingerprints).
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .detail("send the body as application/json"));
        }
        let raw = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload-too-large",
                        "Request body too large",
                    )
                    .detail(rejection.body_text())
                } else {
                    Problem::new(
                        rejection.status(),
                        "bad-request",
                        "Cannot read the request body",
                    )
                    .detail(rejection.body_text())
                }
            })?;
        let deserializer = &mut serde_json::Deserializer::from_slice(&raw);
        let value = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let problem = Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid-request",
                        "The request does not match the schema",
                    )
                    .detail(inner.to_string());
                    if path == "." {
                        problem
                    } else {
                        problem.field(path)
                    }
                }
                _ => Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
                    .detail(inner.to_string()),
            }
        })?;
        Ok(Self { value, raw })
    }
}

/// Query string parameters as text, parsed by the handler so that each bad
/// value gets its own message.
pub struct QueryParams(pub Vec<(String, String)>);

impl QueryParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|err| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad-query",
                    "Malformed query string",
                )
                .detail(err.to_string())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
        assert!(!is_json("application/jsonx"));
    }
}
