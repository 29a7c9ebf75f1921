//! Compiled plugins cached on disk, so a restart with unchanged plugins
//! does not compile them again.
//!
//! An entry is wasmtime's serialized component, named by the SHA-256 of the
//! plugin file and the engine's compatibility hash (wasmtime's version, its
//! settings and the CPU features compiled for), and holding a SHA-256 of
//! its own contents. `Component::deserialize` trusts what it is given (it
//! is `unsafe`), so nothing is handed to it unchecked:
//! - the folder must be this process's user's own and writable by no one
//!   else (it is made so when eddy creates it); otherwise the cache is not
//!   used;
//! - an entry whose checksum does not match, or that wasmtime refuses, is
//!   deleted and the plugin compiled again; an entry is written to a
//!   temporary file and renamed into place, so a half-written one is never
//!   under its final name.
//!
//! At most [`MAX_ENTRIES`] entries are kept; the least recently written go.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// What every entry begins with.
const MAGIC: &[u8] = b"eddy compiled component 1\n";
/// Entries kept at most.
const MAX_ENTRIES: usize = 64;

/// A folder of compiled components for one engine.
pub struct CompiledCache {
    dir: PathBuf,
    /// The engine's compatibility hash, in every entry's name.
    compat: u64,
}

/// Where a component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Compiled,
    Cache,
}

impl CompiledCache {
    /// The cache in `dir` for `engine`, made if need be; `None` (and a
    /// warning saying why) when eddy cannot have it to itself.
    pub fn open(dir: &Path, engine: &Engine) -> Option<CompiledCache> {
        match owned_dir(dir) {
            Ok(()) => {
                let mut hasher = DefaultHasher::new();
                engine.precompile_compatibility_hash().hash(&mut hasher);
                Some(CompiledCache {
                    dir: dir.to_path_buf(),
                    compat: hasher.finish(),
                })
            }
            Err(why) => {
                tracing::warn!(
                    "compiled plugins are not cached in {}: {why}; every start compiles them",
                    dir.display()
                );
                None
            }
        }
    }

    fn entry(&self, bytes: &[u8]) -> PathBuf {
        let file: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{file}-{:016x}.cwasm", self.compat))
    }

    /// The component of the plugin file `bytes`: from a sound cache entry,
    /// or compiled (and then stored).
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, Source)> {
        let entry = self.entry(bytes);
        if let Some(component) = self.read(engine, &entry) {
            return Ok((component, Source::Cache));
        }
        let component = Component::from_binary(engine, bytes)?;
        match component.serialize() {
            Ok(serialized) => self.write(&entry, &serialized),
            Err(e) => tracing::warn!("cannot serialize a compiled plugin for the cache: {e:#}"),
        }
        Ok((component, Source::Compiled))
    }

    /// The component in `entry`, if it is there and sound; an unsound one
    /// is deleted.
    fn read(&self, engine: &Engine, entry: &Path) -> Option<Component> {
        let contents = std::fs::read(entry).ok()?;
        let unsound = |why: String| {
            tracing::warn!(
                "compiled-plugin cache entry {} ignored and deleted: {why}; the plugin is \
                 compiled again",
                entry.display()
            );
            let _ = std::fs::remove_file(entry);
            None
        };
        let Some(rest) = contents.strip_prefix(MAGIC) else {
            return unsound("it is not an eddy cache entry".into());
        };
        if rest.len() < 32 {
            return unsound("it is cut short".into());
        }
        let (sum, serialized) = rest.split_at(32);
        if Sha256::digest(serialized).as_slice() != sum {
            return unsound("its checksum does not match its contents".into());
        }
        // SAFETY: the bytes are what `Component::serialize` wrote for an
        // engine of the same compatibility hash (the entry's name), into a
        // folder only this user can write, and unchanged since (checksum).
        match unsafe { Component::deserialize(engine, serialized) } {
            Ok(component) => Some(component),
            Err(e) => unsound(format!("wasmtime refuses it ({e:#})")),
        }
    }

    fn write(&self, entry: &Path, serialized: &[u8]) {
        let temporary = entry.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::File::create(&temporary).and_then(|mut file| {
            file.write_all(MAGIC)?;
            file.write_all(&Sha256::digest(serialized))?;
            file.write_all(serialized)?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, entry)) {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!("cannot write {}: {e}", entry.display());
            return;
        }
        self.trim();
    }

    /// Deletes the least recently written entries past [`MAX_ENTRIES`].
    fn trim(&self) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = listing
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
            .collect();
        if entries.len() <= MAX_ENTRIES {
            return;
        }
        entries.sort();
        for (_, old) in &entries[..entries.len() - MAX_ENTRIES] {
            let _ = std::fs::remove_file(old);
        }
    }
}

/// Makes `dir` (mode 0700) if it is not there, and checks that it is this
/// process's user's and that no one else can write to it.
fn owned_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot make it: {e}"))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    // `/proc/self` belongs to the process's effective user.
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| format!("cannot tell this process's user: {e}"))?
        .uid();
    if meta.uid() != me {
        return Err(format!(
            "it belongs to uid {}, not to eddy's uid {me}",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(format!(
            "others can write to it (mode {:o}): eddy loads compiled code only from a folder \
             it alone writes",
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_in(name: &str, engine: &Engine) -> (PathBuf, CompiledCache) {
        let dir = std::env::temp_dir().join(format!("eddy-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = CompiledCache::open(&dir, engine).expect("a cache");
        (dir, cache)
    }

    #[test]
    fn a_second_load_comes_from_the_cache_and_a_damaged_entry_is_compiled_again() {
        let engine = Engine::default();
        let bytes = wasm_encoder::Component::new().finish();
        let (dir, cache) = cache_in("roundtrip", &engine);
        let (_, first) = cache.component(&engine, &bytes).unwrap();
        assert_eq!(first, Source::Compiled);
        let (_, second) = cache.component(&engine, &bytes).unwrap();
        assert_eq!(second, Source::Cache);
        // One flipped byte in the compiled code: refused, deleted, rebuilt.
        let entry = cache.entry(&bytes);
        let mut contents = std::fs::read(&entry).unwrap();
        let last = contents.len() - 1;
        contents[last] ^= 0xff;
        std::fs::write(&entry, &contents).unwrap();
        let (_, third) = cache.component(&engine, &bytes).unwrap();
        assert_eq!(third, Source::Compiled);
        let (_, fourth) = cache.component(&engine, &bytes).unwrap();
        assert_eq!(fourth, Source::Cache);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_folder_others_can_write_is_not_used() {
        let engine = Engine::default();
        let dir = std::env::temp_dir().join(format!("eddy-cache-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(CompiledCache::open(&dir, &engine).is_none());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(CompiledCache::open(&dir, &engine).is_some());
        std::fs::remove_dir_all(dir).ok();
    }
}
