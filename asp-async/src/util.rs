//! Small helpers several layers use; like `config`, this module imports nothing from the
//! crate.

/// Compares two secrets (a bearer token, a resume token) in time that depends only on
/// their lengths, so a peer cannot find a secret byte by byte from response times
/// (SPEC §13.1).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
