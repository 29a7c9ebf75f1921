//! Text from outside (a record's event id, a handler's reason) as it goes
//! into a log line, and URLs said without their passwords.

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

/// `url` without the `user:password@` of its authority (what may be said
/// of it), and that user and password as written, if it had them.
pub fn split_userinfo(url: &str) -> (String, Option<&str>) {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return (url.to_string(), None);
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |at| scheme_end + at);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => (
            format!("{}{}", &url[..scheme_end], &url[scheme_end + at + 1..]),
            Some(&url[scheme_end..scheme_end + at]),
        ),
        None => (url.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_user_and_password_are_split_off() {
        assert_eq!(
            split_userinfo("http://ada:s3cret@registry:8081/apis/x@y"),
            (
                "http://registry:8081/apis/x@y".to_string(),
                Some("ada:s3cret")
            )
        );
        assert_eq!(
            split_userinfo("http://registry:8081"),
            ("http://registry:8081".to_string(), None)
        );
        assert_eq!(split_userinfo("not a url"), ("not a url".to_string(), None));
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let shown = OneLine("id\nFAKE 2026 ERROR\r\u{1b}[31mé\u{0}").to_string();
        assert_eq!(shown, "id\\nFAKE 2026 ERROR\\r\\u{1b}[31mé\\u{0}");
        assert_eq!(OneLine("plain").to_string(), "plain");
    }
}
