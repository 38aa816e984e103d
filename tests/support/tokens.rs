//! Bearer tokens for the test clients, from either kind of key order-api
//! accepts: the HS256 secret (`Auth__JwtSecret`, what `order-api token`
//! mints) or a stand-in identity provider's signing key (`Auth__Authority`).

use serde_json::json;

use crate::jwks::{IdentityProvider, SigningKey};

/// The subject of the admin tokens the test clients send by default.
pub const ADMIN_SUBJECT: &str = "e2e-admin";
/// The admin claim and value order-api looks for by default.
const ROLE_CLAIM: &str = "role";
pub const ADMIN_ROLE: &str = "admin";

/// Where a test's tokens come from.
#[derive(Clone)]
pub enum Tokens {
    /// HS256 with this secret.
    Secret(String),
    /// Signed with `key`, published by `provider`, with its issuer and audience.
    Provider {
        provider: IdentityProvider,
        key: Box<SigningKey>,
    },
}

impl Tokens {
    /// A token for `subject` (with `role` in the admin claim), valid for an hour.
    pub fn mint(&self, subject: &str, role: Option<&str>) -> String {
        match self {
            Tokens::Secret(secret) => {
                let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
                let mut claims = json!({"sub": subject, "exp": exp});
                if let Some(role) = role {
                    claims[ROLE_CLAIM] = role.into();
                }
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                    &claims,
                    &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("key"),
                )
                .expect("token")
            }
            Tokens::Provider { provider, key } => {
                let mut claims = provider.claims(subject);
                if let Some(role) = role {
                    claims[ROLE_CLAIM] = role.into();
                }
                key.sign(&claims)
            }
        }
    }

    /// `Bearer <token>` for a customer.
    pub fn customer(&self, subject: &str) -> String {
        format!("Bearer {}", self.mint(subject, None))
    }

    /// `Bearer <token>` for the admin.
    pub fn admin(&self) -> String {
        format!("Bearer {}", self.mint(ADMIN_SUBJECT, Some(ADMIN_ROLE)))
    }
}
