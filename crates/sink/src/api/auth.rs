//! Bearer tokens: every `/api/v1/targets` request names its caller by a token of
//! `[sink.api]`, which gives the caller's name (recorded in the audit) and role. Tokens are
//! compared by their SHA-256 digests in constant time, so neither a token nor its length leaks
//! through timing; a token never appears in a log or an answer.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use monitor_core::settings::{ApiSettings, Role};
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};

/// The tokens the API accepts, as digests.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Caller)>,
}

/// Who is asking, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name: recorded as the actor of every change.
    pub name: String,
    /// What the token may do.
    pub role: Role,
}

impl Caller {
    /// Refuses a caller whose role is below `role` (403).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(role))
        }
    }
}

impl Tokens {
    /// The tokens of `[sink.api]`.
    pub fn from_settings(api: &ApiSettings) -> Tokens {
        let entries = api
            .tokens
            .iter()
            .map(|t| {
                let caller = Caller {
                    name: t.name.clone(),
                    role: t.role,
                };
                (digest(t.token.expose()), caller)
            })
            .collect();
        Tokens { entries }
    }

    /// The caller holding `token`, comparing every entry so that the time taken does not
    /// depend on which one matched.
    fn caller(&self, token: &str) -> Option<Caller> {
        let presented = digest(token);
        let mut found = None;
        for (d, caller) in &self.entries {
            if constant_time_eq(d, &presented) {
                found = Some(caller.clone());
            }
        }
        found
    }

    /// The caller of a request with these headers: 401 without a known bearer token.
    pub fn authenticate(&self, parts: &Parts) -> Result<Caller, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("send Authorization: Bearer <token>"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(ApiError::Unauthorized(
                "the Authorization header is not `Bearer <token>`",
            ))?;
        self.caller(token.trim()).ok_or(ApiError::Unauthorized(
            "the token is not one of sink.api.tokens",
        ))
    }
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Caller, ApiError> {
        state.tokens.authenticate(parts)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_core::settings::{ApiToken, Secret};

    fn parts(authorization: Option<&str>) -> Parts {
        let mut request = axum::http::Request::builder();
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(()).expect("request").into_parts().0
    }

    #[test]
    fn a_known_token_names_its_caller_and_others_are_refused() {
        let tokens = Tokens::from_settings(&ApiSettings {
            tokens: vec![ApiToken {
                name: "ci".into(),
                role: Role::Admin,
                token: Secret::new("0123456789abcdef0123".into()),
            }],
        });
        let caller = tokens
            .authenticate(&parts(Some("Bearer 0123456789abcdef0123")))
            .expect("known token");
        assert_eq!(caller.name, "ci");
        assert!(caller.require(Role::Admin).is_ok());
        for bad in [None, Some("Bearer 0123456789abcdef0124"), Some("Basic abc")] {
            assert!(matches!(
                tokens.authenticate(&parts(bad)),
                Err(ApiError::Unauthorized(_))
            ));
        }
        let reader = Caller {
            name: "r".into(),
            role: Role::Read,
        };
        assert!(matches!(
            reader.require(Role::Admin),
            Err(ApiError::Forbidden(Role::Admin))
        ));
    }
}
