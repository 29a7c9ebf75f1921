//! Text from outside (a record's event id, a handler's reason) as it goes
//! into a log line.

use std::fmt;

/// Shows its text on one line: control characters (newlines, carriage
/// returns, escapes, NUL …) are written escaped, as `\n`, `\u{1b}`, so a
/// record cannot forge log lines. (The log formatter escapes ANSI
/// sequences, but not line breaks.)
pub struct OneLine<'a>(pub &'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(|c: char| c.is_control()) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let shown = OneLine("id\nFAKE 2026 ERROR\r\u{1b}[31mé\u{0}").to_string();
        assert_eq!(shown, "id\\nFAKE 2026 ERROR\\r\\u{1b}[31mé\\u{0}");
        assert_eq!(OneLine("plain").to_string(), "plain");
    }
}
