//! RSA signing keys: the one that signs access tokens, and the built-in test issuer's.
//!
//! Both built-in keys are test identities checked into this repository (`src/keys/*.test-key.pem`): they sign
//! tokens that only this mock and the harness's own fronts accept. They are embedded rather than generated
//! because RSA key generation takes hundreds of milliseconds (seconds in debug builds) and every test starts
//! its own mock. A deployment that wants its own key sets `signing_key_file`.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{KeyPair, RsaKeyPair};
use serde::Serialize;
use sha2::{Digest, Sha256};

const ENTRA_TOKEN_SIGNING_TEST_KEY: &str = include_str!("keys/entra-token-signing.test-key.pem");
const BUILTIN_TEST_ISSUER_KEY: &str = include_str!("keys/builtin-test-issuer.test-key.pem");

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{origin}: not a PEM private key: {message}")]
    Pem { origin: String, message: String },
    #[error("{origin}: not an RSA PKCS#8 key usable for RS256: {message}")]
    Rejected { origin: String, message: String },
    #[error("signing failed")]
    Sign,
}

/// An RSA key that signs RS256 JWTs, with its JWK and key id.
pub struct RsaSigningKey {
    pair: RsaKeyPair,
    kid: String,
    n_b64: String,
    e_b64: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for RsaSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaSigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl RsaSigningKey {
    /// Load a PKCS#8 PEM RSA key. `origin` names it in errors (a file path).
    pub fn from_pkcs8_pem(pem: &str, origin: &str) -> Result<Self, KeyError> {
        let der = rustls_pemfile::private_key(&mut pem.as_bytes())
            .map_err(|e| KeyError::Pem {
                origin: origin.into(),
                message: e.to_string(),
            })?
            .ok_or_else(|| KeyError::Pem {
                origin: origin.into(),
                message: "no private key block".into(),
            })?;
        let pkcs8 = match der {
            rustls::pki_types::PrivateKeyDer::Pkcs8(k) => k,
            _ => {
                return Err(KeyError::Rejected {
                    origin: origin.into(),
                    message: "expected `BEGIN PRIVATE KEY` (PKCS#8); convert with `openssl pkcs8 -topk8 -nocrypt`".into(),
                })
            }
        };
        let pair =
            RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der()).map_err(|e| KeyError::Rejected {
                origin: origin.into(),
                message: e.to_string(),
            })?;
        let components: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public_key().into();
        let n_b64 = URL_SAFE_NO_PAD.encode(&components.n);
        let e_b64 = URL_SAFE_NO_PAD.encode(&components.e);
        // RFC 7638 thumbprint: stable across runs, different per key.
        let thumb_input = format!(r#"{{"e":"{e_b64}","kty":"RSA","n":"{n_b64}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumb_input.as_bytes()));
        Ok(Self {
            pair,
            kid,
            n_b64,
            e_b64,
            rng: SystemRandom::new(),
        })
    }

    /// The built-in key that signs the mock's access tokens (parsed once per process).
    pub fn entra_test_key() -> Arc<RsaSigningKey> {
        static KEY: OnceLock<Arc<RsaSigningKey>> = OnceLock::new();
        KEY.get_or_init(|| {
            Arc::new(
                Self::from_pkcs8_pem(ENTRA_TOKEN_SIGNING_TEST_KEY, "built-in entra test key")
                    .expect("the embedded test key is valid"),
            )
        })
        .clone()
    }

    /// The built-in test issuer's key (signs `mock-aad mint-assertion` assertions).
    pub fn builtin_issuer_key() -> Arc<RsaSigningKey> {
        static KEY: OnceLock<Arc<RsaSigningKey>> = OnceLock::new();
        KEY.get_or_init(|| {
            Arc::new(
                Self::from_pkcs8_pem(BUILTIN_TEST_ISSUER_KEY, "built-in test issuer key")
                    .expect("the embedded test key is valid"),
            )
        })
        .clone()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`kty`, `use`, `kid`, `alg`, `n`, `e`).
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "alg": "RS256",
            "n": self.n_b64,
            "e": self.e_b64,
        })
    }

    /// `{"keys": [jwk]}`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk()] })
    }

    /// A compact RS256 JWT with header `{"typ":"JWT","alg":"RS256","kid":...}`.
    pub fn sign_jwt(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(|_| KeyError::Sign)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|_| KeyError::Sign)?)
        );
        let mut sig = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &self.rng,
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| KeyError::Sign)?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_jwt_verifies_with_jsonwebtoken_against_the_jwk() {
        let key = RsaSigningKey::entra_test_key();
        let token = key
            .sign_jwt(&serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}))
            .unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
            &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256),
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "x");
    }

    #[test]
    fn the_two_builtin_keys_differ() {
        assert_ne!(
            RsaSigningKey::entra_test_key().kid(),
            RsaSigningKey::builtin_issuer_key().kid()
        );
    }

    #[test]
    fn non_pkcs8_key_is_refused_with_the_fix() {
        let err = RsaSigningKey::from_pkcs8_pem("nonsense", "k.pem").unwrap_err();
        assert!(err.to_string().contains("k.pem"), "{err}");
    }
}
