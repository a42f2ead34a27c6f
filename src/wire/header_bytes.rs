//! Header values that arrive as bytes (AMQP long strings and byte arrays),
//! held as text in [`Headers`](crate::wire::headers::Headers) without two
//! different byte strings ever becoming the same text.
//!
//! Idempotency keys and session ids are compared as the text kept here, so
//! the mapping must be injective: a lossy decoding (every invalid sequence
//! becomes U+FFFD) made the keys `\xffA`, `\xfeA` and `\xc3A` one key, and
//! three of four different operations were acked as duplicates unrun. The
//! rule (also in `docs/wire-format.md`):
//!
//! | the bytes | the text |
//! |---|---|
//! | valid UTF-8 not starting with `\u{FFFD}b:` or `\u{FFFD}s:` | the same text (every ordinary value) |
//! | valid UTF-8 starting with one of them | `\u{FFFD}s:` + the text |
//! | not valid UTF-8 | `\u{FFFD}b:` + the bytes in lower-case hex |
//!
//! The three kinds of text are told apart by their start, and each is a
//! one-to-one function of the bytes, so different bytes never give the same
//! text. [`to_bytes`] undoes it, so a value goes back out (a dead letter, a
//! replay, a handler forwarding a key) as the bytes that came in.

use std::borrow::Cow;

/// Starts the text of a value that is not valid UTF-8; hex follows.
const BYTES: &str = "\u{FFFD}b:";
/// Starts the text of a valid UTF-8 value that itself starts with an escape.
const ESCAPED: &str = "\u{FFFD}s:";

/// The text of a header value received as `bytes`.
///
/// Valid UTF-8 is kept as it is, unless it starts with `\u{FFFD}b:` or
/// `\u{FFFD}s:` (then `\u{FFFD}s:` is put before it); other bytes become
/// `\u{FFFD}b:` and their lower-case hex (`b"\xffA"` is `"\u{FFFD}b:ff41"`).
/// Different bytes never give the same text, so idempotency keys and
/// session ids compare as the bytes that were sent.
pub fn from_bytes(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.starts_with(BYTES) || text.starts_with(ESCAPED) => {
            Cow::Owned(format!("{ESCAPED}{text}"))
        }
        Ok(text) => Cow::Borrowed(text),
        Err(_) => {
            let mut text = String::with_capacity(BYTES.len() + 2 * bytes.len());
            text.push_str(BYTES);
            for byte in bytes {
                text.push(hex_digit(byte >> 4));
                text.push(hex_digit(byte & 0xf));
            }
            Cow::Owned(text)
        }
    }
}

/// The bytes a header value's text stands for: the inverse of
/// [`from_bytes`]. Text that [`from_bytes`] never gives (a `\u{FFFD}b:`
/// without valid hex of invalid UTF-8 after it, for instance) stands for
/// its own UTF-8.
pub fn to_bytes(text: &str) -> Cow<'_, [u8]> {
    if let Some(rest) = text.strip_prefix(ESCAPED)
        && (rest.starts_with(BYTES) || rest.starts_with(ESCAPED))
    {
        return Cow::Borrowed(rest.as_bytes());
    }
    if let Some(bytes) = text.strip_prefix(BYTES).and_then(hex_of_invalid_utf8) {
        return Cow::Owned(bytes);
    }
    Cow::Borrowed(text.as_bytes())
}

/// How many bytes a header value's text stands for (what the 256-byte limit
/// of keys counts).
pub(crate) fn byte_len(text: &str) -> usize {
    if !text.starts_with('\u{FFFD}') {
        return text.len();
    }
    to_bytes(text).len()
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).expect("a nibble is below 16")
}

/// The bytes of lower-case `hex`, when they are not valid UTF-8 (only then
/// did [`from_bytes`] write hex).
fn hex_of_invalid_utf8(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let value = |digit: u8| match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    };
    let bytes = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?))
        .collect::<Option<Vec<u8>>>()?;
    std::str::from_utf8(&bytes).is_err().then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Byte strings chosen to collide under a lossy or naive mapping.
    fn tricky() -> Vec<Vec<u8>> {
        let mut values: Vec<Vec<u8>> = vec![
            b"\xffA".to_vec(),
            b"\xfeA".to_vec(),
            b"\xc3A".to_vec(),
            "\u{FFFD}A".as_bytes().to_vec(),
            b"A".to_vec(),
            Vec::new(),
            b"\xff".to_vec(),
            b"\xff\xff".to_vec(),
            b"\xc3".to_vec(),
            "é".as_bytes().to_vec(),
            b"order-1042".to_vec(),
            b"ff41".to_vec(),
        ];
        // The escapes themselves, alone and followed by what the other
        // kinds would write.
        for prefix in [BYTES, ESCAPED] {
            for tail in ["", "ff41", "41", "zz", "FF41", "f", BYTES, ESCAPED, "\u{FFFD}A"] {
                values.push(format!("{prefix}{tail}").into_bytes());
                values.push(format!("{ESCAPED}{prefix}{tail}").into_bytes());
            }
        }
        values.push(b"\xef\xbf\xbdb:\xff".to_vec()); // the escape, then invalid UTF-8
        values.push("\u{FFFD}".as_bytes().to_vec());
        values.push("\u{FFFD}b".as_bytes().to_vec());
        values.push("\u{FFFD}x:41".as_bytes().to_vec());
        values
    }

    #[test]
    fn different_bytes_never_give_the_same_text() {
        let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
        for bytes in tricky() {
            let text = from_bytes(&bytes).into_owned();
            if let Some(earlier) = seen.insert(text.clone(), bytes.clone()) {
                assert_eq!(earlier, bytes, "{earlier:?} and {bytes:?} both give {text:?}");
            }
        }
    }

    #[test]
    fn to_bytes_undoes_from_bytes() {
        for bytes in tricky() {
            let text = from_bytes(&bytes);
            assert_eq!(to_bytes(&text), bytes.as_slice(), "{text:?}");
            assert_eq!(byte_len(&text), bytes.len(), "{text:?}");
        }
    }

    #[test]
    fn every_byte_pair_round_trips() {
        // All 65,536 two-byte values (and so every invalid start byte,
        // continuation and truncated sequence), one-to-one.
        let mut seen = std::collections::HashSet::new();
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let text = from_bytes(&[a, b]).into_owned();
                assert_eq!(to_bytes(&text), &[a, b][..]);
                assert!(seen.insert(text), "{a:02x}{b:02x} collides");
            }
        }
    }

    #[test]
    fn ordinary_values_are_unchanged() {
        for text in [
            "order-1042",
            "",
            "é",
            "\u{FFFD}A",
            "\u{FFFD}",
            "k\u{FFFD}b:ff",
            "\u{FFFD}b",
        ] {
            assert!(matches!(from_bytes(text.as_bytes()), Cow::Borrowed(t) if t == text));
            assert_eq!(to_bytes(text), text.as_bytes());
        }
    }

    #[test]
    fn the_forms_are_as_documented() {
        assert_eq!(from_bytes(b"\xffA"), "\u{FFFD}b:ff41");
        assert_eq!(from_bytes(b"\xc3A"), "\u{FFFD}b:c341");
        assert_eq!(
            from_bytes("\u{FFFD}b:ff41".as_bytes()),
            "\u{FFFD}s:\u{FFFD}b:ff41"
        );
        assert_eq!(from_bytes("\u{FFFD}s:x".as_bytes()), "\u{FFFD}s:\u{FFFD}s:x");
    }

    #[test]
    fn text_no_bytes_give_stands_for_itself() {
        // Hex of valid UTF-8, upper-case or odd hex, an escape of nothing
        // that needed escaping: written by hand, sent as written.
        for text in [
            "\u{FFFD}b:41",
            "\u{FFFD}b:FF41",
            "\u{FFFD}b:fff",
            "\u{FFFD}b:zz",
            "\u{FFFD}b:",
            "\u{FFFD}s:plain",
            "\u{FFFD}s:",
        ] {
            assert_eq!(to_bytes(text), text.as_bytes(), "{text:?}");
        }
    }
}
