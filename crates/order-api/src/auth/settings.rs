//! `Auth__*` settings: where signing keys come from, what tokens must carry,
//! and which claims name the customer and the admin role.

use std::fmt;

use catga_core::config::{ConfigError, Env, keys};
use url::Url;

/// The HS256 secret (`Auth__JwtSecret`), for development and tests. Never printed.
#[derive(Clone)]
pub struct JwtSecret(String);

/// HS256 needs a 256-bit key; a shorter secret can be brute-forced.
pub const MIN_SECRET_LEN: usize = 32;

impl JwtSecret {
    /// A secret of at least [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: impl Into<String>) -> Result<Self, ConfigError> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::new(
                keys::JWT_SECRET,
                "must be at least 32 characters (HS256 needs a 256-bit secret)",
            ));
        }
        Ok(Self(secret))
    }

    /// `Auth__JwtSecret`, if set.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        env.get(keys::JWT_SECRET).map(Self::new).transpose()
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(***)")
    }
}

/// Where the identity provider publishes its signing keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// `Auth__Authority`: `{authority}/.well-known/openid-configuration`
    /// names the `jwks_uri`, and its `issuer` must be the authority.
    Discovery { authority: Url },
    /// `Auth__JwksUrl`: the key set itself.
    Jwks { url: Url },
}

/// The claims that say who the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    /// `Auth__CustomerClaim`: the customer id (default `sub`).
    pub customer: String,
    /// `Auth__AdminClaim`: a string or an array of strings (default `role`).
    /// A name not found as such is read as a dotted path, so Keycloak's
    /// `realm_access.roles` works.
    pub admin: String,
    /// `Auth__AdminValue`: the value of that claim that makes an admin (default `admin`).
    pub admin_value: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            customer: "sub".to_owned(),
            admin: "role".to_owned(),
            admin_value: "admin".to_owned(),
        }
    }
}

/// Everything `Auth__*`.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// The identity provider's keys; `None` without `Auth__Authority` and `Auth__JwksUrl`.
    pub provider: Option<KeyLocation>,
    pub jwt_secret: Option<JwtSecret>,
    /// The `iss` every token must carry: `Auth__Issuer`, else the authority.
    pub issuer: Option<String>,
    /// The `aud` every token must carry (`Auth__Audience`); any when unset.
    pub audience: Option<String>,
    pub claims: ClaimNames,
    /// `Auth__AllowAnonymous`: a distributed order-api may run without keys.
    pub allow_anonymous: bool,
}

impl AuthSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let authority = http_url(env, keys::AUTH_AUTHORITY)?;
        let jwks_url = http_url(env, keys::AUTH_JWKS_URL)?;
        let issuer = env
            .get(keys::AUTH_ISSUER)
            .map(str::to_owned)
            .or_else(|| authority.as_ref().map(|url| url.as_str().to_owned()));
        // An explicit JWKS URL wins over discovery (e.g. an in-cluster
        // address for a provider whose public issuer URL is elsewhere).
        let provider = match (jwks_url, authority) {
            (Some(url), _) => Some(KeyLocation::Jwks { url }),
            (None, Some(authority)) => Some(KeyLocation::Discovery { authority }),
            (None, None) => None,
        };
        let defaults = ClaimNames::default();
        let claims = ClaimNames {
            customer: claim_name(env, keys::AUTH_CUSTOMER_CLAIM, defaults.customer)?,
            admin: claim_name(env, keys::AUTH_ADMIN_CLAIM, defaults.admin)?,
            admin_value: claim_name(env, keys::AUTH_ADMIN_VALUE, defaults.admin_value)?,
        };
        Ok(Self {
            provider,
            jwt_secret: JwtSecret::from_env(env)?,
            issuer,
            audience: env.get(keys::AUTH_AUDIENCE).map(str::to_owned),
            claims,
            allow_anonymous: env.bool_or(keys::AUTH_ALLOW_ANONYMOUS, false)?,
        })
    }

    /// Whether any token can be validated (a provider or a secret is set).
    pub fn validates_tokens(&self) -> bool {
        self.provider.is_some() || self.jwt_secret.is_some()
    }

    /// The start-up rule of distributed mode: tokens are validated, or
    /// anonymous access was asked for explicitly. `Ok(true)`: anonymous.
    pub fn require_for_distributed(&self) -> Result<bool, ConfigError> {
        match (self.validates_tokens(), self.allow_anonymous) {
            (true, _) => Ok(false),
            (false, true) => Ok(true),
            (false, false) => Err(ConfigError::new(
                keys::AUTH_AUTHORITY,
                format!(
                    "a distributed order-api needs {}, {} or {} to authenticate callers \
                     (or {}=true to run without authentication)",
                    keys::AUTH_AUTHORITY,
                    keys::AUTH_JWKS_URL,
                    keys::JWT_SECRET,
                    keys::AUTH_ALLOW_ANONYMOUS
                ),
            )),
        }
    }
}

/// An `http(s)` URL. The value is not echoed: it may carry credentials.
fn http_url(env: &Env, key: &str) -> Result<Option<Url>, ConfigError> {
    let Some(raw) = env.get(key) else {
        return Ok(None);
    };
    let url = Url::parse(raw).map_err(|err| ConfigError::new(key, "not a URL").caused_by(err))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(key, "must be an http:// or https:// URL"));
    }
    Ok(Some(url))
}

fn claim_name(env: &Env, key: &str, default: String) -> Result<String, ConfigError> {
    match env.get(key) {
        None => Ok(default),
        Some(name) if name.len() <= 256 => Ok(name.to_owned()),
        Some(_) => Err(ConfigError::new(key, "must be at most 256 characters")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_set_validates_nothing_and_a_distributed_api_refuses_to_start() {
        let settings = AuthSettings::from_env(&Env::default()).expect("valid");
        assert!(!settings.validates_tokens());
        assert_eq!(settings.claims, ClaimNames::default());
        let err = settings.require_for_distributed().expect_err("refused");
        assert_eq!(err.setting, keys::AUTH_AUTHORITY);
        assert!(err.to_string().contains(keys::AUTH_ALLOW_ANONYMOUS));

        let env = Env::from_pairs([(keys::AUTH_ALLOW_ANONYMOUS, "true")]);
        let settings = AuthSettings::from_env(&env).expect("valid");
        assert!(settings.require_for_distributed().expect("allowed"));
    }

    #[test]
    fn authority_gives_discovery_and_the_issuer() {
        let env = Env::from_pairs([
            (keys::AUTH_AUTHORITY, "https://id.example/realms/catga"),
            (keys::AUTH_AUDIENCE, "order-api"),
            (keys::AUTH_CUSTOMER_CLAIM, "customer_id"),
            (keys::AUTH_ADMIN_CLAIM, "realm_access.roles"),
            (keys::AUTH_ADMIN_VALUE, "catga-admin"),
        ]);
        let settings = AuthSettings::from_env(&env).expect("valid");
        assert!(matches!(
            settings.provider,
            Some(KeyLocation::Discovery { .. })
        ));
        assert_eq!(
            settings.issuer.as_deref(),
            Some("https://id.example/realms/catga")
        );
        assert_eq!(settings.audience.as_deref(), Some("order-api"));
        assert_eq!(settings.claims.customer, "customer_id");
        assert_eq!(settings.claims.admin, "realm_access.roles");
        assert_eq!(settings.claims.admin_value, "catga-admin");
        assert!(!settings.require_for_distributed().expect("configured"));
    }

    #[test]
    fn a_jwks_url_wins_and_the_issuer_is_optional() {
        let env = Env::from_pairs([(keys::AUTH_JWKS_URL, "http://keys.internal/jwks")]);
        let settings = AuthSettings::from_env(&env).expect("valid");
        assert!(matches!(settings.provider, Some(KeyLocation::Jwks { .. })));
        assert_eq!(settings.issuer, None);
    }

    #[test]
    fn bad_values_name_their_setting_without_echoing_them() {
        for (key, value) in [
            (keys::AUTH_AUTHORITY, "not a url at all"),
            (keys::AUTH_JWKS_URL, "ftp://user:hunter2@keys.example/jwks"),
            (keys::JWT_SECRET, "hunter2"),
            (keys::AUTH_ALLOW_ANONYMOUS, "perhaps"),
        ] {
            let err =
                AuthSettings::from_env(&Env::from_pairs([(key, value)])).expect_err("refused");
            assert_eq!(err.setting, key);
            if key != keys::AUTH_ALLOW_ANONYMOUS {
                assert!(!err.to_string().contains("hunter2"), "{err}");
                assert!(!err.to_string().contains(value), "{err}");
            }
        }
    }
}
