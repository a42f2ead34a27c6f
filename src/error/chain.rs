//! An error and its causes as one line: `publish failed: connection reset`.
//!
//! wharf's errors show only their own message and return their cause from
//! `source()` (the Rust API guidelines' rule, so that reporters such as
//! anyhow's `{:#}` show each cause once). Printed with `{}`, such an error
//! drops its cause, and a log line that only says "publish failed" does
//! not say why. [`Chain`] prints the whole chain, and every log field of
//! an error goes through it (`error = %Chain(&error)`; a test below
//! finds the log lines that do not).

use std::error::Error as StdError;
use std::fmt;

/// Displays an error followed by its `source()` chain, joined by `": "`:
/// what to log for a [`BrokerError`](crate::BrokerError) or a
/// [`RequestError`](crate::RequestError), whose own `Display` shows only
/// their own message (their cause is in `source()`).
///
/// ```
/// use wharf::{BrokerError, BrokerErrorKind, ErrorChain};
/// let error = BrokerError::new(BrokerErrorKind::Publish, "publish failed")
///     .with_source(std::io::Error::other("connection reset"));
/// assert_eq!(error.to_string(), "publish failed");
/// assert_eq!(ErrorChain(&error).to_string(), "publish failed: connection reset");
/// ```
///
/// Many errors of other crates (async-nats's, lapin's) print their cause
/// in their own message *and* return it from `source()`: a cause whose
/// text ends the text before it is not printed again.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn StdError + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(mut cause) = self.0.source() else {
            // The usual case in logs: no text made, nothing allocated.
            return fmt::Display::fmt(self.0, f);
        };
        let mut before = self.0.to_string();
        f.write_str(&before)?;
        loop {
            let text = cause.to_string();
            if !before.ends_with(text.as_str()) {
                write!(f, ": {text}")?;
            }
            before = text;
            match cause.source() {
                Some(next) => cause = next,
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BrokerError, BrokerErrorKind};
    use std::path::Path;

    /// An error that prints its cause itself and returns it from `source()`
    /// too, as async-nats's errors do.
    #[derive(Debug)]
    struct Both(std::io::Error);

    impl fmt::Display for Both {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "request failed: {}", self.0)
        }
    }

    impl StdError for Both {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_shown_once() {
        let alone = std::io::Error::other("disk full");
        assert_eq!(Chain(&alone).to_string(), "disk full");
        let nested = BrokerError::new(BrokerErrorKind::Publish, "publish failed")
            .with_source(BrokerError::new(BrokerErrorKind::Connection, "link lost").with_source(alone));
        assert_eq!(Chain(&nested).to_string(), "publish failed: link lost: disk full");
        let both = BrokerError::new(BrokerErrorKind::Publish, "publish failed")
            .with_source(Both(std::io::Error::other("reset")));
        assert_eq!(Chain(&both).to_string(), "publish failed: request failed: reset");
    }

    /// The error fields of the `tracing` macro calls in `code` that print
    /// an error with `%` without going through [`Chain`]: `%error`, `%e`,
    /// `error = %e`. (`?error`, `Debug`, shows the causes; text already
    /// made of a whole chain, such as a failure's message, comes through
    /// `Shortened`.)
    fn unchained_error_fields(code: &str) -> Vec<String> {
        const MACROS: [&str; 5] = ["trace!(", "debug!(", "info!(", "warn!(", "error!("];
        const NAMES: [&str; 5] = ["error", "err", "e", "cause", "source"];
        let is_ident = |c: char| c.is_alphanumeric() || c == '_';
        let mut found = Vec::new();
        for name in MACROS {
            for (at, _) in code.match_indices(name) {
                if code[..at].chars().next_back().is_some_and(is_ident) {
                    continue;
                }
                let arguments = macro_arguments(&code[at + name.len()..]);
                for field in arguments {
                    let field = field.trim();
                    let bare = field
                        .strip_prefix('%')
                        .is_some_and(|rest| NAMES.contains(&rest.trim()));
                    let named = field.split_once('=').is_some_and(|(key, value)| {
                        NAMES.contains(&key.trim())
                            && value.trim().strip_prefix('%').is_some_and(|value| {
                                let value = value.trim_start();
                                !(value.starts_with("Chain(")
                                    || value.starts_with("crate::error::Chain(")
                                    || value.starts_with("Shortened::"))
                            })
                    });
                    if bare || named {
                        found.push((at, field.to_owned()));
                    }
                }
            }
        }
        found.sort();
        found.into_iter().map(|(_, field)| field).collect()
    }

    /// The top-level comma-separated arguments of a macro call whose text
    /// starts after its `(`; string literals skipped.
    fn macro_arguments(code: &str) -> Vec<String> {
        let mut arguments = vec![String::new()];
        let mut depth = 0usize;
        let mut chars = code.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    // A literal: its text cannot be a field.
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                chars.next();
                            }
                            '"' => break,
                            _ => {}
                        }
                    }
                    arguments.last_mut().unwrap().push_str("\"\"");
                    continue;
                }
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' if depth == 0 => break,
                ')' | ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    arguments.push(String::new());
                    continue;
                }
                _ => {}
            }
            arguments.last_mut().unwrap().push(c);
        }
        arguments
    }

    #[test]
    fn the_scan_finds_error_fields_that_lose_their_causes() {
        let code = r#"
            tracing::warn!(%error, "store unavailable");
            tracing::debug!(queue = %q, %e, "x, y");
            warn!(error = %err, ?delay, "retrying (%error)");
            tracing::info!(error = %Chain(&error), cause = %Shortened::error(&text), "fine");
            tracing::warn!(?error, kind = %failure.kind, "fine");
            my_error!(%error);
        "#;
        assert_eq!(unchained_error_fields(code), ["%error", "%e", "error = %err"]);
    }

    /// Every log line in `src/` that prints an error shows its causes: a
    /// new `tracing::warn!(%error, …)` of a `BrokerError` would log only
    /// "publish failed", without why.
    #[test]
    fn log_lines_print_errors_with_their_causes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        collect(&root, &mut files);
        assert!(
            files.len() > 50,
            "found {} files under {}",
            files.len(),
            root.display()
        );
        let mut unchained = Vec::new();
        for path in files {
            // This file: the scan's own examples.
            if path.ends_with("error/chain.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for field in unchained_error_fields(&text) {
                unchained.push(format!(
                    "{}: {field}",
                    path.strip_prefix(&root).unwrap().display()
                ));
            }
        }
        assert!(
            unchained.is_empty(),
            "log these errors with `error = %crate::error::Chain(&error)`:\n{}",
            unchained.join("\n")
        );
    }

    fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
}
