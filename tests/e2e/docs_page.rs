//! `/api/docs` in a real headless browser (Debian's chromium and
//! chromium-driver): Authorize with a bearer token, then place an order
//! through the page.

use std::{collections::HashMap, time::Duration};

use catga_core::config::keys;
use catga_tests::{Api, Browser, JWT_SECRET, Process, Tokens, binary, free_port, wait_for_port};

#[tokio::test]
async fn an_order_is_placed_through_the_api_page_with_a_token() {
    // The embedded order-api with the HS256 secret: tokens, no servers.
    let dir = tempfile::TempDir::new().expect("dir");
    let port = free_port();
    let env: HashMap<String, String> = [
        (keys::HTTP_PORT.to_owned(), port.to_string()),
        (keys::HTTP_OPS_PORT.to_owned(), free_port().to_string()),
        (keys::JWT_SECRET.to_owned(), JWT_SECRET.to_owned()),
    ]
    .into();
    let api_process = Process::spawn(
        "order-api",
        binary("order-api"),
        Vec::new(),
        env,
        dir.path(),
    );
    wait_for_port(port, Duration::from_secs(20)).await;
    let base = format!("http://127.0.0.1:{port}");
    let tokens = Tokens::Secret(JWT_SECRET.to_owned());
    let token = tokens.mint("c-browser", None);

    let browser = Browser::start(dir.path()).await;
    browser.goto(&format!("{base}/api/docs/")).await;

    // Authorize: the bearer scheme's dialog.
    browser.click("button.authorize").await;
    browser.type_into(".auth-container input", &token).await;
    browser.click(".auth-btn-wrapper button.authorize").await;
    browser.click(".auth-btn-wrapper button.btn-done").await;

    // POST /api/orders: try it out with a body, execute.
    let operation = "#operations-orders-create";
    browser
        .click(&format!("{operation} .opblock-summary"))
        .await;
    browser.click(&format!("{operation} .try-out__btn")).await;
    browser
        .type_into(
            &format!("{operation} textarea.body-param__text"),
            r#"{"items": [{"productId": "PROD-002", "quantity": 2}]}"#,
        )
        .await;
    browser.click(&format!("{operation} button.execute")).await;
    let status = browser
        .text_when(
            &format!("{operation} .live-responses-table .response .response-col_status"),
            |text| !text.trim().is_empty(),
        )
        .await;
    let body = browser
        .text_when(
            &format!("{operation} .live-responses-table .response-col_description pre"),
            |text| text.contains("orderId"),
        )
        .await;
    browser.quit().await;
    assert_eq!(status.trim(), "202", "{body}\n{}", api_process.logs());
    let order: serde_json::Value = serde_json::from_str(&body).expect("the order as JSON");
    assert_eq!(
        order["customerId"], "c-browser",
        "the customer is the token's"
    );

    // The order is there, the token's customer's.
    let customer = Api::with_tokens(base, tokens).as_customer("c-browser");
    let listed = customer.get("/api/orders").await;
    assert_eq!(
        listed.body["items"][0]["orderId"], order["orderId"],
        "{:?}",
        listed.body
    );
}
