//! HS256 tokens signed with `Auth__JwtSecret`, for development, tests and
//! load runs: `order-api token --sub c-42 [--role admin] [--ttl 1h]`.

use std::{ffi::OsString, process::ExitCode, time::Duration};

use catga_core::config::{ConfigError, Env, keys};
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use super::settings::{AuthSettings, ClaimNames, JwtSecret};

/// The longest lifetime a minted token may have.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Why a token cannot be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(transparent)]
    Settings(#[from] ConfigError),
    #[error("{} is not set: there is no secret to sign with", keys::JWT_SECRET)]
    NoSecret,
    #[error("the subject must be 1 to 64 characters, not blank")]
    Subject,
    #[error("the lifetime must be between 1 second and 366 days")]
    Ttl,
    #[error("cannot sign the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// Signs tokens the way order-api's validator reads them: the configured
/// claim names, and the configured issuer and audience when there are any.
pub struct TokenSigner {
    key: EncodingKey,
    claims: ClaimNames,
    issuer: Option<String>,
    audience: Option<String>,
}

impl TokenSigner {
    /// Default claim names (`sub`, `role`), no `iss` or `aud`.
    pub fn new(secret: &JwtSecret) -> Result<Self, MintError> {
        Ok(Self {
            key: EncodingKey::from_secret(secret.expose()).map_err(MintError::Sign)?,
            claims: ClaimNames::default(),
            issuer: None,
            audience: None,
        })
    }

    pub fn from_settings(settings: &AuthSettings) -> Result<Self, MintError> {
        let secret = settings.jwt_secret.as_ref().ok_or(MintError::NoSecret)?;
        Ok(Self {
            claims: settings.claims.clone(),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ..Self::new(secret)?
        })
    }

    /// A token for customer `subject`, with `role` in the admin claim, valid for `ttl`.
    pub fn mint(
        &self,
        subject: &str,
        role: Option<&str>,
        ttl: Duration,
    ) -> Result<String, MintError> {
        if !super::is_valid_customer_id(subject) {
            return Err(MintError::Subject);
        }
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            return Err(MintError::Ttl);
        }
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = Map::new();
        claims.insert("sub".to_owned(), subject.into());
        claims.insert(self.claims.customer.clone(), subject.into());
        if let Some(role) = role {
            claims.insert(self.claims.admin.clone(), role.into());
        }
        claims.insert("iat".to_owned(), now.into());
        claims.insert("exp".to_owned(), (now + ttl.as_secs()).into());
        if let Some(issuer) = &self.issuer {
            claims.insert("iss".to_owned(), issuer.as_str().into());
        }
        if let Some(audience) = &self.audience {
            claims.insert("aud".to_owned(), audience.as_str().into());
        }
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Value::Object(claims),
            &self.key,
        )
        .map_err(MintError::Sign)
    }
}

/// `order-api token`: prints an HS256 token for the configured secret.
#[derive(Debug, Parser)]
#[command(
    name = "order-api token",
    bin_name = "order-api token",
    about = "Prints an HS256 bearer token signed with Auth__JwtSecret (claim names, issuer and audience from Auth__*)"
)]
pub struct TokenArgs {
    /// The customer the token is for.
    #[arg(long)]
    pub sub: String,
    /// Put this role in the admin claim (e.g. `admin`).
    #[arg(long)]
    pub role: Option<String>,
    /// How long the token is valid (e.g. 15m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// Runs `order-api token …` (`args` without the program name) against `env`:
/// the token on standard output, or one line on standard error and exit 2.
pub fn command(args: impl IntoIterator<Item = OsString>, env: &Env) -> ExitCode {
    let args = match TokenArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(err) => {
            // Help and version are not failures.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let minted = AuthSettings::from_env(env)
        .map_err(MintError::from)
        .and_then(|settings| TokenSigner::from_settings(&settings))
        .and_then(|signer| signer.mint(&args.sub, args.role.as_deref(), args.ttl));
    match minted {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("order-api token: {err}");
            ExitCode::from(2)
        }
    }
}
