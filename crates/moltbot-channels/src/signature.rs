//! Webhook signatures: HMAC-SHA256 over the raw request body (WhatsApp's
//! `X-Hub-Signature-256: sha256=<hex>`, Slack's `v0=<hex>` over `v0:<timestamp>:<body>`),
//! compared in constant time so a forger learns nothing from response timing.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `parts` (concatenated) under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Whether `presented_hex` (case-insensitive hex, no prefix) is the HMAC of `parts`.
pub fn verify_hex(key: &[u8], parts: &[&[u8]], presented_hex: &str) -> bool {
    let Ok(presented) = hex::decode(presented_hex.trim()) else {
        return false;
    };
    let expected = hmac_sha256(key, parts);
    presented.len() == expected.len() && bool::from(presented.ct_eq(&expected))
}

/// Constant-time equality of two secrets given as text (verify tokens, secret headers).
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_hex(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843"
        ));
        assert!(!verify_hex(
            b"Jefe",
            &[b"what do ya want for nothing!"],
            &hex::encode(mac)
        ));
        assert!(!verify_hex(b"Jefe", &[b"x"], "zz"));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
