//! What the orders look like: which products, how many, which customers and
//! whether they carry an `Idempotency-Key`. Every choice is a pure function of
//! the order's sequence number, so two runs with the same options send the
//! same orders.

use std::{fmt, str::FromStr};

use serde::Serialize;

/// Weighted products, as `PROD-001=3,PROD-002=1` (weight 1 when left out).
#[derive(Debug, Clone, PartialEq)]
pub struct ProductMix {
    /// Products with their cumulative weights.
    products: Vec<(String, u64)>,
    total_weight: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("product mix {0:?}: expected PRODUCT[=WEIGHT],… with whole weights above 0")]
pub struct ProductMixError(String);

impl FromStr for ProductMix {
    type Err = ProductMixError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || ProductMixError(raw.to_owned());
        let mut products = Vec::new();
        let mut total_weight = 0u64;
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (product, weight) = match entry.split_once('=') {
                Some((product, weight)) => {
                    (product.trim(), weight.trim().parse().map_err(|_| bad())?)
                }
                None => (entry, 1),
            };
            if product.is_empty() || weight == 0 || products.iter().any(|(p, _)| p == product) {
                return Err(bad());
            }
            total_weight += weight;
            products.push((product.to_owned(), total_weight));
        }
        if products.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            products,
            total_weight,
        })
    }
}

impl fmt::Display for ProductMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = 0;
        for (i, (product, cumulative)) in self.products.iter().enumerate() {
            let separator = if i == 0 { "" } else { "," };
            write!(f, "{separator}{product}={}", cumulative - previous)?;
            previous = *cumulative;
        }
        Ok(())
    }
}

impl ProductMix {
    pub fn len(&self) -> usize {
        self.products.len()
    }

    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }

    /// The product a draw in `0..total_weight` lands on.
    fn product_at(&self, draw: u64) -> usize {
        let point = draw % self.total_weight;
        self.products
            .partition_point(|(_, cumulative)| *cumulative <= point)
    }
}

/// The orders of a run.
#[derive(Debug, Clone)]
pub struct Workload {
    pub products: ProductMix,
    /// Lines per order (distinct products, at most the mix's size).
    pub lines: usize,
    /// Each line's quantity is drawn from 1 to this.
    pub max_quantity: u32,
    /// Orders are spread over this many customers.
    pub customers: u64,
    /// `Some(prefix)`: every order carries `Idempotency-Key: <prefix>-<n>`.
    pub idempotency_prefix: Option<String>,
    /// `Some(id)`: every order is this customer's (the one a fixed `--token`
    /// is for); otherwise customer `n` is `loadgen-<n>`.
    pub fixed_customer: Option<String>,
}

/// One order of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedOrder {
    /// Which of the run's customers places it (`0..customers`).
    pub customer: u64,
    pub body: Vec<u8>,
}

/// The id of simulated customer `index`.
pub fn customer_id(index: u64) -> String {
    format!("loadgen-{index}")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderBody<'a> {
    customer_id: String,
    items: Vec<Line<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    product_id: &'a str,
    quantity: u32,
}

impl Workload {
    /// The JSON body of order number `seq`.
    pub fn body(&self, seq: u64) -> Vec<u8> {
        self.order(seq).body
    }

    /// Order number `seq`: who places it, and its JSON body.
    pub fn order(&self, seq: u64) -> PlannedOrder {
        let mut draws = Draws(seq);
        let lines = self.lines.clamp(1, self.products.len());
        let mut chosen: Vec<usize> = Vec::with_capacity(lines);
        while chosen.len() < lines {
            let mut index = self.products.product_at(draws.next());
            // Lines must name distinct products: take the next one along.
            while chosen.contains(&index) {
                index = (index + 1) % self.products.len();
            }
            chosen.push(index);
        }
        let items = chosen
            .into_iter()
            .map(|index| Line {
                product_id: &self.products.products[index].0,
                quantity: 1 + (draws.next() % u64::from(self.max_quantity.max(1))) as u32,
            })
            .collect();
        let customer = draws.next() % self.customers.max(1);
        let body = OrderBody {
            customer_id: self
                .fixed_customer
                .clone()
                .unwrap_or_else(|| customer_id(customer)),
            items,
        };
        PlannedOrder {
            customer,
            // Plain strings and integers always serialise.
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }

    pub fn idempotency_key(&self, seq: u64) -> Option<String> {
        self.idempotency_prefix
            .as_ref()
            .map(|prefix| format!("{prefix}-{seq}"))
    }
}

/// A splitmix64 sequence seeded by the order number: cheap, repeatable draws.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn workload(mix: &str, lines: usize) -> Workload {
        Workload {
            products: mix.parse().expect("mix"),
            lines,
            max_quantity: 3,
            customers: 10,
            idempotency_prefix: None,
            fixed_customer: None,
        }
    }

    #[test]
    fn mixes_parse_with_and_without_weights() {
        let mix: ProductMix = "PROD-001=3, PROD-002".parse().expect("mix");
        assert_eq!(mix.to_string(), "PROD-001=3,PROD-002=1");
        for bad in ["", "PROD-001=0", "=2", "PROD-001=x", "A,A"] {
            assert!(
                bad.parse::<ProductMix>().is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn products_are_drawn_by_weight() {
        let load = workload("A=3,B=1", 1);
        let mut a = 0;
        for seq in 0..4000 {
            let body: Value = serde_json::from_slice(&load.body(seq)).expect("json");
            if body["items"][0]["productId"] == "A" {
                a += 1;
            }
        }
        assert!((2800..3200).contains(&a), "A drawn {a} times of 4000");
    }

    #[test]
    fn each_order_names_its_customer() {
        let mut load = workload("A,B", 1);
        for seq in 0..50 {
            let order = load.order(seq);
            let body: Value = serde_json::from_slice(&order.body).expect("json");
            assert!(order.customer < 10);
            assert_eq!(body["customerId"], customer_id(order.customer));
        }
        load.fixed_customer = Some("c-42".to_owned());
        let body: Value = serde_json::from_slice(&load.body(3)).expect("json");
        assert_eq!(body["customerId"], "c-42");
    }

    #[test]
    fn bodies_are_repeatable_valid_orders() {
        let load = workload("A,B,C", 5);
        assert_eq!(load.body(7), load.body(7));
        let body: Value = serde_json::from_slice(&load.body(7)).expect("json");
        let items = body["items"].as_array().expect("items");
        assert_eq!(items.len(), 3, "lines are capped at the number of products");
        let mut products: Vec<&str> = items
            .iter()
            .filter_map(|i| i["productId"].as_str())
            .collect();
        products.sort_unstable();
        products.dedup();
        assert_eq!(products.len(), 3, "lines name distinct products");
        assert!(
            items
                .iter()
                .all(|i| (1..=3).contains(&i["quantity"].as_u64().unwrap_or(0)))
        );
    }
}
