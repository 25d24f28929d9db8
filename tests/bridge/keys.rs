//! Key material made at test time: RS256 and ES256 key pairs for tokens,
//! and a self-signed certificate for TLS. Nothing is read from disk.

use std::sync::OnceLock;

use rsa::Generate;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

/// A private key to sign with and the public key the bridge verifies with,
/// both PEM.
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

/// One RSA pair per test run: generating one is slow in a debug build.
pub fn rsa() -> &'static KeyPair {
    static PAIR: OnceLock<KeyPair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let private = rsa::PrivateKey::generate();
        KeyPair {
            private_pem: private
                .to_pkcs8_pem(LineEnding::LF)
                .expect("encodes")
                .to_string(),
            public_pem: private
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("encodes"),
        }
    })
}

/// A fresh P-256 pair.
pub fn ec() -> KeyPair {
    let pair = rcgen::KeyPair::generate().expect("P-256 key generates");
    KeyPair {
        private_pem: pair.serialize_pem(),
        public_pem: pair.public_key_pem(),
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1 with its key.
pub struct Certificate {
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn certificate() -> Certificate {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).expect("certificate generates");
    Certificate {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    }
}
