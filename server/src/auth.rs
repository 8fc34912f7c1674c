//! Passwords (argon2id) and opaque session tokens (random 256 bits, stored as sha256).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::Argon2Cost;

/// sha256 of a token: what storage keeps, so a leaked table does not leak sessions.
pub type TokenHash = [u8; 32];

fn hasher(cost: Argon2Cost) -> Result<Argon2<'static>, argon2::Error> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hash a password with argon2id at the given cost (PHC string). CPU-heavy: call it
/// from a blocking thread.
pub fn hash_password(cost: Argon2Cost, password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let argon = hasher(cost).map_err(|e| e.to_string())?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Check a password against a stored PHC string (its own parameters apply).
pub fn verify_password(stored: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A fresh random token (64 hex chars) and its hash.
pub fn new_token() -> (String, TokenHash) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip_and_tokens_differ() {
        let cost = Argon2Cost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let h = hash_password(cost, "correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("garbage", "x"));
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(token_hash(&a), ha);
    }
}
