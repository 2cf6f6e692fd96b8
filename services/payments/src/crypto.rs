//! The signing primitives every channel uses, on the system's libssl: RSA with SHA-256
//! (PKCS#1 v1.5, what WeChat Pay calls `SHA256-RSA2048` and Alipay calls `RSA2`) and
//! AES-256-GCM (WeChat Pay's encrypted notification resources).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rand::rand_bytes;
use openssl::sign::{Signer, Verifier};
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

/// A failure in a cryptographic step. The detail is for logs; callers act on the kind.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("openssl: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
    #[error("not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("the signature does not match")]
    BadSignature,
    #[error("the ciphertext is shorter than its authentication tag")]
    ShortCiphertext,
    #[error("the APIv3 key must be 32 bytes, got {0}")]
    KeyLength(usize),
    #[error("decrypted text is not UTF-8")]
    NotUtf8,
}

/// Signs `message` with RSA-SHA256 and returns the signature in standard base64.
pub fn rsa_sha256_sign(key: &PKey<Private>, message: &[u8]) -> Result<String, CryptoError> {
    let mut signer = Signer::new(MessageDigest::sha256(), key)?;
    signer.update(message)?;
    Ok(B64.encode(signer.sign_to_vec()?))
}

/// Verifies a base64 RSA-SHA256 signature over `message`.
pub fn rsa_sha256_verify(
    key: &PKey<Public>,
    message: &[u8],
    signature_b64: &str,
) -> Result<(), CryptoError> {
    let signature = B64.decode(signature_b64.trim())?;
    let mut verifier = Verifier::new(MessageDigest::sha256(), key)?;
    verifier.update(message)?;
    if verifier.verify(&signature)? {
        Ok(())
    } else {
        Err(CryptoError::BadSignature)
    }
}

const GCM_TAG_BYTES: usize = 16;

/// An APIv3 key: 32 bytes of AES-256 key material, as the merchant sets it in the portal.
#[derive(Clone)]
pub struct ApiV3Key([u8; 32]);

impl ApiV3Key {
    /// The key as configured: exactly 32 bytes (WeChat Pay keys are 32 ASCII characters).
    pub fn new(bytes: &[u8]) -> Result<Self, CryptoError> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::KeyLength(bytes.len()))?;
        Ok(ApiV3Key(key))
    }

    /// Encrypts `plaintext` and returns base64(ciphertext || tag), the wire form.
    pub fn encrypt(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        let mut tag = [0_u8; GCM_TAG_BYTES];
        let mut out = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.0,
            Some(nonce),
            associated_data,
            plaintext,
            &mut tag,
        )?;
        out.extend_from_slice(&tag);
        Ok(B64.encode(out))
    }

    /// Decrypts the wire form base64(ciphertext || tag); fails if anything was altered.
    pub fn decrypt(
        &self,
        nonce: &[u8],
        associated_data: &[u8],
        ciphertext_b64: &str,
    ) -> Result<String, CryptoError> {
        let raw = B64.decode(ciphertext_b64)?;
        if raw.len() < GCM_TAG_BYTES {
            return Err(CryptoError::ShortCiphertext);
        }
        let (ciphertext, tag) = raw.split_at(raw.len() - GCM_TAG_BYTES);
        let plain = decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.0,
            Some(nonce),
            associated_data,
            ciphertext,
            tag,
        )?;
        String::from_utf8(plain).map_err(|_| CryptoError::NotUtf8)
    }
}

impl std::fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiV3Key(..)")
    }
}

/// A random alphanumeric string for nonces (`nonce_str`, the acquirer's nonce).
pub fn nonce(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = vec![0_u8; len];
    rand_bytes(&mut bytes).expect("the system RNG is available");
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// The public half of a private key, for handing to the other party.
pub fn public_of(key: &PKey<Private>) -> Result<PKey<Public>, CryptoError> {
    let pem = key.public_key_to_pem()?;
    Ok(PKey::public_key_from_pem(&pem)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    fn key() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    #[test]
    fn a_signature_verifies_with_the_public_key_and_fails_on_any_change() {
        let private = key();
        let public = public_of(&private).unwrap();
        let signature = rsa_sha256_sign(&private, b"GET\n/v3/x\n1\nN\n\n").unwrap();
        rsa_sha256_verify(&public, b"GET\n/v3/x\n1\nN\n\n", &signature).unwrap();
        assert!(matches!(
            rsa_sha256_verify(&public, b"GET\n/v3/y\n1\nN\n\n", &signature),
            Err(CryptoError::BadSignature)
        ));
        let other = public_of(&key()).unwrap();
        assert!(rsa_sha256_verify(&other, b"GET\n/v3/x\n1\nN\n\n", &signature).is_err());
    }

    #[test]
    fn an_encrypted_resource_decrypts_and_refuses_a_changed_associated_data() {
        let key = ApiV3Key::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let wire = key
            .encrypt(b"abcdefghijkl", b"transaction", b"{\"a\":1}")
            .unwrap();
        assert_eq!(
            key.decrypt(b"abcdefghijkl", b"transaction", &wire).unwrap(),
            "{\"a\":1}"
        );
        assert!(key.decrypt(b"abcdefghijkl", b"refund", &wire).is_err());
        assert!(
            key.decrypt(b"abcdefghijkl", b"transaction", "AAAA")
                .is_err()
        );
        assert!(ApiV3Key::new(b"short").is_err());
    }

    #[test]
    fn nonces_have_the_asked_length_and_differ() {
        let a = nonce(32);
        assert_eq!(a.len(), 32);
        assert_ne!(a, nonce(32));
    }
}
