//! A stand-in identity provider: an OIDC discovery document and a JWKS
//! served over HTTP on loopback, with RSA and EC keys generated at test time
//! (the `rsa` and `p256` crates, the ones jsonwebtoken itself verifies with),
//! and tokens signed with them.

use std::sync::{Arc, Mutex};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet},
};
use serde_json::{Value, json};

use crate::servers::serve_on_loopback;

/// The path of the realm the issuer URL ends in, so discovery is tested
/// under a path, as Keycloak serves it.
const REALM_PATH: &str = "/realms/catga";
const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";
const JWKS_PATH: &str = "/realms/catga/protocol/openid-connect/certs";
/// The audience the tests configure.
pub const TEST_AUDIENCE: &str = "order-api";

/// A private key, its published public half and its `kid`.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    /// What the provider publishes.
    pub public: Jwk,
    /// The public key's DER bytes (PKCS#1 for RSA, SEC1 for EC): what an
    /// attacker would use as an HMAC secret.
    pub public_der: Vec<u8>,
}

impl SigningKey {
    /// A fresh 2048-bit RSA key for RS256.
    pub fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key");
        let der = private.to_pkcs1_der().expect("PKCS#1");
        let public_der = private
            .to_public_key()
            .to_pkcs1_der()
            .expect("PKCS#1 public")
            .as_bytes()
            .to_vec();
        Self::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_der(der.as_bytes()),
            public_der,
        )
    }

    /// A fresh P-256 key for ES256.
    pub fn ec(kid: &str) -> Self {
        use p256::{ecdsa, elliptic_curve::Generate, pkcs8::EncodePrivateKey};
        let private = ecdsa::SigningKey::generate();
        let der = private.to_pkcs8_der().expect("PKCS#8");
        let public_der = private
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec();
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(der.as_bytes()),
            public_der,
        )
    }

    fn new(kid: &str, algorithm: Algorithm, encoding: EncodingKey, public_der: Vec<u8>) -> Self {
        let mut public = Jwk::from_encoding_key(&encoding, algorithm).expect("public JWK");
        public.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            algorithm,
            encoding,
            public,
            public_der,
        }
    }

    /// `claims` signed with this key, naming it by `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

#[derive(Default)]
struct Published {
    keys: Vec<Jwk>,
    jwks_fetches: usize,
}

/// A running stand-in identity provider.
#[derive(Clone)]
pub struct IdentityProvider {
    /// The issuer (Keycloak style: `http://127.0.0.1:PORT/realms/catga`);
    /// `Auth__Authority`.
    pub issuer: String,
    /// The key set's URL; `Auth__JwksUrl`.
    pub jwks_url: String,
    base: String,
    published: Arc<Mutex<Published>>,
}

impl IdentityProvider {
    /// Serves discovery (under any path: only the realm's names the right
    /// issuer) and the key set, publishing `keys`.
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let published = Arc::new(Mutex::new(Published::default()));
        let app = Router::new().fallback(serve).with_state(published.clone());
        let base = format!("http://{}", serve_on_loopback(app).await);
        let provider = Self {
            issuer: format!("{base}{REALM_PATH}"),
            jwks_url: format!("{base}{JWKS_PATH}"),
            base,
            published,
        };
        provider.publish(keys);
        provider
    }

    /// Replaces the published key set (a rotation).
    pub fn publish(&self, keys: &[&SigningKey]) {
        self.published.lock().expect("lock").keys = keys.iter().map(|k| k.public.clone()).collect();
    }

    /// How often the key set was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.published.lock().expect("lock").jwks_fetches
    }

    /// An authority whose discovery document names another issuer.
    pub fn impostor_authority(&self) -> String {
        format!("{}/realms/impostor", self.base)
    }

    /// Claims of a token this provider would issue for `subject`: its
    /// issuer, [`TEST_AUDIENCE`], valid for an hour.
    pub fn claims(&self, subject: &str) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({
            "iss": self.issuer,
            "aud": TEST_AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": now + 3600,
        })
    }
}

/// Like a provider behind its public host name, URLs are made from the
/// `Host` the request was sent to.
async fn serve(
    State(published): State<Arc<Mutex<Published>>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let path = uri.path();
    if path == JWKS_PATH {
        let mut published = published.lock().expect("lock");
        published.jwks_fetches += 1;
        return Json(JwkSet {
            keys: published.keys.clone(),
        })
        .into_response();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if path.ends_with(DISCOVERY_SUFFIX) {
        // Always the realm's issuer: an authority under another path
        // therefore gets a mismatching one.
        return Json(json!({
            "issuer": format!("http://{host}{REALM_PATH}"),
            "jwks_uri": format!("http://{host}{JWKS_PATH}"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }))
        .into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

/// The URL-safe base64 (no padding) of `bytes`, for hand-made tokens.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(bytes)
}
