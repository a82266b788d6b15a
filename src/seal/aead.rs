//! The cipher backend: AES-256-GCM, `IV (12) || ciphertext || tag (16)`.
//!
//! This is the one place that names a cipher crate; swapping the backend
//! (for example to aws-lc-rs) is a change to this file alone. Every seal
//! draws a fresh 96-bit IV from the OS CSPRNG.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

/// IV length.
pub const IV_LEN: usize = 12;
/// Tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a seal adds to the plaintext.
pub const OVERHEAD: usize = IV_LEN + TAG_LEN;

/// Tag verification failed (or the input is too short to hold IV and tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

/// Seals `plaintext` under `key` and `aad`.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    seal_into(key, aad, plaintext, &mut out);
    out
}

/// Seals `plaintext` under `key` and `aad`, appending the sealed bytes
/// (`OVERHEAD` more than the plaintext) to `out`: a pack record is sealed
/// where it is written, with one copy of the plaintext.
pub fn seal_into(key: &[u8; 32], aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    let cipher = Aes256Gcm::new(key.into());
    let start = out.len();
    out.reserve(OVERHEAD + plaintext.len());
    out.resize(start + IV_LEN, 0);
    getrandom::fill(&mut out[start..]).expect("the OS random source failed");
    out.extend_from_slice(plaintext);
    let (iv, body) = out[start..].split_at_mut(IV_LEN);
    let nonce = Nonce::try_from(&*iv).expect("12-byte IV");
    let tag = cipher
        .encrypt_inout_detached(&nonce, aad, body.into())
        .expect("AES-GCM accepts messages below 64 GiB");
    out.extend_from_slice(&tag);
}

/// Opens sealed bytes; the plaintext is returned only if the tag verifies.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    let mut out = vec![0u8; plaintext_len(sealed.len()).ok_or(OpenError)?];
    open_into(key, aad, sealed, &mut out)?;
    Ok(out)
}

/// The plaintext length of `sealed` bytes, `None` when too short to hold
/// IV and tag.
pub fn plaintext_len(sealed: usize) -> Option<usize> {
    sealed.checked_sub(OVERHEAD)
}

/// Opens sealed bytes into `out`, which must be exactly
/// [`plaintext_len`] long: the cipher reads the ciphertext where it lies
/// and writes the plaintext to `out`, no copy in between. When the bytes
/// do not verify, `out` is zeroed: `aes-gcm` checks the tag before it
/// writes, and the wipe keeps that promise whatever a later version of the
/// crate does.
pub fn open_into(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
    out: &mut [u8],
) -> Result<(), OpenError> {
    if plaintext_len(sealed.len()) != Some(out.len()) {
        return Err(OpenError);
    }
    let cipher = Aes256Gcm::new(key.into());
    let (iv, rest) = sealed.split_at(IV_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = Nonce::try_from(iv).map_err(|_| OpenError)?;
    let tag = Tag::try_from(tag).map_err(|_| OpenError)?;
    let buf = aes_gcm::aead::inout::InOutBuf::new(body, out).map_err(|_| OpenError)?;
    cipher
        .decrypt_inout_detached(&nonce, aad, buf, &tag)
        .map_err(|_| {
            out.fill(0);
            OpenError
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let k = [3u8; 32];
        let s = seal(&k, b"ctx", b"hello world");
        assert_eq!(s.len(), 11 + OVERHEAD);
        assert_eq!(open(&k, b"ctx", &s).unwrap(), b"hello world");
        assert_eq!(open(&k, b"ctx2", &s), Err(OpenError));
        assert_eq!(open(&[4u8; 32], b"ctx", &s), Err(OpenError));
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 1;
            assert_eq!(open(&k, b"ctx", &t), Err(OpenError), "bit flip at {i}");
        }
        assert_eq!(open(&k, b"ctx", &s[..OVERHEAD - 1]), Err(OpenError));
        assert_eq!(open(&k, b"ctx", &s[..s.len() - 1]), Err(OpenError));
    }

    #[test]
    fn seal_into_appends_after_what_the_buffer_holds() {
        let k = [3u8; 32];
        let mut buf = b"header".to_vec();
        seal_into(&k, b"ctx", b"hello world", &mut buf);
        assert_eq!(&buf[..6], b"header");
        assert_eq!(buf.len(), 6 + 11 + OVERHEAD);
        assert_ne!(&buf[6 + IV_LEN..6 + IV_LEN + 11], b"hello world");
        assert_eq!(open(&k, b"ctx", &buf[6..]).unwrap(), b"hello world");
        // A fresh IV each time.
        let other = seal(&k, b"ctx", b"hello world");
        assert_ne!(&buf[6..6 + IV_LEN], &other[..IV_LEN]);
    }

    #[test]
    fn open_into_writes_only_a_verified_plaintext() {
        let k = [3u8; 32];
        let s = seal(&k, b"ctx", b"hello world");
        let mut out = [7u8; 11];
        assert_eq!(open_into(&k, b"ctx2", &s, &mut out), Err(OpenError));
        assert_eq!(out, [0u8; 11], "a failed open leaves zeros");
        let mut t = s.clone();
        t[IV_LEN] ^= 1;
        out = [7u8; 11];
        assert_eq!(open_into(&k, b"ctx", &t, &mut out), Err(OpenError));
        assert_eq!(out, [0u8; 11]);
        assert_eq!(open_into(&k, b"ctx", &s, &mut [0u8; 10]), Err(OpenError));
        assert_eq!(open_into(&k, b"ctx", &s, &mut [0u8; 12]), Err(OpenError));
        open_into(&k, b"ctx", &s, &mut out).unwrap();
        assert_eq!(&out, b"hello world");
    }

    #[test]
    fn fresh_iv_per_seal() {
        let k = [3u8; 32];
        let a = seal(&k, b"", b"same");
        let b = seal(&k, b"", b"same");
        assert_ne!(a[..IV_LEN], b[..IV_LEN]);
        assert_ne!(a, b);
    }
}
