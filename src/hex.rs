//! Lower-case hex encoding for ids and hashes.

/// Encodes bytes as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = Vec::with_capacity(bytes.len() * 2);
    encode_into(&mut s, bytes);
    String::from_utf8(s).expect("hex digits are ASCII")
}

/// Appends `bytes` as lower-case hex to `out` (no allocation of its own).
pub fn encode_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.extend_from_slice(&[DIGITS[(b >> 4) as usize], DIGITS[(b & 15) as usize]]);
    }
}

/// Decodes exactly `N` bytes of hex; `None` on any other input.
pub fn decode_n<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Decodes exactly 32 bytes of hex; `None` on any other input.
pub fn decode32(s: &str) -> Option<[u8; 32]> {
    decode_n(s)
}
