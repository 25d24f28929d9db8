//! Access tokens: verifying the JWTs frontends present, and minting them for
//! the demo and the `token` command.
//!
//! Every failure maps to one 4401 close reason; the token itself is never
//! logged or echoed.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::AccountType;
use crate::close::Close;

/// How tokens are signed.
#[derive(Clone)]
pub enum SigningKey {
    /// HS256 with a shared secret.
    Secret(Vec<u8>),
    /// RS256, verified with a PEM public key.
    RsaPublicPem(Vec<u8>),
    /// ES256, verified with a PEM public key.
    EcPublicPem(Vec<u8>),
}

impl std::fmt::Debug for SigningKey {
    /// Never shows key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            SigningKey::Secret(_) => "Secret",
            SigningKey::RsaPublicPem(_) => "RsaPublicPem",
            SigningKey::EcPublicPem(_) => "EcPublicPem",
        };
        write!(f, "SigningKey::{kind}(..)")
    }
}

impl SigningKey {
    pub fn rsa_from_file(path: &Path) -> std::io::Result<Self> {
        std::fs::read(path).map(SigningKey::RsaPublicPem)
    }

    pub fn ec_from_file(path: &Path) -> std::io::Result<Self> {
        std::fs::read(path).map(SigningKey::EcPublicPem)
    }
}

/// Optional registered-claim checks. A configured claim is required: a
/// token without it is refused, not waved through.
#[derive(Clone, Debug, Default)]
pub struct ClaimChecks {
    /// The `iss` every token must carry.
    pub issuer: Option<String>,
    /// A value the token's `aud` (a string or a list) must hold.
    pub audience: Option<String>,
}

/// The longest session a token can grant. Anything later is treated as
/// this far ahead: a timer cannot wait arbitrarily long, and a session
/// outliving a century ends no sooner in practice.
const LONGEST_SESSION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The claims the bridge reads. `permissions` and `account_type` describe the
/// account when the directory does not; they are read loosely (any JSON),
/// so that odd values there never stop the directory from deciding.
// LIMITATION: `exp` must be an integer; a fractional NumericDate, which
// RFC 7519 allows, is refused with 4401.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_type: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<serde_json::Value>,
}

impl Claims {
    /// The account type and permissions the claims describe, if they
    /// describe one: a known account type and, if present, a permission
    /// mask that is a non-negative integer.
    fn described_account(&self) -> Option<(AccountType, u64)> {
        let account_type = self
            .account_type
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .and_then(AccountType::parse)?;
        let permissions = match &self.permissions {
            None => 0,
            Some(value) => value.as_u64()?,
        };
        Some((account_type, permissions))
    }
}

/// What a valid access token says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub account: Uuid,
    /// Seconds since the epoch; the session ends at this moment.
    pub expires_at: u64,
    /// The account as the token describes it, if it does. Claims that do
    /// not read as an account leave this empty: the directory decides, and
    /// an account it does not hold is unknown (4401).
    pub claimed: Option<(AccountType, u64)>,
}

impl Verified {
    /// Time left before the token expires, measured against the wall clock,
    /// at most a century, so that it can always be added to an instant.
    pub fn remaining(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Duration::from_secs(self.expires_at)
            .saturating_sub(now)
            .min(LONGEST_SESSION)
    }
}

pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(
        key: &SigningKey,
        checks: &ClaimChecks,
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        let (key, algorithm) = match key {
            SigningKey::Secret(secret) => (DecodingKey::from_secret(secret)?, Algorithm::HS256),
            SigningKey::RsaPublicPem(pem) => (DecodingKey::from_rsa_pem(pem)?, Algorithm::RS256),
            SigningKey::EcPublicPem(pem) => (DecodingKey::from_ec_pem(pem)?, Algorithm::ES256),
        };

        // Only the configured algorithm is accepted, so `alg: none` and a
        // token signed with another family of key both fail verification.
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        // jsonwebtoken checks `iss` and `aud` only when a token carries
        // them, so a configured one must also be a required claim.
        let mut required = vec!["exp", "sub"];
        match &checks.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &checks.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(TokenVerifier { key, validation })
    }

    /// Checks signature, expiry and type, and reads the account.
    pub fn verify(&self, token: &str) -> Result<Verified, Close> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |error| match error.kind() {
                ErrorKind::ExpiredSignature => Close::TokenExpired,
                _ => Close::InvalidToken,
            },
        )?;
        let claims = data.claims;

        if claims.token_type.as_deref() != Some("access") {
            return Err(Close::NotAccessToken);
        }
        let account = Uuid::parse_str(&claims.sub).map_err(|_| Close::InvalidToken)?;
        Ok(Verified {
            account,
            expires_at: claims.exp,
            claimed: claims.described_account(),
        })
    }
}

/// What to put in a new token.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub account: Uuid,
    pub account_type: Option<AccountType>,
    pub permissions: Option<u64>,
    pub lifetime: Duration,
    /// `access` for frontends; anything else is refused by the bridge.
    pub token_type: String,
}

/// Signs an HS256 token with the shared secret.
// LIMITATION: no `iss` or `aud`, so these tokens are refused by a bridge
// configured to require them.
pub fn mint(secret: &[u8], request: &TokenRequest) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = Claims {
        sub: request.account.to_string(),
        exp: (now + request.lifetime).as_secs(),
        token_type: Some(request.token_type.clone()),
        account_type: request.account_type.map(|t| t.as_str().into()),
        permissions: request.permissions.map(Into::into),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret)?,
    )
}
