//! The plugin folder: loading every `.wasm` in it, and the report `eddy check`
//! prints about plugins and routes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
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
        .map_err(|e| crate::config::unreadable("the plugin folder", dir, e))?;
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
                loaded.plugins.insert(plugin.name.clone(), Arc::new(plugin));
            }
            Err(reason) => loaded.refused.push((path, reason)),
        }
    }
    Ok(loaded)
}

/// `eddy check`: the lines to print and whether everything is usable.
pub struct CheckReport {
    pub lines: Vec<String>,
    pub ok: bool,
}

/// Validates `config` and every plugin its routes name, without Kafka.
pub fn check(config: &Config, runtime: &Runtime) -> CheckReport {
    let mut lines = Vec::new();
    let mut ok = true;
    let problems = config.problems();
    let config_ok = problems.is_empty();
    for problem in problems {
        ok = false;
        lines.push(format!("error: {problem}"));
    }
    let loaded = match load_dir(
        runtime,
        &config.plugins.dir,
        config.plugins.max_plugin_bytes,
    ) {
        Ok(loaded) => loaded,
        Err(e) => {
            lines.push(format!("error: {e:#}"));
            return CheckReport { lines, ok: false };
        }
    };
    for (path, reason) in &loaded.refused {
        let routed =
            plugin_name(path).is_some_and(|name| config.routes.iter().any(|r| r.plugin == name));
        if routed {
            ok = false;
            lines.push(format!("error: {reason}"));
        } else {
            lines.push(format!("warning (no route uses it): {reason}"));
        }
    }
    for plugin in loaded.plugins.values() {
        lines.push(format!(
            "ok: plugin {} (version {})",
            plugin.name, plugin.hash
        ));
    }
    for (i, route) in config.routes.iter().enumerate() {
        let at = format!(
            "route #{} {} [{}] -> {}",
            i + 1,
            route.topic,
            route.event_types.join(", "),
            route.plugin
        );
        if loaded.plugins.contains_key(&route.plugin) {
            lines.push(format!("ok: {at}"));
        } else if !loaded
            .refused
            .iter()
            .any(|(p, _)| plugin_name(p) == Some(&route.plugin))
        {
            ok = false;
            lines.push(format!(
                "error: {at}: there is no {}.wasm in {}; build the plugin and copy it there",
                route.plugin,
                config.plugins.dir.display()
            ));
        }
    }
    // Only when the config is sound: a bad [schemas] is already said.
    if config_ok {
        for line in crate::schema::check(config) {
            match line {
                Ok(line) => lines.push(format!("ok: {line}")),
                Err(line) => {
                    ok = false;
                    lines.push(format!("error: {line}"));
                }
            }
        }
    }
    CheckReport { lines, ok }
}
