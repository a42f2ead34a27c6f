//! KV keys: `k.`, `s.` or `st.` and the encoded key (see the layout in
//! [`NatsKvStore`](super::NatsKvStore)'s documentation).

use super::MAX_KV_KEY_LEN;
use crate::error::{BrokerError, BrokerErrorKind};

/// The KV key for `key` under `kind` (`k.`, `s.` or `st.`).
pub(super) fn kv_key(kind: &str, key: &str) -> Result<String, BrokerError> {
    let mut out = String::with_capacity(kind.len() + key.len());
    out.push_str(kind);
    encode_key_into(key, &mut out);
    if out.len() > MAX_KV_KEY_LEN {
        return Err(BrokerError::new(
            BrokerErrorKind::Store,
            format!(
                "the key {} is too long for the NATS KV store: {} bytes encoded, at most {MAX_KV_KEY_LEN}",
                shorten(key),
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Appends `key` encoded for a KV key: `[A-Za-z0-9_/-]` kept, every other
/// byte `=XX`; the empty key is `=` (an escape always has two digits, so a
/// lone `=` stands for nothing else).
fn encode_key_into(key: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if key.is_empty() {
        out.push('=');
        return;
    }
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('=');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

/// The key [`encode_key_into`] wrote; `None` for what it cannot have written.
pub(super) fn decode_key(encoded: &str) -> Option<String> {
    if encoded == "=" {
        return Some(String::new());
    }
    let mut bytes = Vec::new();
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// `key`, cut for an error message.
pub(super) fn shorten(key: &str) -> String {
    const MAX: usize = 120;
    match key.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &key[..at]),
        None => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn encoded(key: &str) -> String {
        let mut out = String::new();
        encode_key_into(key, &mut out);
        out
    }

    /// What the KV client accepts: `[-/_=.a-zA-Z0-9]`, no `.` at either end.
    fn valid_kv_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && !key.contains("..")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn keys_are_encoded_injectively_into_the_kv_charset() {
        let tricky = [
            "", "=", "==", "=3D", "=2E", ".", "..", "a.b", "a_b", "a b", "a=2Eb", "a*b>c", "ä=b", "ä",
            "=C3=A4", ".lead", "trail.", "a..b", "q/h", "q//h", "/", "-", "_", "\u{0}", "\u{7f}", "日本",
            "A", "a", "%41", "\t", "=41",
        ];
        let mut seen = HashSet::new();
        for key in tricky {
            let enc = encoded(key);
            assert!(!enc.contains('.'), "{key:?} → {enc}");
            for kind in ["k.", "s.", "st."] {
                let full = format!("{kind}{enc}");
                assert!(valid_kv_key(&full), "{key:?} → {full}");
            }
            assert_eq!(decode_key(&enc).as_deref(), Some(key), "{key:?} → {enc}");
            assert!(seen.insert(enc.clone()), "{key:?} → {enc} collides");
        }
        assert_eq!(encoded("orders/ab-C_9"), "orders/ab-C_9");
        assert_eq!(encoded("a.b"), "a=2Eb");
        assert_eq!(encoded("a=b"), "a=3Db");
        assert_eq!(encoded("ä"), "=C3=A4");
        assert_eq!(encoded(""), "=");
        // Session records and checkpoints never share a key.
        assert_ne!(kv_key("s.", "t.x").unwrap(), kv_key("st.", "x").unwrap());
    }

    #[test]
    fn overlong_keys_are_refused() {
        let fits = "x".repeat(MAX_KV_KEY_LEN - 3);
        assert_eq!(kv_key("st.", &fits).unwrap().len(), MAX_KV_KEY_LEN);
        let error = kv_key("st.", &format!("{fits}.")).unwrap_err();
        assert_eq!(error.kind(), BrokerErrorKind::Store);
        assert!(error.to_string().contains("too long"), "{error}");
    }
}
