//! Bearer token validation: the key from the token's `kid` (the identity
//! provider's key set, or the HS256 secret), the algorithm from that key,
//! then signature, `exp`, `nbf`, `iss`, `aud`, and the caller's claims.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    Caller,
    keys::{self, KeyFetchError, KeyStore, Lookup, VerificationKey},
    refusal::Refusal,
    settings::{AuthSettings, ClaimNames},
};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Validates bearer tokens; one per process, shared by every request.
pub struct Validator {
    secret: Option<Arc<VerificationKey>>,
    provider: Option<KeyStore>,
    issuer: Option<String>,
    audience: Option<String>,
    claims: ClaimNames,
}

/// Why a validator cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error("the settings name no key: set Auth__Authority, Auth__JwksUrl or Auth__JwtSecret")]
    NoKeys,
    #[error("invalid HS256 secret")]
    Secret(#[source] jsonwebtoken::errors::Error),
    #[error(transparent)]
    Provider(#[from] KeyFetchError),
}

/// The part of the header that picks the key.
#[derive(Deserialize)]
struct KeyHint {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Validator {
    /// A validator for `settings`; the provider's keys are fetched on the
    /// first token that needs them.
    pub fn new(settings: &AuthSettings) -> Result<Self, ValidatorError> {
        Self::with_refresh_cooldown(settings, keys::DEFAULT_REFRESH_COOLDOWN)
    }

    /// As [`Validator::new`], with an unknown `kid` refreshing the key set at
    /// most once per `cooldown`.
    pub fn with_refresh_cooldown(
        settings: &AuthSettings,
        cooldown: Duration,
    ) -> Result<Self, ValidatorError> {
        if !settings.validates_tokens() {
            return Err(ValidatorError::NoKeys);
        }
        let secret = settings
            .jwt_secret
            .as_ref()
            .map(|secret| {
                DecodingKey::from_secret(secret.expose())
                    .map(|key| {
                        Arc::new(VerificationKey {
                            key,
                            algorithm: Algorithm::HS256,
                        })
                    })
                    .map_err(ValidatorError::Secret)
            })
            .transpose()?;
        let provider = settings
            .provider
            .clone()
            .map(|location| KeyStore::new(location, cooldown))
            .transpose()?;
        Ok(Self {
            secret,
            provider,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            claims: settings.claims.clone(),
        })
    }

    /// Fetches the identity provider's keys now, so a wrong authority or an
    /// unreachable provider is reported at start-up rather than on the first
    /// request. `Ok(None)` without a provider; `Ok(Some(n))`: `n` usable keys.
    pub async fn fetch_keys(&self) -> Result<Option<usize>, KeyFetchError> {
        match &self.provider {
            Some(provider) => provider.refresh().await.map(Some),
            None => Ok(None),
        }
    }

    /// The caller `token` proves, or why it proves nothing.
    pub async fn validate(&self, token: &str) -> Result<Caller, Refusal> {
        let hint = key_hint(token)?;
        // `none` (any case) and names no key could have are refused before
        // any key is looked up; the key's own algorithm is enforced below.
        if hint.alg.parse::<Algorithm>().is_err() {
            return Err(Refusal::Algorithm);
        }
        let key = self.key_for(hint.kid.as_deref()).await?;
        let validation = self.validation(key.algorithm);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(Refusal::from_jwt)?
            .claims;
        self.caller(&claims)
    }

    /// A token with a `kid` is the provider's; one without is the secret's,
    /// or the provider's only key.
    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<VerificationKey>, Refusal> {
        match (&self.provider, kid, &self.secret) {
            (Some(provider), Some(_), _) | (Some(provider), None, None) => {
                match provider.find(kid).await {
                    Lookup::Found(key) => Ok(key),
                    Lookup::Unknown => Err(Refusal::UnknownKey),
                    Lookup::Unavailable => Err(Refusal::KeysUnavailable),
                }
            }
            (_, _, Some(secret)) => Ok(secret.clone()),
            (None, _, None) => Err(Refusal::UnknownKey),
        }
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        keys::validation(
            algorithm,
            self.issuer.as_deref(),
            self.audience.as_deref(),
            LEEWAY,
        )
    }

    fn caller(&self, claims: &Map<String, Value>) -> Result<Caller, Refusal> {
        let customer_id = claim(claims, &self.claims.customer)
            .and_then(Value::as_str)
            .filter(|id| super::is_valid_customer_id(id))
            .ok_or_else(|| Refusal::Claims(self.claims.customer.clone()))?;
        let is_admin = claim(claims, &self.claims.admin).is_some_and(|value| match value {
            Value::String(role) => *role == self.claims.admin_value,
            Value::Array(roles) => roles
                .iter()
                .any(|role| role.as_str() == Some(self.claims.admin_value.as_str())),
            _ => false,
        });
        Ok(Caller {
            customer_id: customer_id.to_owned(),
            is_admin,
        })
    }
}

/// The token's header, read only to find the key.
fn key_hint(token: &str) -> Result<KeyHint, Refusal> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed(None));
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Refusal::Malformed(None))?;
    serde_json::from_slice(&json).map_err(|_| Refusal::Malformed(None))
}

/// Claim `name`, or, when no claim has that name, the dotted path `name`
/// (`realm_access.roles`). Names with dots (Auth0's URL-namespaced claims)
/// are found as they are.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut path = name.split('.');
        let first = claims.get(path.next()?)?;
        path.try_fold(first, |value, segment| value.get(segment))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claims_by_name_then_by_path() {
        let Value::Object(claims) = json!({
            "https://catga.dev/roles": ["admin"],
            "realm_access": {"roles": ["offline_access", "admin"]},
            "sub": "c-1",
        }) else {
            panic!("object")
        };
        assert_eq!(
            claim(&claims, "https://catga.dev/roles"),
            Some(&json!(["admin"]))
        );
        assert_eq!(
            claim(&claims, "realm_access.roles"),
            Some(&json!(["offline_access", "admin"]))
        );
        assert_eq!(claim(&claims, "realm_access.groups"), None);
        assert_eq!(claim(&claims, "sub"), Some(&json!("c-1")));
    }

    #[test]
    fn headers_that_are_not_jwts_are_malformed() {
        for token in ["", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.sig"] {
            assert!(
                matches!(key_hint(token), Err(Refusal::Malformed(_))),
                "{token:?}"
            );
        }
        let none = format!("{}.e30.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#));
        assert_eq!(key_hint(&none).map(|h| h.alg).ok().as_deref(), Some("none"));
    }
}
