//! A small HTTP client for the order API.

use crate::{process::eventually, tokens::Tokens};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::Value;

/// A response: status, selected headers and the JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
}

/// A small client for the order API. With [`Tokens`] it sends the admin's
/// bearer token on every request that names no `authorization` of its own,
/// and places each order with its customer's token.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    tokens: Option<Tokens>,
    /// `Authorization` sent by default.
    bearer: Option<String>,
}

impl Api {
    /// A client without tokens (for an order-api that authenticates nobody).
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("HTTP client"),
            tokens: None,
            bearer: None,
        }
    }

    /// A client acting as the admin, minting tokens from `tokens`.
    pub fn with_tokens(base: String, tokens: Tokens) -> Self {
        Self {
            bearer: Some(tokens.admin()),
            tokens: Some(tokens),
            ..Self::new(base)
        }
    }

    /// The same client acting as `customer`.
    pub fn as_customer(&self, customer: &str) -> Self {
        let tokens = self.tokens.as_ref().expect("a client with tokens");
        Self {
            bearer: Some(tokens.customer(customer)),
            ..self.clone()
        }
    }

    /// The same client sending no token.
    pub fn without_token(&self) -> Self {
        Self {
            bearer: None,
            ..self.clone()
        }
    }

    /// Sends a raw request; `Err` when no answer came (refused, reset, timed out).
    pub async fn try_send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let names_its_own = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        if let (Some(bearer), false) = (&self.bearer, names_its_own) {
            request = request.header("authorization", bearer);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends a raw request that must be answered.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        self.try_send(method, path, headers, body)
            .await
            .expect("request answered")
    }

    pub async fn post_json(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(
            reqwest::Method::POST,
            path,
            &all,
            Some(serde_json::to_vec(body).expect("json")),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, &[], None).await
    }

    /// Places an order for `(productId, quantity)` lines, as `customer`
    /// when the client has tokens.
    pub async fn place(&self, customer: &str, lines: &[(&str, u32)]) -> Reply {
        let client = match self.tokens {
            Some(_) => self.as_customer(customer),
            None => self.clone(),
        };
        client
            .post_json("/api/orders", &order_body(customer, lines), &[])
            .await
    }

    /// Waits until the order leaves `Pending`; returns it.
    pub async fn final_state(&self, order_id: &str) -> Value {
        eventually(
            &format!("order {order_id} to leave Pending"),
            Duration::from_secs(20),
            || async {
                let reply = self.get(&format!("/api/orders/{order_id}")).await;
                assert_eq!(
                    reply.status, 200,
                    "order {order_id} must exist: {:?}",
                    reply.body
                );
                (reply.body["status"] != "Pending").then_some(reply.body)
            },
        )
        .await
    }

    /// The catalog entry of `product_id`.
    pub async fn product(&self, product_id: &str) -> Value {
        let reply = self.get("/api/products").await;
        reply
            .body
            .as_array()
            .and_then(|all| all.iter().find(|p| p["productId"] == product_id).cloned())
            .unwrap_or_else(|| panic!("no product {product_id} in {:?}", reply.body))
    }

    /// Creates or replaces a product with an admin token.
    pub async fn upsert_product(
        &self,
        product_id: &str,
        name: &str,
        price: &str,
        stock: i64,
    ) -> Reply {
        let auth = self.tokens.as_ref().expect("a client with tokens").admin();
        let body = serde_json::json!({"name": name, "unitPrice": price, "stock": stock});
        self.send(
            reqwest::Method::PUT,
            &format!("/api/products/{product_id}"),
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            Some(serde_json::to_vec(&body).expect("json")),
        )
        .await
    }
}

/// The JSON body of an order for `(productId, quantity)` lines.
pub fn order_body(customer: &str, lines: &[(&str, u32)]) -> Value {
    serde_json::json!({
        "customerId": customer,
        "items": lines
            .iter()
            .map(|(product, quantity)| serde_json::json!({"productId": product, "quantity": quantity}))
            .collect::<Vec<_>>(),
    })
}

/// An HS256 token with `role`, valid for an hour.
pub fn admin_token(secret: &str, role: &str) -> String {
    Tokens::Secret(secret.to_owned()).mint("e2e", Some(role))
}
