//! Text that comes with a message (ids, session ids, reply addresses, error
//! texts quoting a payload) as a log or span field, cut so that no message
//! can make a log line long.
//!
//! A publisher chooses these values and nothing bounds a message id or a
//! correlation id: logged whole, a 20 kB id made every line of its message
//! 20 kB long. Logs get at most [`MAX_LOGGED_ID_BYTES`] of an id; the full
//! value stays everywhere else (headers, replies, dead letters, the store).
//!
//! Short text, the usual case, is recorded as the `&str` it is: no
//! allocation on the per-message path and the same output as before. Longer
//! text is recorded as its first bytes, cut at a character boundary with
//! control characters and quotes escaped (a line break in an id cannot
//! start a forged log line), followed by how much was left out:
//! `abc…(+20713 bytes)`.

use std::fmt;
use tracing::field::{DisplayValue, Value};

/// The most bytes of an id, key, session id or address a log line shows.
pub(crate) const MAX_LOGGED_ID_BYTES: usize = 128;

/// The most bytes of an error text a log line shows (a decode error may
/// quote the payload it could not decode).
pub(crate) const MAX_LOGGED_ERROR_BYTES: usize = 1024;

/// `text` as a field value: itself up to `max` bytes, else cut (see the
/// module docs).
pub(crate) enum Logged<'a> {
    Whole(&'a str),
    Cut(DisplayValue<Shortened<'a>>),
}

impl<'a> Logged<'a> {
    /// An id, key, session id or address as a field value.
    pub(crate) fn id(text: &'a str) -> Self {
        if text.len() <= MAX_LOGGED_ID_BYTES {
            Logged::Whole(text)
        } else {
            Logged::Cut(tracing::field::display(Shortened::new(text, MAX_LOGGED_ID_BYTES)))
        }
    }

    /// What a span or event records: `message_id = logged.value()`.
    pub(crate) fn value(&self) -> &dyn Value {
        match self {
            Logged::Whole(text) => text,
            Logged::Cut(cut) => cut,
        }
    }
}

/// Displays text whole when it has at most `max` bytes (as it is, so that
/// the output of ordinary text does not change), else its first bytes,
/// escaped, and how many were left out.
#[derive(Clone, Copy)]
pub(crate) struct Shortened<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Shortened<'a> {
    pub(crate) fn new(text: &'a str, max: usize) -> Self {
        Shortened { text, max }
    }

    /// An error text as an event field: `error = %Shortened::error(&text)`.
    pub(crate) fn error(text: &'a str) -> Self {
        Shortened::new(text, MAX_LOGGED_ERROR_BYTES)
    }
}

impl fmt::Display for Shortened<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.len() <= self.max {
            return f.write_str(self.text);
        }
        let mut end = self.max;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let (shown, left_out) = self.text.split_at(end);
        for c in shown.chars() {
            write!(f, "{}", c.escape_debug())?;
        }
        write!(f, "…(+{} bytes)", left_out.len())
    }
}

impl fmt::Debug for Shortened<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole_and_unchanged() {
        let id = "order-1042 \"quoted\"";
        assert!(matches!(Logged::id(id), Logged::Whole(text) if text == id));
        let exactly = "x".repeat(MAX_LOGGED_ID_BYTES);
        assert!(matches!(Logged::id(&exactly), Logged::Whole(_)));
        assert_eq!(Shortened::error("decode failed").to_string(), "decode failed");
    }

    #[test]
    fn long_text_is_cut_with_the_bytes_left_out() {
        let id = "a".repeat(20_841);
        let shown = Shortened::new(&id, MAX_LOGGED_ID_BYTES).to_string();
        assert_eq!(shown, format!("{}…(+20713 bytes)", "a".repeat(128)));
        assert!(matches!(Logged::id(&id), Logged::Cut(_)));
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // 'é' is two bytes: byte 128 is in the middle of the 64th.
        let id = format!("x{}", "é".repeat(100));
        let shown = Shortened::new(&id, MAX_LOGGED_ID_BYTES).to_string();
        assert_eq!(shown, format!("x{}…(+74 bytes)", "é".repeat(63)));
        // Nothing fits before the first character.
        assert_eq!(Shortened::new("éé", 1).to_string(), "…(+4 bytes)");
    }

    #[test]
    fn a_cut_escapes_line_breaks_and_quotes() {
        let id = format!("a\nforged=\"line\"{}", "z".repeat(200));
        let shown = Shortened::new(&id, 16).to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.starts_with(r#"a\nforged=\"line\""#), "{shown}");
    }
}
