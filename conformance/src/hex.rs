//! Hex strings as the vector files write them: lowercase, bytes separated by spaces
//! (`"12 00 00 01"`). In session vectors a token `$name` stands for the two bytes of a
//! request id captured earlier (big-endian).

use std::collections::HashMap;

/// Captured request ids, by name (`"$r1"` → 0x8000).
pub type Captures = HashMap<String, u16>;

/// Parses a hex string; `$name` tokens are replaced by captured ids.
pub fn parse(s: &str, captures: &Captures) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 3 + 1);
    for tok in s.split_whitespace() {
        if tok.starts_with('$') {
            let id = captures
                .get(tok)
                .ok_or_else(|| format!("hex: {tok} was not captured before use"))?;
            out.extend_from_slice(&id.to_be_bytes());
            continue;
        }
        if tok.len() % 2 != 0 {
            return Err(format!("hex: odd-length token {tok:?}"));
        }
        for i in (0..tok.len()).step_by(2) {
            let pair = tok.get(i..i + 2).ok_or("hex: bad token")?;
            let b = u8::from_str_radix(pair, 16).map_err(|_| format!("hex: bad byte {pair:?}"))?;
            out.push(b);
        }
    }
    Ok(out)
}

/// Parses a hex string without placeholders.
pub fn parse_plain(s: &str) -> Result<Vec<u8>, String> {
    parse(s, &Captures::new())
}

/// Formats bytes the way the vectors do.
pub fn format(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&std::format!("{x:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_placeholders() {
        let mut c = Captures::new();
        c.insert("$r1".into(), 0x8001);
        assert_eq!(parse("1b 00 $r1", &c).unwrap(), vec![0x1b, 0, 0x80, 0x01]);
        assert_eq!(format(&[0x12, 0, 0xff]), "12 00 ff");
        assert_eq!(parse_plain("").unwrap(), Vec::<u8>::new());
        assert!(parse("1", &c).is_err());
        assert!(parse("$nope", &c).is_err());
    }
}
