//! The order domain shared by the services: orders, products, statuses,
//! the shape rules of an order (taken in by order-api, applied by
//! order-service) and the default catalog. Pricing and the catalog's rules
//! are order-api's (`order_api::catalog`).

use std::{collections::HashSet, fmt, str::FromStr};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// Limits on an order's shape, checked where an order is taken in (order-api)
/// and, for commands, where it is applied. Generous for real use, tight
/// enough that no request can make the system do unbounded work. The
/// catalog's own limits are order-api's (`catalog::limits`).
pub mod limits {
    pub const MAX_ITEMS: usize = 50;
    pub const MAX_QUANTITY: u32 = 1_000;
    pub const MAX_ID_LEN: usize = 64;
    /// Longest product name (catalog upserts, and the names a command carries).
    pub const MAX_NAME_LEN: usize = 200;
    /// Most units of one product the store holds.
    pub const MAX_STOCK: i64 = 1_000_000_000;
}

/// Time-ordered order identifier (UUID v7), so listing newest first is an index scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl OrderId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for OrderId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 4] = [
        OrderStatus::Pending,
        OrderStatus::Confirmed,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "Pending",
            OrderStatus::Confirmed => "Confirmed",
            OrderStatus::Rejected => "Rejected",
            OrderStatus::Cancelled => "Cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown order status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// One line of an order, priced from the catalog at acceptance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PricedItem {
    pub product_id: String,
    pub product_name: String,
    pub quantity: u32,
    #[serde(with = "rust_decimal::serde::float")]
    #[schema(value_type = f64)]
    pub unit_price: Decimal,
}

/// The part of an order that never changes after acceptance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderDraft {
    pub order_id: OrderId,
    pub customer_id: String,
    pub items: Vec<PricedItem>,
    #[serde(with = "rust_decimal::serde::float")]
    pub total_amount: Decimal,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An order as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    pub customer_id: String,
    pub items: Vec<PricedItem>,
    #[serde(with = "rust_decimal::serde::float")]
    #[schema(value_type = f64)]
    pub total_amount: Decimal,
    pub status: OrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl Order {
    pub fn from_draft(
        draft: OrderDraft,
        status: OrderStatus,
        reason: Option<String>,
        updated_at: OffsetDateTime,
    ) -> Self {
        Self {
            order_id: draft.order_id,
            customer_id: draft.customer_id,
            items: draft.items,
            total_amount: draft.total_amount,
            status,
            reason,
            created_at: draft.created_at,
            updated_at,
        }
    }
}

/// A catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub product_id: String,
    pub name: String,
    #[serde(with = "rust_decimal::serde::float")]
    #[schema(value_type = f64)]
    pub unit_price: Decimal,
    pub stock: i64,
}

/// The catalog a fresh store starts with.
pub fn default_catalog() -> Vec<Product> {
    [
        (
            "PROD-001",
            "Mechanical Keyboard",
            Decimal::new(1999, 2),
            1000,
        ),
        ("PROD-002", "Wireless Mouse", Decimal::new(4950, 2), 500),
        ("PROD-003", "USB-C Hub", Decimal::new(8900, 2), 200),
    ]
    .into_iter()
    .map(|(id, name, unit_price, stock)| Product {
        product_id: id.to_owned(),
        name: name.to_owned(),
        unit_price,
        stock,
    })
    .collect()
}

/// A requested order line, before pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedItem {
    pub product_id: String,
    pub quantity: u32,
}

impl RequestedItem {
    pub fn new(product_id: impl Into<String>, quantity: u32) -> Self {
        Self {
            product_id: product_id.into(),
            quantity,
        }
    }
}

/// Why a request can never be valid. Each variant names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field} must not be empty")]
    Empty { field: String },
    #[error("{field} must be at most {max} characters")]
    TooLong { field: String, max: usize },
    #[error("{field} must be between {min} and {max}")]
    OutOfRange {
        field: String,
        min: String,
        max: String,
    },
    #[error("items must contain between 1 and {max} lines", max = limits::MAX_ITEMS)]
    ItemCount,
    #[error("items[{index}].productId {product_id:?} appears more than once")]
    DuplicateProduct { index: usize, product_id: String },
    #[error("items[{index}].productId {product_id:?} is not in the catalog")]
    UnknownProduct { index: usize, product_id: String },
    #[error("{field} must have at most {max} decimal places")]
    PriceScale { field: String, max: u32 },
    /// A value that must follow from others does not (a command's id, its total).
    #[error("{field} must be {expected}")]
    Inconsistent { field: String, expected: String },
}

impl ValidationError {
    /// The JSON pointer-ish name of the field at fault, for problem details.
    pub fn field(&self) -> String {
        match self {
            ValidationError::Empty { field }
            | ValidationError::TooLong { field, .. }
            | ValidationError::OutOfRange { field, .. }
            | ValidationError::PriceScale { field, .. }
            | ValidationError::Inconsistent { field, .. } => field.clone(),
            ValidationError::ItemCount => "items".to_owned(),
            ValidationError::DuplicateProduct { index, .. }
            | ValidationError::UnknownProduct { index, .. } => format!("items[{index}].productId"),
        }
    }
}

/// Checks a text field: trimmed non-empty and at most `max` characters.
pub fn validate_text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::Empty {
            field: field.to_owned(),
        });
    }
    if value.chars().count() > max {
        return Err(ValidationError::TooLong {
            field: field.to_owned(),
            max,
        });
    }
    Ok(())
}

/// Validates the shape of a new order (not the catalog).
pub fn validate_order_request(
    customer_id: &str,
    items: &[RequestedItem],
) -> Result<(), ValidationError> {
    validate_text("customerId", customer_id, limits::MAX_ID_LEN)?;
    if items.is_empty() || items.len() > limits::MAX_ITEMS {
        return Err(ValidationError::ItemCount);
    }
    let mut seen = HashSet::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        validate_text(
            &format!("items[{index}].productId"),
            &item.product_id,
            limits::MAX_ID_LEN,
        )?;
        if !(1..=limits::MAX_QUANTITY).contains(&item.quantity) {
            return Err(ValidationError::OutOfRange {
                field: format!("items[{index}].quantity"),
                min: "1".to_owned(),
                max: limits::MAX_QUANTITY.to_string(),
            });
        }
        if !seen.insert(item.product_id.as_str()) {
            return Err(ValidationError::DuplicateProduct {
                index,
                product_id: item.product_id.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_orders_naming_the_field() {
        let cases = [
            ("", vec![RequestedItem::new("PROD-001", 1)], "customerId"),
            ("c", vec![], "items"),
            (
                "c",
                vec![RequestedItem::new("PROD-001", 0)],
                "items[0].quantity",
            ),
            (
                "c",
                vec![RequestedItem::new("PROD-001", 1001)],
                "items[0].quantity",
            ),
            ("c", vec![RequestedItem::new(" ", 1)], "items[0].productId"),
            (
                "c",
                vec![
                    RequestedItem::new("PROD-001", 1),
                    RequestedItem::new("PROD-001", 2),
                ],
                "items[1].productId",
            ),
            (
                &"x".repeat(65),
                vec![RequestedItem::new("PROD-001", 1)],
                "customerId",
            ),
        ];
        for (customer, items, field) in cases {
            let err = validate_order_request(customer, &items).expect_err(field);
            assert_eq!(err.field(), field, "{err}");
        }
        let too_many: Vec<_> = (0..51)
            .map(|i| RequestedItem::new(format!("P{i}"), 1))
            .collect();
        assert_eq!(
            validate_order_request("c", &too_many),
            Err(ValidationError::ItemCount)
        );
        assert!(validate_order_request("c", &[RequestedItem::new("PROD-001", 1000)]).is_ok());
    }

    #[test]
    fn status_round_trips() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>().ok(), Some(status));
        }
        assert!("Shipped".parse::<OrderStatus>().is_err());
    }
}
