//! Signing what the platform sends to the bank, and verifying what the bank sends back.
//!
//! RSA-SHA256 (PKCS#1 v1.5) detached signatures over the exact message bytes, with the
//! system's OpenSSL. Keys come from configured PEM paths; the embedded mode generates demo
//! keys at first start with [`generate_demo_keys`] (never committed to the repository).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::x509::X509;

/// Smallest RSA key accepted, in bits.
pub const MIN_KEY_BITS: u32 = 2048;

/// Why signing or verification failed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a usable PEM key or certificate: {0}")]
    Key(String),
    #[error("RSA keys must have at least {MIN_KEY_BITS} bits, this one has {0}")]
    WeakKey(u32),
    #[error("the signature is not valid base64")]
    Encoding,
    #[error("the signature does not match the message")]
    BadSignature,
    #[error("openssl: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

/// A detached signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature(Vec<u8>);

impl Signature {
    /// The form carried in an HTTP header.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.0)
    }

    pub fn from_base64(text: &str) -> Result<Signature, SigningError> {
        STANDARD
            .decode(text.trim())
            .map(Signature)
            .map_err(|_| SigningError::Encoding)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SigningError> {
    std::fs::read(path).map_err(|source| SigningError::Io {
        path: path.to_owned(),
        source,
    })
}

fn check_bits(bits: u32) -> Result<(), SigningError> {
    if bits < MIN_KEY_BITS {
        return Err(SigningError::WeakKey(bits));
    }
    Ok(())
}

/// Holds a private key and signs with it.
#[derive(Clone)]
pub struct Signer {
    key: PKey<Private>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<private key>)")
    }
}

impl Signer {
    pub fn from_pem(pem: &[u8]) -> Result<Signer, SigningError> {
        let key = PKey::private_key_from_pem(pem).map_err(|e| SigningError::Key(e.to_string()))?;
        check_bits(key.bits())?;
        Ok(Signer { key })
    }

    pub fn from_pem_file(path: &Path) -> Result<Signer, SigningError> {
        Signer::from_pem(&read(path)?)
    }

    pub fn sign(&self, message: &[u8]) -> Result<Signature, SigningError> {
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key)?;
        signer.update(message)?;
        Ok(Signature(signer.sign_to_vec()?))
    }

    /// The matching verifier, for the party that receives what this signer signs.
    pub fn verifier(&self) -> Result<Verifier, SigningError> {
        Verifier::from_pem(&self.public_key_pem()?)
    }

    /// The public half as a PEM public key, to hand to the receiving party.
    pub fn public_key_pem(&self) -> Result<Vec<u8>, SigningError> {
        Ok(self.key.public_key_to_pem()?)
    }
}

/// Holds a public key (from a PEM public key or certificate) and verifies with it.
#[derive(Clone)]
pub struct Verifier {
    key: PKey<Public>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(<public key>)")
    }
}

impl Verifier {
    pub fn from_pem(pem: &[u8]) -> Result<Verifier, SigningError> {
        let key = if pem.windows(11).any(|w| w == b"CERTIFICATE") {
            X509::from_pem(pem)
                .and_then(|cert| cert.public_key())
                .map_err(|e| SigningError::Key(e.to_string()))?
        } else {
            PKey::public_key_from_pem(pem).map_err(|e| SigningError::Key(e.to_string()))?
        };
        check_bits(key.bits())?;
        Ok(Verifier { key })
    }

    pub fn from_pem_file(path: &Path) -> Result<Verifier, SigningError> {
        Verifier::from_pem(&read(path)?)
    }

    /// `Ok` only when the signature was made over exactly these bytes with the matching key.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SigningError> {
        let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &self.key)?;
        verifier.update(message)?;
        // OpenSSL reports a malformed signature as an error and a wrong one as `false`:
        // both mean the message is refused.
        match verifier.verify(&signature.0) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(SigningError::BadSignature),
        }
    }
}

/// Paths of a key pair on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPaths {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
}

/// Creates `name.key.pem` and `name.pub.pem` in `dir` unless both exist already, and returns
/// their paths. An existing pair is kept, so restarts keep their identity.
pub fn generate_demo_keys(dir: &Path, name: &str) -> Result<KeyPaths, SigningError> {
    let paths = KeyPaths {
        private_key: dir.join(format!("{name}.key.pem")),
        public_key: dir.join(format!("{name}.pub.pem")),
    };
    if paths.private_key.exists() && paths.public_key.exists() {
        return Ok(paths);
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SigningError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = PKey::from_rsa(Rsa::generate(MIN_KEY_BITS)?)?;
    write_private(&paths.private_key, &key.private_key_to_pem_pkcs8()?)
        .map_err(io(&paths.private_key))?;
    std::fs::write(&paths.public_key, key.public_key_to_pem()?).map_err(io(&paths.public_key))?;
    Ok(paths)
}

#[cfg(unix)]
fn write_private(path: &Path, pem: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(pem)
}

#[cfg(not(unix))]
fn write_private(path: &Path, pem: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "forecourt-keys-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_signed_message_verifies_and_a_tampered_one_does_not() {
        let dir = temp_dir("tamper");
        let paths = generate_demo_keys(&dir, "platform").unwrap();
        let signer = Signer::from_pem_file(&paths.private_key).unwrap();
        let verifier = Verifier::from_pem_file(&paths.public_key).unwrap();
        let message = "<Document><InstdAmt Ccy=\"CNY\">30000000.00</InstdAmt></Document>";
        let signature = signer.sign(message.as_bytes()).unwrap();
        verifier.verify(message.as_bytes(), &signature).unwrap();

        let tampered = message.replace("30000000.00", "80000000.00");
        assert!(matches!(
            verifier.verify(tampered.as_bytes(), &signature),
            Err(SigningError::BadSignature)
        ));
        // The signature survives its header encoding, and a garbled one is refused.
        let carried = Signature::from_base64(&signature.to_base64()).unwrap();
        verifier.verify(message.as_bytes(), &carried).unwrap();
        assert!(matches!(
            Signature::from_base64("not base64!"),
            Err(SigningError::Encoding)
        ));
        assert!(matches!(
            verifier.verify(message.as_bytes(), &Signature(vec![1, 2, 3])),
            Err(SigningError::BadSignature)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        let dir = temp_dir("other");
        let ours = generate_demo_keys(&dir, "platform").unwrap();
        let theirs = generate_demo_keys(&dir, "impostor").unwrap();
        let impostor = Signer::from_pem_file(&theirs.private_key).unwrap();
        let verifier = Verifier::from_pem_file(&ours.public_key).unwrap();
        let signature = impostor.sign(b"pay me").unwrap();
        assert!(matches!(
            verifier.verify(b"pay me", &signature),
            Err(SigningError::BadSignature)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn demo_keys_are_generated_once_and_kept_across_restarts() {
        let dir = temp_dir("restart");
        let first = generate_demo_keys(&dir, "bank").unwrap();
        let pem = std::fs::read(&first.private_key).unwrap();
        let second = generate_demo_keys(&dir, "bank").unwrap();
        assert_eq!(first, second);
        assert_eq!(std::fs::read(&second.private_key).unwrap(), pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.private_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "the private key is readable by its owner only"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn weak_keys_and_garbage_are_refused() {
        let weak = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        let pem = weak.private_key_to_pem_pkcs8().unwrap();
        assert!(matches!(
            Signer::from_pem(&pem),
            Err(SigningError::WeakKey(1024))
        ));
        assert!(matches!(
            Signer::from_pem(b"garbage"),
            Err(SigningError::Key(_))
        ));
        assert!(matches!(
            Verifier::from_pem_file(Path::new("/nonexistent/bank.pub.pem")),
            Err(SigningError::Io { .. })
        ));
    }
}
