//! The identity provider's signing keys: fetched (through OIDC discovery or
//! from a JWKS URL), cached, and refreshed when a token names a key the cache
//! does not have, so a provider rotating its keys needs no restart.

use std::{
    str::FromStr,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse},
};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use super::settings::KeyLocation;

/// An unknown `kid` refreshes the key set at most this often, so a flood of
/// tokens with made-up key ids cannot turn into a flood of fetches.
pub const DEFAULT_REFRESH_COOLDOWN: Duration = Duration::from_secs(5);
/// A key set older than this is refreshed on the next token (keys the
/// provider withdrew stop being accepted); a failed refresh keeps it.
pub const MAX_KEY_SET_AGE: Duration = Duration::from_secs(600);
/// One fetch of the discovery document or the key set.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The path of the OIDC discovery document under the authority.
pub const DISCOVERY_PATH: &str = ".well-known/openid-configuration";

/// A key and what verifying with it checks. The algorithm is the key's,
/// never the token's.
#[derive(Clone)]
pub struct VerificationKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// Why the keys could not be fetched. Logged; the caller only learns that
/// the keys are unavailable.
#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    #[error("cannot fetch {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("{url} is not a valid URL")]
    Url {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("the discovery document's issuer {found:?} is not the authority {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("{url} holds no key usable for signatures")]
    NoUsableKey { url: String },
}

/// The cached keys.
struct KeySet {
    keys: Vec<(Option<String>, Arc<VerificationKey>)>,
    /// `None`: never fetched.
    fetched_at: Option<Instant>,
}

impl KeySet {
    /// The key named `kid`; a token without one may use the only key.
    fn find(&self, kid: Option<&str>) -> Option<Arc<VerificationKey>> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(id, _)| id.as_deref() == Some(kid))
                .map(|(_, key)| key.clone()),
            None => match self.keys.as_slice() {
                [(_, only)] => Some(only.clone()),
                _ => None,
            },
        }
    }

    fn is_fresh(&self) -> bool {
        self.fetched_at
            .is_some_and(|at| at.elapsed() < MAX_KEY_SET_AGE)
    }
}

/// What a key lookup found.
pub enum Lookup {
    Found(Arc<VerificationKey>),
    /// The provider has no such key (after a refresh, or within the cooldown).
    Unknown,
    /// No key set was ever fetched and fetching fails now.
    Unavailable,
}

/// The provider's keys, shared by every request.
pub struct KeyStore {
    location: KeyLocation,
    client: reqwest::Client,
    refresh_cooldown: Duration,
    current: RwLock<Arc<KeySet>>,
    /// When the last fetch started; held during a fetch so concurrent
    /// lookups of an unknown key share one fetch.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl KeyStore {
    pub fn new(location: KeyLocation, refresh_cooldown: Duration) -> Result<Self, KeyFetchError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(KeyFetchError::Client)?;
        Ok(Self {
            location,
            client,
            refresh_cooldown,
            current: RwLock::new(Arc::new(KeySet {
                keys: Vec::new(),
                fetched_at: None,
            })),
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key a token names by `kid`, fetching the key set when it is
    /// unknown or old (at most once per cooldown).
    pub async fn find(&self, kid: Option<&str>) -> Lookup {
        let cached = self.snapshot();
        if let Some(key) = cached.find(kid).filter(|_| cached.is_fresh()) {
            return Lookup::Found(key);
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Another request may have fetched while this one waited.
        let cached = self.snapshot();
        if let Some(key) = cached.find(kid).filter(|_| cached.is_fresh()) {
            return Lookup::Found(key);
        }
        let may_fetch = last_fetch.is_none_or(|at| at.elapsed() >= self.refresh_cooldown);
        if may_fetch {
            *last_fetch = Some(Instant::now());
            if let Err(err) = self.fetch_and_store().await {
                tracing::warn!(
                    error = %with_causes(&err),
                    "cannot refresh the identity provider's signing keys"
                );
            }
        }
        drop(last_fetch);
        let current = self.snapshot();
        match current.find(kid) {
            Some(key) => Lookup::Found(key),
            None if current.fetched_at.is_none() => Lookup::Unavailable,
            None => Lookup::Unknown,
        }
    }

    /// Fetches the key set now (at start-up, to find a misconfigured
    /// provider early): how many usable keys it holds.
    pub async fn refresh(&self) -> Result<usize, KeyFetchError> {
        let mut last_fetch = self.last_fetch.lock().await;
        *last_fetch = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<usize, KeyFetchError> {
        let keys = self.fetch().await?;
        let count = keys.len();
        tracing::info!(keys = count, "signing keys fetched");
        let fetched = Arc::new(KeySet {
            keys,
            fetched_at: Some(Instant::now()),
        });
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fetched;
        Ok(count)
    }

    async fn fetch(&self) -> Result<Vec<(Option<String>, Arc<VerificationKey>)>, KeyFetchError> {
        let jwks_url = match &self.location {
            KeyLocation::Jwks { url } => url.clone(),
            KeyLocation::Discovery { authority } => self.discover(authority).await?,
        };
        let set: JwkSet = self.get_json(&jwks_url).await?;
        let keys: Vec<_> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let key = verification_key(jwk)?;
                Some((jwk.common.key_id.clone(), Arc::new(key)))
            })
            .collect();
        if keys.is_empty() {
            return Err(KeyFetchError::NoUsableKey {
                url: jwks_url.to_string(),
            });
        }
        Ok(keys)
    }

    /// The `jwks_uri` of the authority's discovery document, whose `issuer`
    /// must be the authority (a trailing `/` aside).
    async fn discover(&self, authority: &Url) -> Result<Url, KeyFetchError> {
        let url = discovery_url(authority);
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let discovery: Discovery = self.get_json(&url).await?;
        if !same_issuer(&discovery.issuer, authority.as_str()) {
            return Err(KeyFetchError::IssuerMismatch {
                expected: authority.to_string(),
                found: discovery.issuer,
            });
        }
        Url::parse(&discovery.jwks_uri).map_err(|source| KeyFetchError::Url {
            url: discovery.jwks_uri,
            source,
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
    ) -> Result<T, KeyFetchError> {
        let http = |source| KeyFetchError::Http {
            url: url.to_string(),
            source,
        };
        self.client
            .get(url.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(http)?
            .json()
            .await
            .map_err(http)
    }
}

/// An error and its causes on one line, for the log.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        line = format!("{line}: {inner}");
        cause = inner.source();
    }
    line
}

/// `{authority}/.well-known/openid-configuration`, keeping the authority's path.
pub fn discovery_url(authority: &Url) -> Url {
    let mut url = authority.clone();
    let path = format!(
        "{}/{DISCOVERY_PATH}",
        authority.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url
}

/// Issuers compared as the provider and the configuration may write them.
pub fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The key a JWK describes, with its algorithm: the JWK's `alg` when given
/// (and consistent with the key type), else the key type's usual one.
/// Encryption keys and symmetric keys (a public key set has no business
/// holding a shared secret) are skipped.
pub fn verification_key(jwk: &Jwk) -> Option<VerificationKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => implied,
        Some(declared) => Algorithm::from_str(&declared.to_string()).ok()?,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    // `alg: HS256` on an RSA key is exactly the confusion to refuse.
    (key.family() == implied.family()).then_some(())?;
    (key.family() == algorithm.family()).then_some(())?;
    Some(VerificationKey { key, algorithm })
}

/// What a token verified with `algorithm` must satisfy.
pub fn validation(
    algorithm: Algorithm,
    issuer: Option<&str>,
    audience: Option<&str>,
    leeway: Duration,
) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = leeway.as_secs();
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = issuer {
        let bare = issuer.trim_end_matches('/');
        validation.set_issuer(&[bare.to_owned(), format!("{bare}/")]);
        required.push("iss");
    }
    match audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        // No audience configured: any (a provider's tokens usually carry one).
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_keeps_the_authority_path() {
        let authority = Url::parse("https://id.example/realms/catga").expect("url");
        assert_eq!(
            discovery_url(&authority).as_str(),
            "https://id.example/realms/catga/.well-known/openid-configuration"
        );
        let authority = Url::parse("https://id.example/").expect("url");
        assert_eq!(
            discovery_url(&authority).as_str(),
            "https://id.example/.well-known/openid-configuration"
        );
    }

    #[test]
    fn the_algorithm_comes_from_the_key() {
        let rsa: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA", "kid": "r", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
            "e": "AQAB"
        }))
        .expect("jwk");
        let key = verification_key(&rsa).expect("usable");
        assert_eq!(key.algorithm, Algorithm::RS256);

        let mut confused = rsa.clone();
        confused.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::HS256);
        assert!(verification_key(&confused).is_none(), "HS256 on an RSA key");

        let mut encryption = rsa;
        encryption.common.public_key_use = Some(PublicKeyUse::Encryption);
        assert!(verification_key(&encryption).is_none());

        let secret: Jwk =
            serde_json::from_value(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"}))
                .expect("jwk");
        assert!(
            verification_key(&secret).is_none(),
            "no shared secrets from a JWKS"
        );
    }
}
