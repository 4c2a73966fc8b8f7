//! Login tokens exactly as PROTOCOL.md rule 2.
//!
//! A token is 40 bytes: `expires_at` (u64 big-endian, Unix seconds) then
//! HMAC-SHA256(secret, `uin` u64 BE ‖ `device_id` u32 BE ‖ `expires_at` u64
//! BE). The MAC comes from RustCrypto's `hmac` and is compared in constant
//! time (`Mac::verify_slice`). Time is passed in: nothing here reads a clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a token in bytes.
pub const TOKEN_LEN: usize = 40;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. All are the client's fault and all answer
/// ERROR(`UNAUTHENTICATED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token is {0} bytes, expected {TOKEN_LEN}")]
    Length(usize),
    #[error("token MAC does not match uin, device and expiry")]
    BadMac,
    #[error("token expired at {expires_at}, now is {now}")]
    Expired { expires_at: u64, now: u64 },
}

/// A keyed minter and verifier. Cheap to clone: the HMAC key schedule is
/// computed once here, not per token.
#[derive(Clone)]
pub struct TokenKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from the shared secret. HMAC accepts keys of any length.
    pub fn new(secret: &[u8]) -> TokenKey {
        TokenKey {
            mac: <HmacSha256 as Mac>::new_from_slice(secret)
                .expect("HMAC takes keys of any length"),
        }
    }

    fn mac_for(&self, uin: u64, device_id: u32, expires_at: u64) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&uin.to_be_bytes());
        mac.update(&device_id.to_be_bytes());
        mac.update(&expires_at.to_be_bytes());
        mac
    }

    /// Mints the token for (`uin`, `device_id`) valid until `expires_at`
    /// (Unix seconds, inclusive).
    pub fn mint(&self, uin: u64, device_id: u32, expires_at: u64) -> [u8; TOKEN_LEN] {
        let tag = self
            .mac_for(uin, device_id, expires_at)
            .finalize()
            .into_bytes();
        let mut token = [0u8; TOKEN_LEN];
        token[..8].copy_from_slice(&expires_at.to_be_bytes());
        token[8..].copy_from_slice(&tag);
        token
    }

    /// Verifies `token` for (`uin`, `device_id`) at `now` (Unix seconds).
    /// The MAC is checked first, in constant time, so that an expiry is
    /// only reported for a token this key minted. A token is valid through
    /// the second it names: it is expired once `now > expires_at`.
    pub fn verify(
        &self,
        token: &[u8],
        uin: u64,
        device_id: u32,
        now: u64,
    ) -> Result<(), TokenError> {
        let Some((head, tag)) = token.split_first_chunk::<8>() else {
            return Err(TokenError::Length(token.len()));
        };
        if token.len() != TOKEN_LEN {
            return Err(TokenError::Length(token.len()));
        }
        let expires_at = u64::from_be_bytes(*head);
        self.mac_for(uin, device_id, expires_at)
            .verify_slice(tag)
            .map_err(|_| TokenError::BadMac)?;
        if now > expires_at {
            return Err(TokenError::Expired { expires_at, now });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key() -> TokenKey {
        TokenKey::new(b"test secret")
    }

    #[test]
    fn valid_token_is_accepted_through_its_last_second() {
        let t = key().mint(42, 7, NOW + 60);
        assert_eq!(key().verify(&t, 42, 7, NOW), Ok(()));
        assert_eq!(key().verify(&t, 42, 7, NOW + 60), Ok(()));
    }

    #[test]
    fn expired_token_is_rejected() {
        let t = key().mint(42, 7, NOW - 1);
        assert_eq!(
            key().verify(&t, 42, 7, NOW),
            Err(TokenError::Expired {
                expires_at: NOW - 1,
                now: NOW
            })
        );
    }

    #[test]
    fn wrong_uin_or_device_is_rejected() {
        let t = key().mint(42, 7, NOW + 60);
        assert_eq!(key().verify(&t, 43, 7, NOW), Err(TokenError::BadMac));
        assert_eq!(key().verify(&t, 42, 8, NOW), Err(TokenError::BadMac));
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let t = key().mint(42, 7, NOW + 60);
        for byte in 0..TOKEN_LEN {
            for bit in 0..8 {
                let mut bad = t;
                bad[byte] ^= 1 << bit;
                assert_eq!(
                    key().verify(&bad, 42, 7, NOW),
                    Err(TokenError::BadMac),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn wrong_length_is_rejected() {
        let t = key().mint(42, 7, NOW + 60);
        for len in [0, 7, 8, 39, 41] {
            let mut v = t.to_vec();
            v.resize(len, 0);
            assert_eq!(key().verify(&v, 42, 7, NOW), Err(TokenError::Length(len)));
        }
    }

    #[test]
    fn other_secret_is_rejected() {
        let t = TokenKey::new(b"other").mint(42, 7, NOW + 60);
        assert_eq!(key().verify(&t, 42, 7, NOW), Err(TokenError::BadMac));
    }

    #[test]
    fn matches_rfc_layout() {
        // expires_at in the first 8 bytes, big-endian, then the 32-byte MAC
        // over uin ‖ device ‖ expires_at computed independently here.
        let t = key().mint(0x0102030405060708, 0x0a0b0c0d, 0x1122334455667788);
        assert_eq!(&t[..8], &0x1122334455667788u64.to_be_bytes());
        let mut mac = <HmacSha256 as Mac>::new_from_slice(b"test secret").unwrap();
        mac.update(&hex::decode("01020304050607080a0b0c0d1122334455667788").unwrap());
        assert_eq!(&t[8..], mac.finalize().into_bytes().as_slice());
    }
}
