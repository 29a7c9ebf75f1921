//! Rust source as tokens, enough to read struct definitions and their
//! `#[serde(…)]` attributes without a parser crate.

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Token {
    Ident(String),
    Str(String),
    Punct(char),
    Literal,
}

/// Rust source as tokens, without comments; strings (raw ones too) whole.
pub(crate) fn tokenize(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            let (text, end) = quoted(&chars, i + 1);
            tokens.push(Token::Str(text));
            i = end;
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                // A char literal with an escape: past the escaped character,
                // up to the closing quote.
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                tokens.push(Token::Literal);
            } else if at(i + 2) == '\'' {
                i += 3;
                tokens.push(Token::Literal);
            } else {
                // A lifetime: the quote, then its name as an identifier.
                tokens.push(Token::Punct('\''));
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let hashes = chars[i..].iter().take_while(|c| **c == '#').count();
            if matches!(word.as_str(), "r" | "br" | "cr") && at(i + hashes) == '"' {
                // A raw string: no escapes, closed by a quote and as many #s.
                let body = i + hashes + 1;
                let closes = |j: usize| {
                    chars[j] == '"'
                        && j + hashes < chars.len()
                        && chars[j + 1..=j + hashes].iter().all(|c| *c == '#')
                };
                let mut j = body;
                while j < chars.len() && !closes(j) {
                    j += 1;
                }
                tokens.push(Token::Str(chars[body..j.min(chars.len())].iter().collect()));
                i = j + 1 + hashes;
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                let (text, end) = quoted(&chars, i + 1);
                tokens.push(Token::Str(text));
                i = end;
            } else if word == "b" && at(i) == '\'' {
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                tokens.push(Token::Literal);
            } else if word == "r" && hashes == 1 && (at(i + 1).is_alphabetic() || at(i + 1) == '_')
            {
                // A raw identifier, r#type: the name without its prefix.
                let start = i + 1;
                i = start;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            } else {
                tokens.push(Token::Ident(word));
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if at(i) == '.' && at(i + 1).is_ascii_digit() {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            tokens.push(Token::Literal);
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

/// A quoted string's contents from `start` (just after the opening quote),
/// and the index after its closing quote.
fn quoted(chars: &[char], start: usize) -> (String, usize) {
    let mut text = String::new();
    let mut i = start;
    while i < chars.len() && chars[i] != '"' {
        if chars[i] == '\\' && i + 1 < chars.len() {
            text.push(chars[i + 1]);
            i += 2;
        } else {
            text.push(chars[i]);
            i += 1;
        }
    }
    (text, i + 1)
}

/// The index of the token closing the group opened at `open`.
pub(crate) fn closing(tokens: &[Token], open: usize) -> usize {
    let (left, right) = match tokens[open] {
        Token::Punct('(') => ('(', ')'),
        Token::Punct('[') => ('[', ']'),
        Token::Punct('{') => ('{', '}'),
        _ => return open,
    };
    let mut depth = 0;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        if *token == Token::Punct(left) {
            depth += 1;
        } else if *token == Token::Punct(right) {
            depth -= 1;
            if depth == 0 {
                return i;
            }
        }
    }
    tokens.len()
}
