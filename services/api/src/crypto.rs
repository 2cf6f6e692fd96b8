//! Secrets, digests and signatures, on openssl (and the argon2 crate for passwords).
//!
//! - Bearer tokens and API key secrets: 32 random bytes from openssl's CSPRNG, base64url.
//! - Tokens are stored as SHA-256 digests: a token is random and long, so a plain digest is
//!   enough (unlike a password).
//! - Passwords: argon2id with the crate's default cost (19 MiB, 2 passes), salted.
//! - API key secrets: HMAC needs the secret to verify a signature, so it cannot be hashed one
//!   way; it is encrypted with AES-256-GCM under a key-encryption key that lives outside the
//!   database ([`KeyEncryption`]), bound to the key's id as associated data.

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openssl::hash::{MessageDigest, hash};
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

/// `n` random bytes from openssl's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    openssl::rand::rand_bytes(&mut buf).expect("the operating system's random source works");
    buf
}

/// A random secret of 32 bytes, base64url without padding, after `prefix`.
pub fn random_secret(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes(32)))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&hash(MessageDigest::sha256(), data).expect("SHA-256 is available"))
}

/// HMAC-SHA256 of `message` under `key`, in hex.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let key = PKey::hmac(key).expect("any key length is valid for HMAC");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("HMAC-SHA256 is available");
    signer.update(message).expect("HMAC update");
    hex(&signer.sign_to_vec().expect("HMAC sign"))
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a.as_bytes(), b.as_bytes())
}

/// Hashes a password with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&random_bytes(16))
        .map_err(|e| anyhow::anyhow!("salt encoding: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("password hashing: {e}"))
}

/// Checks a password against a stored PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash to verify against when the user does not exist, so that an unknown username takes
/// as long to refuse as a wrong password.
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not a password of anyone").expect("argon2 works"))
}

/// The key-encryption key for API key secrets: 32 bytes, from `API_KEY_ENCRYPTION_KEY`
/// (base64) in production or a key file in the embedded mode.
#[derive(Clone)]
pub struct KeyEncryption {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for KeyEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEncryption")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl KeyEncryption {
    pub fn new(key: [u8; 32]) -> Self {
        let mut tagged = b"forecourt api key encryption key\n".to_vec();
        tagged.extend_from_slice(&key);
        let id = sha256_hex(&tagged)[..16].to_owned();
        KeyEncryption { key, id }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let bytes = random_bytes(32);
        KeyEncryption::new(bytes.try_into().expect("32 bytes"))
    }

    /// Reads a key from its base64 text (standard or URL-safe alphabet).
    pub fn from_base64(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .context("the key-encryption key is not base64")?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            anyhow::anyhow!("the key-encryption key must be 32 bytes, it is {}", b.len())
        })?;
        Ok(KeyEncryption::new(key))
    }

    /// The key as base64, for writing to a key file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key)
    }

    /// The key's fingerprint, stored beside each ciphertext.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `secret`, bound to `context` (the API key's id).
    pub fn encrypt(&self, secret: &str, context: &[u8]) -> anyhow::Result<String> {
        let nonce = random_bytes(12);
        let mut tag = [0; 16];
        let ciphertext = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(&nonce),
            context,
            secret.as_bytes(),
            &mut tag,
        )
        .context("AES-256-GCM encryption")?;
        let mut out = nonce;
        out.extend_from_slice(&ciphertext);
        out.extend_from_slice(&tag);
        Ok(STANDARD.encode(out))
    }

    /// Decrypts what [`KeyEncryption::encrypt`] wrote for the same `context`.
    pub fn decrypt(&self, stored: &str, context: &[u8]) -> anyhow::Result<String> {
        let bytes = STANDARD
            .decode(stored)
            .context("stored secret is not base64")?;
        anyhow::ensure!(bytes.len() >= 28, "stored secret is too short");
        let (nonce, rest) = bytes.split_at(12);
        let (ciphertext, tag) = rest.split_at(rest.len() - 16);
        let plain = decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(nonce),
            context,
            ciphertext,
            tag,
        )
        .context("AES-256-GCM decryption (wrong key-encryption key?)")?;
        String::from_utf8(plain).context("stored secret is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_rfc_4231_test_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn secrets_decrypt_only_with_the_same_key_and_context() {
        let kek = KeyEncryption::generate();
        let stored = kek.encrypt("s3cret", b"key-1").unwrap();
        assert_eq!(kek.decrypt(&stored, b"key-1").unwrap(), "s3cret");
        assert!(kek.decrypt(&stored, b"key-2").is_err());
        assert!(
            KeyEncryption::generate()
                .decrypt(&stored, b"key-1")
                .is_err()
        );
        let again = KeyEncryption::from_base64(&kek.to_base64()).unwrap();
        assert_eq!(again.id(), kek.id());
    }

    #[test]
    fn passwords_verify_and_wrong_ones_do_not() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("correct horse", "not a phc string"));
    }
}
