//! Text as PostgreSQL stores it. `text` cannot hold NUL, so every text bound for the database
//! passes through [`storable_text`]; a dead letter's reason may quote the message, so it is
//! cleaned and bounded by [`reason`]. The decoder applies both before a message reaches a
//! batch, and the store applies them again to whatever a batch holds, so that no writer of a
//! batch can make a statement fail for its text.

use std::borrow::Cow;

use monitor_core::report::bound_error;

/// Longest reason stored with a dead letter, in characters. Reasons may quote the message, so
/// they are cut to this.
pub const MAX_REASON_CHARS: usize = monitor_core::report::MAX_ERROR_CHARS;

/// A text as PostgreSQL `text` can hold it: NUL becomes U+FFFD. (Rust strings are valid UTF-8,
/// the only other thing `text` requires.)
pub fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A dead letter's reason as stored: control characters (which a quoted message may hold)
/// shown as U+FFFD, cut to [`MAX_REASON_CHARS`].
pub fn reason(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .take(MAX_REASON_CHARS + 1)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    bound_error(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_and_hold_no_control_characters() {
        let long = format!("bad \0 value {}", "x".repeat(10_000));
        let r = reason(&long);
        assert_eq!(r.chars().count(), MAX_REASON_CHARS);
        assert!(!r.chars().any(char::is_control));
    }

    #[test]
    fn nul_becomes_a_replacement_character() {
        assert_eq!(storable_text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(storable_text("ab"), Cow::Borrowed("ab")));
    }
}
