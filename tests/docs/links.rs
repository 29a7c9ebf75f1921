//! Every relative link in the README and `docs/` leads to a file that
//! exists and, with an anchor, to a heading of it, as GitHub renders them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::{prose, read, root};

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
