//! Schema files: `<dir>/<event_type>/<version>.json` for one version of an
//! event type, `<dir>/<event_type>.json` for every version without a file
//! of its own. Each is compiled when it changes; one that does not compile
//! is refused with its reason, and the file before it (if any) keeps
//! serving, as with plugins.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{MAX_SCHEMA_BYTES, Schema};

/// An event type, and the version a file is for (`None`: every version).
pub type Key = (String, Option<String>);

/// The compiled schema files of a folder.
#[derive(Default, Clone)]
pub struct Catalog {
    entries: BTreeMap<Key, Entry>,
    /// Files refused with no earlier version to keep serving, and why: an
    /// event they are for has a schema that cannot be checked against, not
    /// none (nor the type's file, if its version's is the broken one).
    broken: BTreeMap<Key, String>,
}

#[derive(Clone)]
struct Entry {
    digest: String,
    schema: Arc<Schema>,
}

impl Catalog {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.broken.is_empty()
    }

    /// The schema of `event_type` at `version`: its version's file, else
    /// the type's; `Err` when that file was refused, with why.
    pub fn get(&self, event_type: &str, version: &str) -> Option<Result<&Arc<Schema>, &String>> {
        let mut key = (event_type.to_string(), Some(version.to_string()));
        for _ in 0..2 {
            if let Some(entry) = self.entries.get(&key) {
                return Some(Ok(&entry.schema));
            }
            if let Some(why) = self.broken.get(&key) {
                return Some(Err(why));
            }
            key.1 = None;
        }
        None
    }

    /// Each file's event type, version (`None`: every version) and schema.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Arc<Schema>)> {
        self.entries.iter().map(|(key, entry)| (key, &entry.schema))
    }

    /// Whether `event_type` has a file, for any version.
    pub fn has_type(&self, event_type: &str) -> bool {
        self.entries.keys().any(|(t, _)| t == event_type)
    }
}

/// A schema file that was not taken, and why.
pub struct Refused {
    pub path: PathBuf,
    pub reason: String,
}

/// Brings a catalog in line with its folder.
#[derive(Default)]
pub struct Loader {
    /// Path → the reason it was last refused for, so a refusal is said once.
    refused: HashMap<PathBuf, String>,
}

impl Loader {
    /// The catalog of `dir`, built from `current` where files are
    /// unchanged; `None` if nothing changed. Refusals are logged once per
    /// version of a file.
    pub fn reconcile(&mut self, dir: &Path, current: &Catalog) -> Option<Catalog> {
        let (next, refused) = load(dir, current);
        self.refused
            .retain(|path, _| refused.iter().any(|r| &r.path == path));
        for Refused { path, reason } in refused {
            if self.refused.get(&path) != Some(&reason) {
                tracing::error!("schema file {} refused: {reason}", path.display());
                eddy_core::metrics::schema_reload("failed");
                self.refused.insert(path, reason);
            }
        }
        let changed = next.entries.len() != current.entries.len()
            || next
                .entries
                .iter()
                .zip(&current.entries)
                .any(|((k, a), (l, b))| k != l || a.digest != b.digest)
            || next.broken != current.broken;
        if changed {
            tracing::info!(
                dir = %dir.display(),
                schemas = next.entries.len(),
                "schema files loaded"
            );
            eddy_core::metrics::schema_reload("ok");
        }
        changed.then_some(next)
    }
}

/// Every schema file of `dir` compiled (or kept from `current` when its
/// bytes are the same), and the files refused. A refused file's key keeps
/// `current`'s schema.
pub fn load(dir: &Path, current: &Catalog) -> (Catalog, Vec<Refused>) {
    let mut next = Catalog::default();
    let mut refused = Vec::new();
    let files = match files_of(dir) {
        Ok(files) => files,
        Err(e) => {
            refused.push(Refused {
                path: dir.to_path_buf(),
                reason: format!("cannot read the schema folder: {e}"),
            });
            return (current.clone(), refused);
        }
    };
    for (key, path) in files {
        let bytes = match read(&path) {
            Ok(bytes) => bytes,
            Err(reason) => {
                keep(&mut next, current, key, &path, &reason);
                refused.push(Refused { path, reason });
                continue;
            }
        };
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(entry) = current.entries.get(&key).filter(|e| e.digest == digest) {
            next.entries.insert(key, entry.clone());
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        match Schema::compile(&text, path.display().to_string(), None) {
            Ok(schema) => {
                next.entries.insert(
                    key,
                    Entry {
                        digest,
                        schema: Arc::new(schema),
                    },
                );
            }
            Err(reason) => {
                let reason = format!("{reason} (version {digest})");
                keep(&mut next, current, key, &path, &reason);
                refused.push(Refused { path, reason });
            }
        }
    }
    (next, refused)
}

/// A refused file's key keeps the schema it had; with none, it is broken.
fn keep(next: &mut Catalog, current: &Catalog, key: Key, path: &Path, reason: &str) {
    match current.entries.get(&key) {
        Some(entry) => {
            next.entries.insert(key, entry.clone());
        }
        None => {
            let why = format!("schema file {} is refused: {reason}", path.display());
            next.broken.insert(key, why);
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_SCHEMA_BYTES {
        return Err(format!(
            "{size} bytes; a schema file may have at most {MAX_SCHEMA_BYTES}"
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// The schema files of `dir` and the key each is for, in order.
pub fn files_of(dir: &Path) -> std::io::Result<Vec<(Key, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            let Some(event_type) = visible_name(&path) else {
                continue;
            };
            for inner in std::fs::read_dir(&path)? {
                let inner = inner?.path();
                if let Some(version) = json_stem(&inner) {
                    files.push(((event_type.to_string(), Some(version.to_string())), inner));
                }
            }
        } else if let Some(event_type) = json_stem(&path) {
            files.push(((event_type.to_string(), None), path));
        }
    }
    files.sort();
    Ok(files)
}

/// The stem of a visible `.json` file.
fn json_stem(path: &Path) -> Option<&str> {
    if path.extension()? != "json" || !path.is_file() {
        return None;
    }
    visible_name(path)?;
    path.file_stem()?.to_str()
}

/// The file name, unless hidden (an editor's or a copy's temporary file).
fn visible_name(path: &Path) -> Option<&str> {
    path.file_name()?.to_str().filter(|n| !n.starts_with('.'))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A fresh temporary folder holding `files` (path → text).
    pub(crate) fn folder(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "eddy-schemas-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const NEEDS_EMAIL: &str = r#"{"type":"object","required":["email"]}"#;
    const NEEDS_NAME: &str = r#"{"type":"object","required":["name"]}"#;

    #[test]
    fn a_versions_file_comes_before_its_types_file() {
        let dir = folder(&[
            ("user.created.json", NEEDS_EMAIL),
            ("user.created/2.0.json", NEEDS_NAME),
            (".user.created.json.swp", "junk"),
            ("README.md", "not a schema"),
        ]);
        let (catalog, refused) = load(&dir, &Catalog::default());
        assert!(refused.is_empty());
        let v1 = catalog.get("user.created", "1.0").unwrap().unwrap();
        let v2 = catalog.get("user.created", "2.0").unwrap().unwrap();
        assert!(v1.origin.ends_with("user.created.json"), "{}", v1.origin);
        assert!(v2.origin.ends_with("2.0.json"), "{}", v2.origin);
        assert!(catalog.get("user.deleted", "1.0").is_none());
        assert!(catalog.has_type("user.created"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_broken_file_is_refused_and_the_one_before_it_keeps_serving() {
        let dir = folder(&[("user.created.json", NEEDS_EMAIL)]);
        let mut loader = Loader::default();
        let first = loader.reconcile(&dir, &Catalog::default()).unwrap();
        std::fs::write(dir.join("user.created.json"), r#"{"type": 12}"#).unwrap();
        let (kept, refused) = load(&dir, &first);
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].reason.contains("not a valid JSON Schema"),
            "{}",
            refused[0].reason
        );
        let schema = kept.get("user.created", "1.0").unwrap().unwrap();
        let before = first.get("user.created", "1.0").unwrap().unwrap();
        assert!(Arc::ptr_eq(schema, before));
        assert!(loader.reconcile(&dir, &first).is_none(), "nothing changed");
        std::fs::write(dir.join("user.created.json"), "{\"type\": \"object\"").unwrap();
        let (_, refused) = load(&dir, &first);
        assert!(
            refused[0].reason.contains("not JSON"),
            "{}",
            refused[0].reason
        );
        // With no earlier version, the type's events meet the refusal.
        let (fresh, _) = load(&dir, &Catalog::default());
        let why = fresh.get("user.created", "1.0").unwrap().unwrap_err();
        assert!(
            why.contains("user.created.json is refused: the schema is not JSON"),
            "{why}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
