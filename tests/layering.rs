//! The layering, checked: cargo refuses a cycle between crates, so these
//! tests hold what cargo does not — which crate may use which (the table in
//! the README), that `eddy-core` stays free of the engine and the clients,
//! and that inside every crate no module imports a module that imports it
//! back. Broker-free; reads the sources as text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each crate's folder under `crates/`, its package name, and the eddy
/// crates it may depend on: the README's crate map.
const LAYERS: &[(&str, &str, &[&str])] = &[
    ("core", "eddy-core", &[]),
    ("schema", "eddy-schema", &["eddy-core"]),
    ("trace", "eddy-trace", &["eddy-core"]),
    ("sandbox", "eddy-sandbox", &["eddy-core", "eddy-schema"]),
    ("kafka", "eddy-kafka", &["eddy-core", "eddy-trace"]),
    (
        "pipeline",
        "eddy-pipeline",
        &[
            "eddy-core",
            "eddy-schema",
            "eddy-trace",
            "eddy-sandbox",
            "eddy-kafka",
        ],
    ),
    (
        "eddy",
        "eddy",
        &[
            "eddy-core",
            "eddy-schema",
            "eddy-trace",
            "eddy-sandbox",
            "eddy-kafka",
            "eddy-pipeline",
        ],
    ),
];

/// What `eddy-core` may depend on: plain data, serde, time and tokio's
/// timers. A new entry is a decision to make in review, not by accident;
/// a Kafka client, a WebAssembly engine or OpenTelemetry never belongs.
const CORE_MAY_USE: &[&str] = &[
    "anyhow",
    "base64",
    "metrics",
    "rand",
    "serde",
    "serde_json",
    "thiserror",
    "time",
    "tokio",
    "tokio-util",
    "toml",
    "tracing",
];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the repository")
        .join("crates")
}

/// The names in a `[dependencies]`-like section of a Cargo.toml.
fn dependencies(manifest: &str, section: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
            continue;
        }
        if inside && let Some((name, _)) = line.split_once('=') {
            let name = name.trim().trim_end_matches(".workspace").trim();
            if !name.is_empty() && !name.starts_with('#') {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn each_crate_depends_only_on_the_crates_below_it() {
    let mut wrong = Vec::new();
    let folders: BTreeSet<String> = std::fs::read_dir(crates_dir())
        .expect("crates/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let known: BTreeSet<String> = LAYERS.iter().map(|(f, _, _)| f.to_string()).collect();
    assert_eq!(
        folders, known,
        "every crate under crates/ has its place in LAYERS (and the README's map)"
    );
    for (folder, package, allowed) in LAYERS {
        let path = crates_dir().join(folder).join("Cargo.toml");
        let manifest = std::fs::read_to_string(&path).expect("a Cargo.toml");
        assert!(
            manifest.contains(&format!("name = \"{package}\"")),
            "{} names package {package}",
            path.display()
        );
        for section in ["dependencies", "build-dependencies"] {
            for name in dependencies(&manifest, section) {
                if name.starts_with("eddy-") && !allowed.contains(&name.as_str()) {
                    wrong.push(format!("{package} depends on {name} ([{section}])"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies pointing up or sideways: {wrong:#?}"
    );
}

#[test]
fn the_core_holds_no_client_no_engine_and_no_exporter() {
    let path = crates_dir().join("core/Cargo.toml");
    let manifest = std::fs::read_to_string(&path).expect("core's Cargo.toml");
    let used = dependencies(&manifest, "dependencies");
    let extra: Vec<&String> = used
        .iter()
        .filter(|name| !CORE_MAY_USE.contains(&name.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "eddy-core depends on {extra:?}: keep it plain (see CORE_MAY_USE)"
    );
    assert!(
        !manifest.contains("[features]"),
        "eddy-core has no optional dependencies to switch an engine in"
    );
}

/// A crate's modules: module path (`partition::worker`) → its source,
/// without its `#[cfg(test)] mod tests` block.
fn modules(src: &Path) -> BTreeMap<Vec<String>, String> {
    let mut found = BTreeMap::new();
    let mut folders = vec![src.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("a source folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let mut segments: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if segments.last().is_some_and(|s| s == "mod") {
                segments.pop();
            }
            let is_root = segments == ["lib"] || segments == ["main"];
            let is_test_file = segments.last().is_some_and(|s| s.ends_with("_tests"));
            if is_root || is_test_file {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            let code = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => text[..at].to_string(),
                None => text,
            };
            found.insert(segments, code);
        }
    }
    found
}

/// The `use` paths of `code`, braces expanded (`a::{b, c::d}` is `a::b`
/// and `a::c::d`), with re-exports (`pub use`) left out: a module that
/// re-exports its child's type does not depend on it.
fn use_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let prefix = before[line_start..].trim();
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
        let statement = &rest[at + 4..end];
        let is_statement = prefix.is_empty() || prefix == "pub(crate)" || prefix == "pub(super)";
        let starts_word = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
        if !(is_statement && starts_word) {
            rest = &rest[at + 4..];
            continue;
        }
        expand("", statement, &mut paths);
        rest = &rest[end.min(rest.len())..];
        if rest.is_empty() {
            break;
        }
        rest = &rest[1..];
    }
    paths
}

fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    match tree.find('{') {
        None => {
            let path = tree.split(" as ").next().unwrap_or(tree);
            let path: String = path.split_whitespace().collect();
            out.push(format!("{prefix}{path}"));
        }
        Some(open) => {
            let head: String = tree[..open].split_whitespace().collect();
            let head = format!("{prefix}{head}");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&head, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            if start < inner.len() {
                expand(&head, &inner[start..], out);
            }
        }
    }
}

/// Paths written inline (`crate::a::b`, `super::a`, `child::f`), outside
/// `use` and comments.
fn inline_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") || line.starts_with("use ") || line.starts_with("pub use ") {
            continue;
        }
        let is_path_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        for token in line.split(|c: char| !is_path_char(c)) {
            let token = token.trim_matches(':');
            let starts_with_name = token
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
            if token.contains("::") && starts_with_name {
                paths.push(token.to_string());
            }
        }
    }
    paths
}

/// The module of `modules` a path written in module `at` names: the
/// longest prefix that is a module; `None` for the crate root or another
/// crate.
fn target(at: &[String], path: &str, modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segments: Vec<String> = Vec::new();
    let mut parts = path.split("::").peekable();
    match parts.peek().copied() {
        Some("crate") => {
            parts.next();
        }
        Some("super") => {
            segments = at.to_vec();
            while parts.peek() == Some(&"super") {
                parts.next();
                segments.pop();
            }
        }
        Some("self") => {
            parts.next();
            segments = at.to_vec();
        }
        Some(first) => {
            // `child::x` in a module that declares `mod child`.
            let mut child = at.to_vec();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            segments = at.to_vec();
        }
        None => return None,
    }
    let mut best = None;
    if !segments.is_empty() && modules.contains(&segments) {
        best = Some(segments.clone());
    }
    for part in parts {
        segments.push(part.to_string());
        if modules.contains(&segments) {
            best = Some(segments.clone());
        }
    }
    best
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut circles = Vec::new();
    for (folder, _, _) in LAYERS {
        let src = crates_dir().join(folder).join("src");
        let modules = modules(&src);
        let names: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (at, code) in &modules {
            let paths = use_paths(code).into_iter().chain(inline_paths(code));
            for path in paths {
                if let Some(to) = target(at, &path, &names)
                    && &to != at
                {
                    edges.entry(at.clone()).or_default().insert(to);
                }
            }
        }
        // A module reaches itself through its imports: a circle.
        for start in edges.keys() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<(Vec<String>, Vec<Vec<String>>)> =
                vec![(start.clone(), vec![start.clone()])];
            while let Some((at, trail)) = stack.pop() {
                for next in edges.get(&at).into_iter().flatten() {
                    if next == start {
                        let shown: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                        circles.push(format!(
                            "{folder}: {} -> {}",
                            shown.join(" -> "),
                            start.join("::")
                        ));
                    } else if seen.insert(next.clone()) {
                        let mut longer = trail.clone();
                        longer.push(next.clone());
                        stack.push((next.clone(), longer));
                    }
                }
            }
        }
    }
    circles.sort();
    circles.dedup();
    assert!(circles.is_empty(), "modules in a circle: {circles:#?}");
}

#[test]
fn the_checker_sees_a_circle_and_a_nested_use() {
    let mut paths = Vec::new();
    expand("", "crate::{a::{b, c::D}, e as f}", &mut paths);
    assert_eq!(paths, ["crate::a::b", "crate::a::c::D", "crate::e"]);
    let names: BTreeSet<Vec<String>> = [vec!["a".to_string()], vec!["a".into(), "c".into()]]
        .into_iter()
        .collect();
    let at = vec!["a".to_string(), "c".to_string()];
    assert_eq!(target(&at, "super::X", &names), Some(vec!["a".to_string()]));
    assert_eq!(target(&at, "crate::a::c::D", &names), Some(at.clone()));
    assert_eq!(target(&at, "eddy_core::x", &names), None);
    let reexport = "pub use worker::Worker;\nuse crate::a::b;\n";
    assert_eq!(use_paths(reexport), ["crate::a::b"]);
    assert_eq!(
        inline_paths("let x = crate::a::c::f(super::g);"),
        ["crate::a::c::f", "super::g"]
    );
}
