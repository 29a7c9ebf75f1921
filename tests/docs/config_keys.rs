//! The configuration reference (`docs/configuration.md`) lists exactly the
//! keys `eddy.toml` accepts: those of the `#[serde(deny_unknown_fields)]`
//! structs under `crates/core/src/config`, as they nest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::tokens::{Token, closing, tokenize};
use crate::{prose, read, root};

#[test]
fn config_reference_matches_the_code() {
    let root = root();
    // `reference_keys` refuses an empty table, so no keys from the code fails below.
    let code = config_keys(&root.join("crates/core/src/config"));
    let documented = reference_keys(&read(&root.join("docs/configuration.md")));
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
        Some("UPPERCASE" | "SCREAMING_SNAKE_CASE") => name.to_uppercase(),
        Some("PascalCase") => words.iter().map(|w| capital(w)).collect(),
        Some("camelCase") => words
            .iter()
            .enumerate()
            .map(|(i, w)| if i == 0 { w.to_string() } else { capital(w) })
            .collect(),
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
