//! Bearer token validation against a real key server: a stand-in identity
//! provider serving OIDC discovery and a JWKS over HTTP, with RSA and EC keys
//! generated for the test. Nothing in the validation is mocked.

use std::time::Duration;

use catga_core::{
    config::{Env, keys},
    contracts::metrics,
};
use catga_tests::{IdentityProvider, JWT_SECRET, SigningKey, TEST_AUDIENCE, b64url};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use order_api::{
    auth::{AuthSettings, Authenticator, Caller, Refusal, Validator, token::TokenSigner},
    http::ApiError,
};
use serde_json::{Value, json};

fn settings(pairs: &[(&str, &str)]) -> AuthSettings {
    AuthSettings::from_env(&Env::from_pairs(pairs.iter().copied())).expect("valid settings")
}

/// Discovery from the provider's issuer, the test audience and the HS256 secret.
fn provider_settings(provider: &IdentityProvider) -> AuthSettings {
    settings(&[
        (keys::AUTH_AUTHORITY, &provider.issuer),
        (keys::AUTH_AUDIENCE, TEST_AUDIENCE),
        (keys::JWT_SECRET, JWT_SECRET),
    ])
}

fn with(mut claims: Value, extra: Value) -> Value {
    if let (Value::Object(claims), Value::Object(extra)) = (&mut claims, extra) {
        claims.extend(extra);
    }
    claims
}

fn caller(customer_id: &str, is_admin: bool) -> Caller {
    Caller {
        customer_id: customer_id.to_owned(),
        is_admin,
    }
}

#[tokio::test]
async fn rs256_es256_and_hs256_tokens_are_accepted_with_the_admin_role_from_any_key() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let provider = IdentityProvider::start(&[&rsa, &ec]).await;
    let settings = provider_settings(&provider);
    let validator = Validator::new(&settings).expect("validator");
    let admin = json!({"role": "admin"});

    assert_eq!(validator.fetch_keys().await.expect("keys"), Some(2));
    let token = rsa.sign(&provider.claims("c-1"));
    assert_eq!(
        validator.validate(&token).await.expect("RS256"),
        caller("c-1", false)
    );
    let token = ec.sign(&provider.claims("c-2"));
    assert_eq!(
        validator.validate(&token).await.expect("ES256"),
        caller("c-2", false)
    );
    let token = rsa.sign(&with(provider.claims("ops-1"), admin.clone()));
    assert_eq!(
        validator.validate(&token).await.expect("RS256 admin"),
        caller("ops-1", true)
    );
    let token = ec.sign(&with(provider.claims("ops-2"), admin));
    assert_eq!(
        validator.validate(&token).await.expect("ES256 admin"),
        caller("ops-2", true)
    );
    // The secret's tokens (`order-api token`) carry the configured issuer and audience.
    let signer = TokenSigner::from_settings(&settings).expect("signer");
    let token = signer
        .mint("ops-3", Some("admin"), Duration::from_secs(60))
        .expect("token");
    assert_eq!(
        validator.validate(&token).await.expect("HS256 admin"),
        caller("ops-3", true)
    );
    assert_eq!(provider.jwks_fetches(), 1, "the key set is cached");

    // A JWKS URL works without discovery, and Keycloak's role array by path.
    let direct = Validator::new(&settings_for_jwks(&provider)).expect("validator");
    let keycloak_admin = json!({"realm_access": {"roles": ["offline_access", "catga-admin"]}});
    let token = ec.sign(&with(provider.claims("ops-4"), keycloak_admin));
    assert_eq!(
        direct.validate(&token).await.expect("ES256"),
        caller("ops-4", true)
    );
}

fn settings_for_jwks(provider: &IdentityProvider) -> AuthSettings {
    settings(&[
        (keys::AUTH_JWKS_URL, &provider.jwks_url),
        (keys::AUTH_ISSUER, &provider.issuer),
        (keys::AUTH_ADMIN_CLAIM, "realm_access.roles"),
        (keys::AUTH_ADMIN_VALUE, "catga-admin"),
    ])
}

/// The value of `catga_auth_refusals_total{reason}` on the process's recorder.
fn refusals(reason: &str) -> u64 {
    let label = format!("reason=\"{reason}\"");
    catga_core::telemetry::metrics_handle()
        .render()
        .lines()
        .filter(|line| line.starts_with(metrics::AUTH_REFUSALS) && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn each_bad_token_is_refused_with_its_reason_and_counted() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let rogue = SigningKey::ec("rogue");
    let provider = IdentityProvider::start(&[&rsa, &ec]).await;
    // The recorder first, as a service installs it at start-up.
    catga_core::telemetry::metrics_handle();
    let authenticator =
        Authenticator::tokens(Validator::new(&provider_settings(&provider)).expect("validator"));
    assert!(
        catga_core::telemetry::metrics_handle()
            .render()
            .contains("reason=\"keys_unavailable\""),
        "every reason is exported from the start"
    );
    let now = jsonwebtoken::get_current_timestamp();
    let good = provider.claims("c-1");

    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
        b64url(good.to_string().as_bytes())
    );
    let unknown_algorithm = format!(
        "{}.{}.c2ln",
        b64url(br#"{"alg":"XS512","kid":"rsa-1"}"#),
        b64url(good.to_string().as_bytes())
    );
    let tampered = {
        let token = rsa.sign(&good);
        let (message, signature) = token.rsplit_once('.').expect("three parts");
        let mut signature = signature.as_bytes().to_vec();
        let middle = signature.len() / 2;
        signature[middle] = if signature[middle] == b'A' {
            b'B'
        } else {
            b'A'
        };
        format!("{message}.{}", String::from_utf8(signature).expect("ascii"))
    };
    let forged_payload = {
        let token = ec.sign(&good);
        let mut parts: Vec<&str> = token.split('.').collect();
        let admin = b64url(
            with(good.clone(), json!({"role": "admin"}))
                .to_string()
                .as_bytes(),
        );
        parts[1] = &admin;
        parts.join(".")
    };
    // The classic confusion: HS256 keyed with the published RSA public key.
    let hs256_with_public_key = |kid: Option<&str>| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(
            &header,
            &good,
            &EncodingKey::from_secret(&rsa.public_der).expect("key"),
        )
        .expect("token")
    };

    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned, "algorithm"),
        ("unknown alg", unknown_algorithm, "algorithm"),
        (
            "expired",
            rsa.sign(&with(good.clone(), json!({"exp": now - 600}))),
            "expired",
        ),
        (
            "no exp",
            rsa.sign(&json!({"iss": provider.issuer, "aud": TEST_AUDIENCE, "sub": "c-1"})),
            "claims",
        ),
        (
            "future nbf",
            ec.sign(&with(good.clone(), json!({"nbf": now + 600}))),
            "not_yet_valid",
        ),
        (
            "wrong aud",
            rsa.sign(&with(good.clone(), json!({"aud": "another-api"}))),
            "audience",
        ),
        (
            "wrong iss",
            ec.sign(&with(
                good.clone(),
                json!({"iss": provider.impostor_authority()}),
            )),
            "issuer",
        ),
        ("unknown kid", rogue.sign(&good), "unknown_key"),
        ("tampered signature", tampered, "signature"),
        ("tampered claims", forged_payload, "signature"),
        (
            "HS256 keyed with the RSA public key, RSA kid",
            hs256_with_public_key(Some("rsa-1")),
            "algorithm",
        ),
        (
            "HS256 keyed with the RSA public key, no kid",
            hs256_with_public_key(None),
            "signature",
        ),
        (
            "no customer claim",
            rsa.sign(&with(good.clone(), json!({"sub": null}))),
            "claims",
        ),
        ("not a JWT", "abc.def".to_owned(), "malformed"),
    ];
    for (what, token, reason) in cases {
        let before = refusals(reason);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        let refusal = authenticator.access(&headers).await.expect_err(what);
        assert_eq!(refusal.reason(), reason, "{what}: {refusal}");
        assert_eq!(
            refusals(reason),
            before + 1,
            "{what} is counted under {reason}"
        );
        let response = axum::response::IntoResponse::into_response(ApiError::from(refusal));
        assert_eq!(response.status(), 401, "{what}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .expect("ascii");
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{what}: {challenge}"
        );
    }

    let before = refusals("missing");
    let refusal = authenticator
        .access(&axum::http::HeaderMap::new())
        .await
        .expect_err("no token");
    assert!(matches!(refusal, Refusal::Missing));
    assert_eq!(refusals("missing"), before + 1);
    // The good token still passes after all that.
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        axum::http::header::AUTHORIZATION,
        format!("Bearer {}", rsa.sign(&good))
            .parse()
            .expect("header"),
    );
    authenticator
        .access(&headers)
        .await
        .expect("the good token");
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_without_a_restart_at_most_once_per_cooldown() {
    let old = SigningKey::rsa("2026-old");
    let new = SigningKey::ec("2026-new");
    let provider = IdentityProvider::start(&[&old]).await;
    let cooldown = Duration::from_millis(800);
    let validator = Validator::with_refresh_cooldown(&provider_settings(&provider), cooldown)
        .expect("validator");

    validator
        .validate(&old.sign(&provider.claims("c-1")))
        .await
        .expect("the old key");
    assert_eq!(provider.jwks_fetches(), 1);

    provider.publish(&[&new]);
    let fresh = new.sign(&provider.claims("c-1"));
    // Within the cooldown a flood of unknown kids fetches nothing.
    let attempts = (0..20).map(|_| validator.validate(&fresh));
    for result in futures::future::join_all(attempts).await {
        assert!(matches!(result, Err(Refusal::UnknownKey)), "{result:?}");
    }
    assert_eq!(provider.jwks_fetches(), 1, "no fetch within the cooldown");

    tokio::time::sleep(cooldown + Duration::from_millis(100)).await;
    let attempts = (0..20).map(|_| validator.validate(&fresh));
    for result in futures::future::join_all(attempts).await {
        assert_eq!(result.expect("the new key"), caller("c-1", false));
    }
    assert_eq!(provider.jwks_fetches(), 2, "one fetch for all of them");

    // The withdrawn key is no longer accepted.
    let stale = old.sign(&provider.claims("c-1"));
    assert!(matches!(
        validator.validate(&stale).await,
        Err(Refusal::UnknownKey)
    ));
}

#[tokio::test]
async fn a_provider_whose_discovery_names_another_issuer_is_not_trusted() {
    let rsa = SigningKey::rsa("rsa-1");
    let provider = IdentityProvider::start(&[&rsa]).await;
    let impostor = provider.impostor_authority();
    let validator =
        Validator::new(&settings(&[(keys::AUTH_AUTHORITY, &impostor)])).expect("validator");
    let token = rsa.sign(&with(provider.claims("c-1"), json!({"iss": impostor})));
    let err = validator
        .fetch_keys()
        .await
        .expect_err("the start-up check reports it");
    assert!(err.to_string().contains("impostor"), "{err}");
    let refusal = validator.validate(&token).await.expect_err("untrusted");
    assert!(matches!(refusal, Refusal::KeysUnavailable), "{refusal}");
    assert_eq!(provider.jwks_fetches(), 0, "keys are not even fetched");
    let response = axum::response::IntoResponse::into_response(ApiError::from(refusal));
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn the_token_command_prints_a_token_order_api_accepts() {
    let output = tokio::process::Command::new(catga_tests::binary("order-api"))
        .args(["token", "--sub", "c-42", "--role", "admin", "--ttl", "10m"])
        .env(keys::JWT_SECRET, JWT_SECRET)
        .output()
        .await
        .expect("run order-api token");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).expect("utf-8");
    let validator =
        Validator::new(&settings(&[(keys::JWT_SECRET, JWT_SECRET)])).expect("validator");
    assert_eq!(
        validator.validate(token.trim()).await.expect("valid"),
        caller("c-42", true)
    );

    let output = tokio::process::Command::new(catga_tests::binary("order-api"))
        .args(["token", "--sub", "c-42"])
        .env_remove(keys::JWT_SECRET)
        .output()
        .await
        .expect("run order-api token");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(keys::JWT_SECRET), "{stderr}");
}
