//! The plugin folder: loading every `.wasm` in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::runtime::{Plugin, Runtime, plugin_name};

/// What loading a plugin folder found.
pub struct Loaded {
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    /// Files that are not usable plugins, with the reason.
    pub refused: Vec<(PathBuf, String)>,
}

/// The `<name>.wasm` files in `dir`, sorted. Hidden files (an editor's or
/// a copy's temporary name) are not plugins.
pub fn wasm_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| eddy_core::config::unreadable("the plugin folder", dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| plugin_name(path).is_some_and(|n| !n.starts_with('.')) && path.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

/// Why a plugin file could not be read.
pub enum Unread {
    /// Gone, or unreadable.
    Missing(std::io::Error),
    /// Over `[plugins] max_plugin_bytes`: refused without reading it all.
    TooLarge { size: u64, max: u64 },
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unread::Missing(e) => write!(f, "cannot read it: {e}"),
            Unread::TooLarge { size, max } => write!(
                f,
                "it is {size} bytes or more, over [plugins] max_plugin_bytes ({max})"
            ),
        }
    }
}

/// The bytes of the plugin file at `path`, at most `max` of them.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, Unread> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(Unread::Missing)?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file over the limit, however it
    // grew since it was listed.
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(Unread::Missing)?;
    let size = bytes.len() as u64;
    if size > max {
        return Err(Unread::TooLarge { size, max });
    }
    Ok(bytes)
}

/// Loads every plugin file in `dir`. A file that fails to load is refused
/// with its reason; only an unreadable folder is an error.
pub fn load_dir(runtime: &Runtime, dir: &Path, max_bytes: u64) -> anyhow::Result<Loaded> {
    let mut loaded = Loaded {
        plugins: BTreeMap::new(),
        refused: Vec::new(),
    };
    for path in wasm_files(dir)? {
        let result = read(&path, max_bytes)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|bytes| {
                runtime
                    .load_file(&path, &bytes)
                    .map_err(|e| format!("{e:#}"))
            });
        match result {
            Ok(plugin) => {
                loaded
                    .plugins
                    .insert(plugin.name().to_string(), Arc::new(plugin));
            }
            Err(reason) => loaded.refused.push((path, reason)),
        }
    }
    Ok(loaded)
}
