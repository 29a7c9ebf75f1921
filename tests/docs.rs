//! Broker-free checks of the documentation: every relative link in the
//! README and `docs/` leads somewhere (the file, and the heading its anchor
//! names), and the configuration reference lists exactly the keys
//! `eddy.toml` accepts.
//!
//! Both read the repository as text, with the standard library only: the
//! Markdown by lines, the config structs by a small Rust tokenizer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The repository: this crate lives in `tests/`.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate has a parent folder")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// README.md and every `docs/*.md`.
fn pages() -> Vec<PathBuf> {
    let root = root();
    let docs = root.join("docs");
    let mut pages: Vec<PathBuf> = fs::read_dir(&docs)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", docs.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    pages.insert(0, root.join("README.md"));
    pages
}

#[test]
fn readme_links_resolve() {
    let root = root();
    let mut broken = Vec::new();
    for page in pages() {
        let text = read(&page);
        let shown = page
            .strip_prefix(&root)
            .unwrap_or(page.as_path())
            .display()
            .to_string();
        let base = page.parent().expect("a page is in a folder");
        for (line, target) in links(&text) {
            if let Err(why) = check_link(&root, base, &page, &target) {
                broken.push(format!("{shown}:{line}: ({target}) {why}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken link(s) in the documentation:\n  {}",
        broken.len(),
        broken.join("\n  ")
    );
}

/// Whether a link's target exists: `Ok` for links that leave the
/// repository (a scheme) and for anchors into files that are not Markdown.
fn check_link(root: &Path, base: &Path, page: &Path, target: &str) -> Result<(), String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return Ok(());
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        page.to_path_buf()
    } else if path.starts_with('/') {
        return Err("is absolute; write it relative to the page".to_string());
    } else {
        let joined = normalize(&base.join(path.replace("%20", " ")));
        if !joined.starts_with(root) {
            return Err("points outside the repository".to_string());
        }
        if !joined.exists() {
            return Err(format!("{} does not exist", joined.display()));
        }
        joined
    };
    let Some(anchor) = anchor else {
        return Ok(());
    };
    if file.extension().is_none_or(|ext| ext != "md") {
        return Ok(());
    }
    if file.is_dir() {
        return Err("has an anchor but names a folder".to_string());
    }
    if anchors(&read(&file)).contains(anchor) {
        Ok(())
    } else {
        Err(format!(
            "no heading of {} has the anchor #{anchor}",
            file.file_name().unwrap_or_default().to_string_lossy()
        ))
    }
}

/// `path` without `.` and `..` components.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The lines of a Markdown text outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        match (fence, marker) {
            (None, Some(c)) if run >= 3 => fence = Some((c, run)),
            (Some((c, n)), Some(m)) if m == c && run >= n && trimmed.trim_end().len() == run => {
                fence = None
            }
            (None, _) => lines.push((i + 1, line)),
            (Some(_), _) => {}
        }
    }
    lines
}

/// `line` with its code spans replaced by their contents (`keep`) or
/// dropped.
fn code_spans(line: &str, keep: bool) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|c| **c == '`').count();
        // The closing run: the next run of exactly as many backticks.
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let n = chars[j..].iter().take_while(|c| **c == '`').count();
                if n == run {
                    close = Some(j);
                    break;
                }
                j += n;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                if keep {
                    out.extend(chars[i + run..j].iter());
                }
                i = j + run;
            }
            None => {
                out.extend(chars[i..i + run].iter());
                i += run;
            }
        }
    }
    out
}

/// Every link target of a Markdown text, with its line: inline links and
/// images (`[text](target "title")`) and reference definitions
/// (`[label]: target`), outside code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in prose(text) {
        let line = code_spans(line, false);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some(end) = trimmed.find(']')
            && let Some(definition) = trimmed[end + 1..].strip_prefix(':')
        {
            let target = definition.split_whitespace().next().unwrap_or("");
            found.push((number, target.trim_matches(['<', '>']).to_string()));
            continue;
        }
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let mut depth = 0usize;
            let mut end = after.len();
            for (i, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = i;
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            let inside = after[..end].trim();
            let target = match inside.strip_prefix('<') {
                Some(angled) => angled.split('>').next().unwrap_or(""),
                None => inside.split_whitespace().next().unwrap_or(""),
            };
            found.push((number, target.to_string()));
            rest = &after[end.min(after.len())..];
        }
    }
    found
}

/// The anchors GitHub gives a page's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose(text) {
        let trimmed = line.trim_start();
        if line.len() - trimmed.len() > 3 {
            continue;
        }
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&level) {
            continue;
        }
        let rest = &trimmed[level..];
        if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
            continue;
        }
        // An optional closing sequence of #s.
        let title = rest.trim().trim_end_matches('#').trim_end();
        let anchor = slug(&heading_text(title));
        let count = seen.entry(anchor.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            anchor
        } else {
            format!("{anchor}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// A heading as GitHub renders it: code spans' contents, links' text.
fn heading_text(title: &str) -> String {
    let text = code_spans(title, true);
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("](") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        rest = after.find(')').map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// GitHub's anchor of a heading: lower case, punctuation dropped but for
/// `-` and `_`, each space a `-`.
fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn config_reference_matches_the_code() {
    let root = root();
    let folder = root.join("crates/core/src/config");
    let code = config_keys(&folder);
    assert!(
        !code.is_empty(),
        "no struct with #[serde(deny_unknown_fields)] in {}",
        folder.display()
    );
    let page = root.join("docs/configuration.md");
    let documented = reference_keys(&read(&page));
    let missing: Vec<&String> = code.difference(&documented).collect();
    let extra: Vec<&String> = documented.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/configuration.md's reference table and the config structs in \
         crates/core/src/config/ disagree (keys are written section.key; \
         [[routes]] entries as routes.key, [plugin.NAME] tables as plugin.NAME.key)\n  \
         keys eddy.toml accepts that the table lacks: {}\n  \
         rows of the table that eddy.toml does not accept: {}",
        list(&missing),
        list(&extra)
    );
}

fn list(keys: &[&String]) -> String {
    if keys.is_empty() {
        "none".to_string()
    } else {
        keys.iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The keys of the reference table: the first column of the first table
/// whose first header is `key`.
fn reference_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_table = false;
    for (_, line) in prose(text) {
        let line = line.trim();
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        let first = line
            .trim_start_matches('|')
            .split('|')
            .next()
            .unwrap_or("")
            .trim();
        if !in_table {
            in_table = first.eq_ignore_ascii_case("key");
            continue;
        }
        if first.chars().all(|c| matches!(c, '-' | ':' | ' ')) {
            continue;
        }
        keys.insert(first.trim_matches('`').to_string());
    }
    assert!(
        !keys.is_empty(),
        "docs/configuration.md has no reference table (a table whose first column is `key`)"
    );
    keys
}

// --- The config structs, read as text ---

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(char),
    Literal,
}

/// Rust source as tokens, without comments; strings (raw ones too) whole.
fn tokenize(source: &str) -> Vec<Token> {
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
fn closing(tokens: &[Token], open: usize) -> usize {
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

/// One field of a strict config struct.
#[derive(Debug)]
struct Field {
    /// The key, renamed as serde renames it.
    key: String,
    /// The identifiers of its type, in order (`BTreeMap`, `String`, `PluginSettings`).
    types: Vec<String>,
    flatten: bool,
}

/// What `#[serde(…)]` attributes say: each item's name and its string
/// value, if any (for `rename(deserialize = "x")`, the deserialize one).
fn serde_items(attributes: &[Vec<Token>]) -> Vec<(String, Option<String>)> {
    let mut items = Vec::new();
    for attribute in attributes {
        if attribute.first() != Some(&Token::Ident("serde".to_string())) {
            continue;
        }
        let Some(open) = attribute.iter().position(|t| *t == Token::Punct('(')) else {
            continue;
        };
        let close = closing(attribute, open);
        let inner = &attribute[open + 1..close.min(attribute.len())];
        let mut i = 0;
        while i < inner.len() {
            if let Token::Ident(name) = &inner[i] {
                let mut value = None;
                let mut next = i + 1;
                if inner.get(next) == Some(&Token::Punct('=')) {
                    if let Some(Token::Str(s)) = inner.get(next + 1) {
                        value = Some(s.clone());
                    }
                    next += 2;
                } else if inner.get(next) == Some(&Token::Punct('(')) {
                    let end = closing(inner, next);
                    let group = &inner[next..end.min(inner.len())];
                    value = group.windows(3).find_map(|w| match w {
                        [Token::Ident(d), Token::Punct('='), Token::Str(s)]
                            if d == "deserialize" =>
                        {
                            Some(s.clone())
                        }
                        _ => None,
                    });
                    next = end + 1;
                }
                items.push((name.clone(), value));
                i = next;
            } else {
                i += 1;
            }
        }
    }
    items
}

/// A field name as `#[serde(rename_all = …)]` spells it.
fn rename_all(name: &str, rule: Option<&str>) -> String {
    let words: Vec<&str> = name.split('_').filter(|w| !w.is_empty()).collect();
    let capital = |w: &str| {
        let mut chars = w.chars();
        match chars.next() {
            Some(c) => c.to_uppercase().collect::<String>() + chars.as_str(),
            None => String::new(),
        }
    };
    match rule {
        Some("lowercase") => name.to_lowercase(),
        Some("UPPERCASE") => name.to_uppercase(),
        Some("PascalCase") => words.iter().map(|w| capital(w)).collect(),
        Some("camelCase") => words
            .iter()
            .enumerate()
            .map(|(i, w)| if i == 0 { w.to_string() } else { capital(w) })
            .collect(),
        Some("SCREAMING_SNAKE_CASE") => name.to_uppercase(),
        Some("kebab-case") => name.replace('_', "-"),
        Some("SCREAMING-KEBAB-CASE") => name.replace('_', "-").to_uppercase(),
        _ => name.to_string(),
    }
}

/// The fields of a struct body (the tokens between its braces).
fn fields(body: &[Token], rule: Option<&str>) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut attributes: Vec<Vec<Token>> = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match &body[i] {
            Token::Punct('#') if body.get(i + 1) == Some(&Token::Punct('[')) => {
                let end = closing(body, i + 1);
                attributes.push(body[i + 2..end.min(body.len())].to_vec());
                i = end + 1;
            }
            Token::Ident(word) if word == "pub" => {
                i += 1;
                if body.get(i) == Some(&Token::Punct('(')) {
                    i = closing(body, i) + 1;
                }
            }
            Token::Ident(name) if body.get(i + 1) == Some(&Token::Punct(':')) => {
                // The type runs to the next comma outside brackets.
                let mut depth = 0i32;
                let mut j = i + 2;
                let mut types = Vec::new();
                while j < body.len() {
                    match &body[j] {
                        Token::Punct('<' | '(' | '[' | '{') => depth += 1,
                        Token::Punct('>') if j > 0 && body[j - 1] == Token::Punct('-') => {}
                        Token::Punct('>' | ')' | ']' | '}') => depth -= 1,
                        Token::Punct(',') if depth == 0 => break,
                        Token::Ident(t) => types.push(t.clone()),
                        _ => {}
                    }
                    j += 1;
                }
                let serde = serde_items(&attributes);
                let has = |item: &str| serde.iter().any(|(n, _)| n == item);
                // `skip_serializing…` fields are still read; these are not.
                if !(has("skip") || has("skip_deserializing")) {
                    let renamed = serde
                        .iter()
                        .find(|(n, v)| n == "rename" && v.is_some())
                        .and_then(|(_, v)| v.clone());
                    fields.push(Field {
                        key: renamed.unwrap_or_else(|| rename_all(name, rule)),
                        types,
                        flatten: has("flatten"),
                    });
                }
                attributes.clear();
                i = j + 1;
            }
            _ => {
                attributes.clear();
                i += 1;
            }
        }
    }
    fields
}

/// The strict structs (`#[serde(deny_unknown_fields)]`) of `tokens`, by
/// name, and the type aliases (`type A = B<C>;`) as identifiers.
fn structs(
    tokens: &[Token],
    strict: &mut BTreeMap<String, Vec<Field>>,
    aliases: &mut BTreeMap<String, Vec<String>>,
) {
    let mut attributes: Vec<Vec<Token>> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Punct('#') if tokens.get(i + 1) == Some(&Token::Punct('!')) => {
                i = closing(tokens, i + 2) + 1;
            }
            Token::Punct('#') if tokens.get(i + 1) == Some(&Token::Punct('[')) => {
                let end = closing(tokens, i + 1);
                attributes.push(tokens[i + 2..end.min(tokens.len())].to_vec());
                i = end + 1;
            }
            Token::Ident(word) if word == "pub" => {
                i += 1;
                if tokens.get(i) == Some(&Token::Punct('(')) {
                    i = closing(tokens, i) + 1;
                }
            }
            Token::Ident(word) if word == "struct" => {
                let Some(Token::Ident(name)) = tokens.get(i + 1) else {
                    i += 1;
                    continue;
                };
                // Past generics and where clauses, to the body.
                let mut j = i + 2;
                while j < tokens.len() && !matches!(tokens[j], Token::Punct('{' | ';' | '(')) {
                    j += 1;
                }
                if tokens.get(j) != Some(&Token::Punct('{')) {
                    attributes.clear();
                    i = j + 1;
                    continue;
                }
                let end = closing(tokens, j);
                let serde = serde_items(&attributes);
                if serde.iter().any(|(n, _)| n == "deny_unknown_fields") {
                    let rule = serde
                        .iter()
                        .find(|(n, _)| n == "rename_all")
                        .and_then(|(_, v)| v.as_deref());
                    strict.insert(
                        name.clone(),
                        fields(&tokens[j + 1..end.min(tokens.len())], rule),
                    );
                }
                attributes.clear();
                i = end + 1;
            }
            Token::Ident(word)
                if word == "type" && tokens.get(i + 2) == Some(&Token::Punct('=')) =>
            {
                let Some(Token::Ident(name)) = tokens.get(i + 1) else {
                    attributes.clear();
                    i += 1;
                    continue;
                };
                let mut j = i + 3;
                let mut types = Vec::new();
                while j < tokens.len() && tokens[j] != Token::Punct(';') {
                    if let Token::Ident(t) = &tokens[j] {
                        types.push(t.clone());
                    }
                    j += 1;
                }
                aliases.insert(name.clone(), types);
                attributes.clear();
                i = j + 1;
            }
            _ => {
                attributes.clear();
                i += 1;
            }
        }
    }
}

/// Every `.rs` file under `folder`.
fn sources(folder: &Path, found: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(folder).unwrap_or_else(|e| panic!("cannot read {}: {e}", folder.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The keys `eddy.toml` accepts, as the strict structs under `folder`
/// nest them: `kafka.security.protocol`, `routes.topic` for a `Vec` of
/// tables, `plugin.NAME.timeout_ms` for a map of tables. The root is the
/// struct no other one holds.
fn config_keys(folder: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    sources(folder, &mut files);
    files.sort();
    let mut strict = BTreeMap::new();
    let mut aliases = BTreeMap::new();
    for file in &files {
        structs(&tokenize(&read(file)), &mut strict, &mut aliases);
    }
    let expand = |types: &[String]| -> Vec<String> {
        let mut out = Vec::new();
        let mut todo: Vec<(String, usize)> = types.iter().rev().map(|t| (t.clone(), 0)).collect();
        while let Some((t, depth)) = todo.pop() {
            match aliases.get(&t) {
                Some(inner) if depth < 8 => {
                    todo.extend(inner.iter().rev().map(|i| (i.clone(), depth + 1)))
                }
                _ => out.push(t),
            }
        }
        out
    };
    let held_by_other: BTreeSet<String> = strict
        .iter()
        .flat_map(|(name, fields)| {
            fields
                .iter()
                .flat_map(|f| expand(f.types.as_slice()))
                .filter(|t| t != name && strict.contains_key(t))
                .collect::<Vec<_>>()
        })
        .collect();
    let roots: Vec<&String> = strict
        .keys()
        .filter(|n| !held_by_other.contains(*n))
        .collect();
    assert!(
        !strict.is_empty() && !roots.is_empty(),
        "no root config struct among {:?} in {}",
        strict.keys().collect::<Vec<_>>(),
        folder.display()
    );
    let mut keys = BTreeSet::new();
    for root in roots {
        walk(root, "", &strict, &expand, &mut Vec::new(), &mut keys);
    }
    keys
}

fn walk(
    name: &str,
    prefix: &str,
    strict: &BTreeMap<String, Vec<Field>>,
    expand: &dyn Fn(&[String]) -> Vec<String>,
    stack: &mut Vec<String>,
    keys: &mut BTreeSet<String>,
) {
    assert!(
        stack.iter().all(|s| s != name),
        "the config struct {name} holds itself: {stack:?}"
    );
    stack.push(name.to_string());
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    for field in &strict[name] {
        let types = expand(field.types.as_slice());
        let inner = types.iter().find(|t| strict.contains_key(*t));
        match inner {
            Some(inner) if field.flatten => walk(inner, prefix, strict, expand, stack, keys),
            Some(inner) => {
                let mut path = join(field.key.as_str());
                if types
                    .iter()
                    .any(|t| matches!(t.as_str(), "BTreeMap" | "HashMap" | "IndexMap"))
                {
                    path.push_str(".NAME");
                }
                walk(inner, &path, strict, expand, stack, keys);
            }
            None if field.flatten => {}
            None => {
                keys.insert(join(field.key.as_str()));
            }
        }
    }
    stack.pop();
}
