//! The HS256 path end to end through the middleware, and the access rules.
//! Keys from an identity provider are tested against a real key server in
//! `tests/e2e/auth.rs`.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
    middleware,
    routing::get,
};
use catga_core::config::Env;

use super::{token::TokenSigner, *};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn settings(pairs: &[(&str, &str)]) -> AuthSettings {
    let env = Env::from_pairs(
        pairs
            .iter()
            .copied()
            .chain([(catga_core::config::keys::JWT_SECRET, SECRET)]),
    );
    AuthSettings::from_env(&env).expect("valid settings")
}

fn guarded(authenticator: Authenticator) -> Router {
    Router::new()
        .route(
            "/whoami",
            get(|access: Access| async move { format!("{access:?}") }),
        )
        .route_layer(middleware::from_fn_with_state(authenticator, authenticate))
}

async fn call(app: &Router, authorization: Option<&str>) -> (StatusCode, Option<String>, String) {
    let mut request = Request::get("/whoami");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = request.body(Body::empty()).expect("request");
    let (status, headers, body) = crate::test_util::send(app, request).await;
    let challenge = headers
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, challenge, body)
}

#[tokio::test]
async fn minted_tokens_pass_and_bad_ones_get_a_challenge() {
    let settings = settings(&[]);
    let validator = Validator::new(&settings).expect("validator");
    let app = guarded(Authenticator::Tokens(Arc::new(validator)));
    let signer = TokenSigner::from_settings(&settings).expect("signer");
    let hour = Duration::from_secs(3600);

    let customer = signer.mint("c-42", None, hour).expect("token");
    let (status, _, body) = call(&app, Some(&format!("Bearer {customer}"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("customer_id: \"c-42\", is_admin: false"),
        "{body}"
    );

    let admin = signer.mint("ops-1", Some("admin"), hour).expect("token");
    let (status, _, body) = call(&app, Some(&format!("bearer {admin}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("is_admin: true"), "{body}");

    let (status, challenge, body) = call(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer"),
        "no error attribute without a token"
    );
    assert!(body.contains("\"status\":401"), "{body}");

    let other = JwtSecret::new("another-secret-of-sufficient-length!").expect("secret");
    let forged = TokenSigner::new(&other)
        .expect("signer")
        .mint("c-42", Some("admin"), hour)
        .expect("token");
    for (authorization, description) in [
        (
            format!("Bearer {forged}"),
            "the token's signature is not valid",
        ),
        (
            "Bearer not-a-jwt".to_owned(),
            "the token is not a well-formed JWT",
        ),
        (
            format!("Basic {customer}"),
            "the token is not a well-formed JWT",
        ),
    ] {
        let (status, challenge, _) = call(&app, Some(&authorization)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization}");
        assert_eq!(
            challenge.as_deref(),
            Some(
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\"")
                    .as_str()
            )
        );
    }
}

#[tokio::test]
async fn tokens_carry_the_configured_claims_issuer_and_audience() {
    let settings = settings(&[
        ("Auth__Issuer", "https://id.example"),
        ("Auth__Audience", "order-api"),
        ("Auth__CustomerClaim", "customer_id"),
        ("Auth__AdminClaim", "realm_access.roles"),
        ("Auth__AdminValue", "catga-admin"),
    ]);
    let validator = Validator::new(&settings).expect("validator");
    let signer = TokenSigner::from_settings(&settings).expect("signer");
    let token = signer
        .mint("c-7", Some("catga-admin"), Duration::from_secs(60))
        .expect("token");
    let caller = validator.validate(&token).await.expect("valid");
    assert_eq!(
        caller,
        Caller {
            customer_id: "c-7".to_owned(),
            is_admin: true
        }
    );
    // The default signer puts neither issuer nor audience: refused for
    // whichever is checked first.
    let plain = TokenSigner::new(settings.jwt_secret.as_ref().expect("secret"))
        .expect("signer")
        .mint("c-7", None, Duration::from_secs(60))
        .expect("token");
    assert!(matches!(
        validator.validate(&plain).await,
        Err(Refusal::Issuer | Refusal::Audience)
    ));
}

#[tokio::test]
async fn anonymous_access_needs_no_token() {
    let app = guarded(Authenticator::Anonymous);
    let (status, _, body) = call(&app, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "Anonymous");
}

#[tokio::test]
async fn a_route_without_the_middleware_fails_closed() {
    let app = Router::new().route("/whoami", get(|_: Access| async { "open" }));
    let (status, _, _) = call(&app, None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn minting_refuses_bad_subjects_and_lifetimes() {
    let signer = TokenSigner::new(&JwtSecret::new(SECRET).expect("secret")).expect("signer");
    let hour = Duration::from_secs(3600);
    assert!(matches!(
        signer.mint(" ", None, hour),
        Err(token::MintError::Subject)
    ));
    assert!(matches!(
        signer.mint(&"x".repeat(65), None, hour),
        Err(token::MintError::Subject)
    ));
    assert!(matches!(
        signer.mint("c", None, Duration::ZERO),
        Err(token::MintError::Ttl)
    ));
    let no_secret = AuthSettings::from_env(&Env::default()).expect("valid");
    assert!(matches!(
        TokenSigner::from_settings(&no_secret),
        Err(token::MintError::NoSecret)
    ));
}

#[test]
fn callers_see_their_own_orders_and_admins_every_order() {
    let customer = Access::Caller(Caller {
        customer_id: "c-1".to_owned(),
        is_admin: false,
    });
    let admin = Access::Caller(Caller {
        customer_id: "ops".to_owned(),
        is_admin: true,
    });
    assert!(customer.may_access("c-1"));
    assert!(!customer.may_access("c-2"));
    assert!(admin.may_access("c-2"));
    assert!(Access::Anonymous.may_access("c-2"));
    assert_eq!(customer.listing_owner(), Some("c-1"));
    assert_eq!(admin.listing_owner(), None);
    assert_eq!(Access::Anonymous.listing_owner(), None);
    assert!(admin.is_admin() && !customer.is_admin() && !Access::Anonymous.is_admin());

    assert_eq!(customer.order_customer(None), Ok(Some("c-1")));
    assert_eq!(customer.order_customer(Some("c-1")), Ok(Some("c-1")));
    assert!(customer.order_customer(Some("c-2")).is_err());
    assert_eq!(
        Access::Anonymous.order_customer(Some("c-2")),
        Ok(Some("c-2"))
    );
    assert_eq!(Access::Anonymous.order_customer(None), Ok(None));

    let a = Access::Caller(Caller {
        customer_id: "a:b".to_owned(),
        is_admin: false,
    });
    let b = Access::Caller(Caller {
        customer_id: "a".to_owned(),
        is_admin: false,
    });
    assert_ne!(
        a.scoped_idempotency_key("c"),
        b.scoped_idempotency_key("b:c")
    );
    assert_ne!(
        customer.scoped_idempotency_key("k"),
        Access::Anonymous.scoped_idempotency_key("k")
    );
}

#[test]
fn the_token_command_prints_a_token_or_one_line() {
    let env = Env::from_pairs([(catga_core::config::keys::JWT_SECRET, SECRET)]);
    let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
    use std::ffi::OsString;
    assert_eq!(
        token::command(
            args(&["token", "--sub", "c-42", "--role", "admin", "--ttl", "2h"]),
            &env
        ),
        std::process::ExitCode::SUCCESS
    );
    assert_eq!(
        token::command(args(&["token", "--sub", "c-42"]), &Env::default()),
        std::process::ExitCode::from(2)
    );
    assert_eq!(
        token::command(args(&["token", "--ttl", "soon"]), &env),
        std::process::ExitCode::from(2)
    );
}
