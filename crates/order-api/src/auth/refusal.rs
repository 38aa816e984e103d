//! Why a request's credentials were refused. It is answered as an
//! [`ApiError::Unauthenticated`](crate::http::ApiError): `401` with the RFC
//! 6750 `WWW-Authenticate` challenge of [`Refusal::challenge`], or `503` when
//! the identity provider's keys cannot be had at all.

/// A refused bearer token. Each variant is one `reason` label of
/// `catga_auth_refusals_total`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("no bearer token")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed(#[source] Option<jsonwebtoken::errors::Error>),
    /// `none`, an algorithm the key does not have, or one not supported.
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token names an unknown signing key")]
    UnknownKey,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not for this audience")]
    Audience,
    #[error("the token is from another issuer")]
    Issuer,
    /// A claim missing, malformed or out of bounds.
    #[error("the token lacks a valid {0} claim")]
    Claims(String),
    #[error("the signing keys are unavailable")]
    KeysUnavailable,
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed(_) => "malformed",
            Refusal::Algorithm => "algorithm",
            Refusal::UnknownKey => "unknown_key",
            Refusal::Signature => "signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Audience => "audience",
            Refusal::Issuer => "issuer",
            Refusal::Claims(_) => "claims",
            Refusal::KeysUnavailable => "keys_unavailable",
        }
    }

    /// Every reason, for tests and dashboards.
    pub const REASONS: [&'static str; 11] = [
        "missing",
        "malformed",
        "algorithm",
        "unknown_key",
        "signature",
        "expired",
        "not_yet_valid",
        "audience",
        "issuer",
        "claims",
        "keys_unavailable",
    ];

    /// The `WWW-Authenticate` challenge: no error attribute when no token
    /// was sent (RFC 6750 §3.1). Descriptions are fixed text (a configured
    /// claim name is left out), so they are always valid quoted strings.
    pub fn challenge(&self) -> String {
        let description = match self {
            Refusal::Missing => return "Bearer".to_owned(),
            Refusal::Claims(_) => "the token lacks a required claim".to_owned(),
            other => other.to_string(),
        };
        format!("Bearer error=\"invalid_token\", error_description=\"{description}\"")
    }

    /// A verification failure of `jsonwebtoken`, by what it says about the token.
    pub fn from_jwt(err: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match err.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidKeyFormat => Refusal::Signature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::InvalidAlgorithmName => Refusal::Algorithm,
            ErrorKind::ExpiredSignature => Refusal::Expired,
            ErrorKind::ImmatureSignature => Refusal::NotYetValid,
            ErrorKind::InvalidAudience => Refusal::Audience,
            ErrorKind::InvalidIssuer => Refusal::Issuer,
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
                match claim.as_str() {
                    "aud" => Refusal::Audience,
                    "iss" => Refusal::Issuer,
                    other => Refusal::Claims(other.to_owned()),
                }
            }
            _ => Refusal::Malformed(Some(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        http::{StatusCode, header},
        response::IntoResponse,
    };

    use super::*;
    use crate::http::ApiError;

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(Refusal::Missing.challenge(), "Bearer");
        assert_eq!(
            Refusal::Expired.challenge(),
            "Bearer error=\"invalid_token\", error_description=\"the token has expired\""
        );
        for refusal in [
            Refusal::Malformed(None),
            Refusal::Algorithm,
            Refusal::UnknownKey,
            Refusal::Signature,
            Refusal::NotYetValid,
            Refusal::Audience,
            Refusal::Issuer,
            Refusal::Claims("sub\"".to_owned()),
        ] {
            let response = ApiError::from(refusal).into_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let challenge = response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii");
            assert!(challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""));
            assert_eq!(challenge.matches('"').count(), 4, "{challenge}");
        }
        let response = ApiError::from(Refusal::KeysUnavailable).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn every_reason_is_listed() {
        let all = [
            Refusal::Missing,
            Refusal::Malformed(None),
            Refusal::Algorithm,
            Refusal::UnknownKey,
            Refusal::Signature,
            Refusal::Expired,
            Refusal::NotYetValid,
            Refusal::Audience,
            Refusal::Issuer,
            Refusal::Claims(String::new()),
            Refusal::KeysUnavailable,
        ];
        let reasons: Vec<_> = all.iter().map(Refusal::reason).collect();
        assert_eq!(reasons, Refusal::REASONS);
    }
}
