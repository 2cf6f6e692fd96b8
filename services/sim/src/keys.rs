//! Fresh RSA keys for tests and demos (2048 bits, as the parties require).

use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;

/// A new 2048-bit RSA key pair.
pub fn rsa_pair() -> (PKey<Private>, PKey<Public>) {
    let private = PKey::from_rsa(Rsa::generate(2048).expect("RSA generation")).expect("pkey");
    let pem = private.public_key_to_pem().expect("public pem");
    let public = PKey::public_key_from_pem(&pem).expect("public key");
    (private, public)
}
