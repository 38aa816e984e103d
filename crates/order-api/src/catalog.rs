//! The catalog's rules, which order-api alone applies: pricing an order's
//! lines from the catalog, and what a product upsert may say. The shape of an
//! order (lines, quantities, ids) is `catga_core::domain`'s, shared with
//! order-service.

use catga_core::domain::{
    PricedItem, Product, RequestedItem, ValidationError, limits as core_limits, validate_text,
};
use rust_decimal::Decimal;

/// Limits on what catalog administration may store.
pub mod limits {
    pub use catga_core::domain::limits::MAX_NAME_LEN;
    /// Largest unit price, so any order total stays well inside the range where
    /// the JSON number rendering is exact (fewer than 15 significant digits).
    pub const MAX_UNIT_PRICE: i64 = 1_000_000;
    /// Decimal places allowed in a price.
    pub const PRICE_SCALE: u32 = 2;
}

/// Prices requested items from catalog entries looked up in the same order.
/// `catalog[i]` is the entry for `items[i]`, `None` when the product is unknown.
pub fn price_items(
    items: &[RequestedItem],
    catalog: &[Option<Product>],
) -> Result<(Vec<PricedItem>, Decimal), ValidationError> {
    let mut priced = Vec::with_capacity(items.len());
    let mut total = Decimal::ZERO;
    for (index, (item, product)) in items.iter().zip(catalog).enumerate() {
        let Some(product) = product else {
            return Err(ValidationError::UnknownProduct {
                index,
                product_id: item.product_id.clone(),
            });
        };
        total += product.unit_price * Decimal::from(item.quantity);
        priced.push(PricedItem {
            product_id: item.product_id.clone(),
            product_name: product.name.clone(),
            quantity: item.quantity,
            unit_price: product.unit_price,
        });
    }
    Ok((priced, total))
}

/// Validates a catalog upsert.
pub fn validate_product(
    name: &str,
    unit_price: Decimal,
    stock: i64,
) -> Result<(), ValidationError> {
    validate_text("name", name, limits::MAX_NAME_LEN)?;
    if unit_price <= Decimal::ZERO || unit_price > Decimal::from(limits::MAX_UNIT_PRICE) {
        return Err(ValidationError::OutOfRange {
            field: "unitPrice".to_owned(),
            min: "0.01".to_owned(),
            max: limits::MAX_UNIT_PRICE.to_string(),
        });
    }
    if unit_price.normalize().scale() > limits::PRICE_SCALE {
        return Err(ValidationError::PriceScale {
            field: "unitPrice".to_owned(),
            max: limits::PRICE_SCALE,
        });
    }
    if !(0..=core_limits::MAX_STOCK).contains(&stock) {
        return Err(ValidationError::OutOfRange {
            field: "stock".to_owned(),
            min: "0".to_owned(),
            max: core_limits::MAX_STOCK.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use catga_core::domain::default_catalog;

    use super::*;

    #[test]
    fn money_is_exact_decimal() {
        let catalog = default_catalog();
        let (priced, total) = price_items(
            &[RequestedItem::new("PROD-001", 3)],
            &[Some(catalog[0].clone())],
        )
        .expect("known product");
        assert_eq!(total.to_string(), "59.97");
        let json = serde_json::to_string(&priced[0]).expect("serialises");
        assert!(json.contains("\"unitPrice\":19.99"), "{json}");
        let order_total = serde_json::json!({"t": rust_decimal::serde::float::serialize(&total, serde_json::value::Serializer).expect("float")});
        assert_eq!(order_total.to_string(), r#"{"t":59.97}"#);
    }

    #[test]
    fn unknown_products_are_named() {
        let err = price_items(&[RequestedItem::new("NOPE", 1)], &[None]).expect_err("unknown");
        assert_eq!(err.field(), "items[0].productId");
        assert!(err.to_string().contains("NOPE"));
    }

    #[test]
    fn product_validation() {
        assert!(validate_product("Pen", Decimal::new(150, 2), 10).is_ok());
        assert!(validate_product("Pen", Decimal::new(1505, 3), 10).is_err());
        assert!(validate_product("Pen", Decimal::ZERO, 10).is_err());
        assert!(validate_product("Pen", Decimal::ONE, -1).is_err());
        assert!(validate_product("", Decimal::ONE, 1).is_err());
    }
}
