//! Hot reload: the plugin folder and `eddy.toml` are watched, and what events
//! are dispatched with is a [`Snapshot`] swapped whole.
//!
//! Every change, however it arrived (a `cp`, an editor's atomic rename, a
//! remove), is handled the same way: [`Reloader::reconcile`] compares the
//! disk with the running snapshot and builds the next one. A plugin file is
//! compiled and checked against the world before it can be part of a
//! snapshot, so no event ever meets a half-loaded plugin; a file that fails is
//! refused with its reason and the version before it keeps serving. A record
//! takes the snapshot current when it starts and keeps it to the end, so
//! events in flight finish on the old version.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use eddy_core::config::{Config, PluginsConfig};
use eddy_core::metrics;
use eddy_sandbox::plugins::{self, Unread, wasm_files};
use eddy_sandbox::runtime::{Plugin, Runtime, plugin_name, version_of};
use eddy_schema::Schemas;

use crate::snapshot::Snapshot;

/// How long the folder must be quiet before a change is looked at: only
/// long enough to take a burst of events as one. A file still being written
/// is not waited out: it fails to load (a cut-short component does not
/// validate), its version is refused, and its next change is looked at.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Brings the running snapshot in line with the disk.
pub struct Reloader {
    runtime: Arc<Runtime>,
    /// The config text last looked at, accepted or not.
    config_text: Option<String>,
    /// Plugin name → the version last refused, so it is reported once.
    refused: HashMap<String, String>,
    schema_files: eddy_schema::Loader,
    /// The registry client, kept (with what it fetched) while its URL stays.
    registry: Option<Arc<eddy_schema::Registry>>,
}

impl Reloader {
    pub fn new(runtime: Arc<Runtime>, config: &Config) -> Reloader {
        let config_text = config
            .source
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok());
        Reloader {
            runtime,
            config_text,
            refused: HashMap::new(),
            schema_files: eddy_schema::Loader::default(),
            registry: None,
        }
    }

    /// The first snapshot: `config` and every plugin in its folder.
    pub fn initial(&mut self, config: Config) -> anyhow::Result<Snapshot> {
        let started = std::time::Instant::now();
        let plugins = self.reconcile_plugins(&config.plugins, &BTreeMap::new())?;
        if let Some(plugins) = &plugins {
            let cached = plugins.values().filter(|p| p.from_cache).count();
            tracing::info!(
                "{} plugins loaded in {} ms ({cached} from the compiled cache)",
                plugins.len(),
                started.elapsed().as_millis()
            );
        }
        let files = self.reconcile_schema_files(&config, &eddy_schema::Catalog::default());
        let schemas = self.schemas(&config, files.unwrap_or_default());
        let snapshot = Snapshot::new(Arc::new(config), plugins.unwrap_or_default(), schemas);
        snapshot.log_missing_plugins();
        Ok(snapshot)
    }

    /// The next snapshot if the config file or the plugin folder changed in
    /// a way that can be applied; `None` if nothing is to change. Blocks
    /// while new plugin files compile.
    pub fn reconcile(&mut self, current: &Snapshot) -> Option<Snapshot> {
        let new_config = self.reconcile_config(&current.config);
        let config = new_config.clone().unwrap_or_else(|| current.config.clone());
        let plugins = match self.reconcile_plugins(&config.plugins, &current.plugins) {
            Ok(plugins) => plugins,
            Err(e) => {
                tracing::error!("{e:#}; the running plugins stay");
                None
            }
        };
        let files = self.reconcile_schema_files(&config, current.schemas.files());
        if new_config.is_none() && plugins.is_none() && files.is_none() {
            return None;
        }
        let files = files.unwrap_or_else(|| current.schemas.files().clone());
        let schemas = self.schemas(&config, files);
        let snapshot = Snapshot::new(
            config,
            plugins.unwrap_or_else(|| current.plugins.clone()),
            schemas,
        );
        snapshot.log_missing_plugins();
        Some(snapshot)
    }

    /// The schema files of `[schemas] dir` if they differ from `current`.
    fn reconcile_schema_files(
        &mut self,
        config: &Config,
        current: &eddy_schema::Catalog,
    ) -> Option<eddy_schema::Catalog> {
        match &config.schemas.dir {
            Some(dir) => self.schema_files.reconcile(dir, current),
            None => (!current.is_empty()).then(eddy_schema::Catalog::default),
        }
    }

    /// The snapshot's schemas: `files`, and the registry of `config`.
    fn schemas(&mut self, config: &Config, files: eddy_schema::Catalog) -> Arc<Schemas> {
        let url = config.schemas.registry.as_deref();
        let same = match (&self.registry, url) {
            (Some(registry), Some(url)) => registry.is_at(url),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.registry = eddy_schema::Registry::of(&config.schemas).map(Arc::new);
        }
        Arc::new(Schemas::new(&config.schemas, files, self.registry.clone()))
    }

    /// A new config if the file changed and the change is valid.
    fn reconcile_config(&mut self, current: &Arc<Config>) -> Option<Arc<Config>> {
        let path = current.source.as_ref()?;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                if self.config_text.take().is_some() {
                    tracing::error!(
                        "cannot read {} ({e}); the running config stays",
                        path.display()
                    );
                }
                return None;
            }
        };
        if self.config_text.as_deref() == Some(text.as_str()) {
            return None;
        }
        self.config_text = Some(text.clone());
        let mut config = match Config::from_file_text(&text, path) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("config change refused, the running config stays: {e:#}");
                return None;
            }
        };
        let problems = config.problems();
        if !problems.is_empty() {
            tracing::error!(
                "config change refused, the running config stays: {}",
                problems.join("; ")
            );
            return None;
        }
        if config.kafka != current.kafka {
            tracing::warn!("[kafka] settings changed; restart eddy to apply them");
            config.kafka = current.kafka.clone();
        }
        if config.plugins.dir != current.plugins.dir {
            tracing::warn!("[plugins] dir changed; restart eddy to apply it");
            config.plugins.dir = current.plugins.dir.clone();
        }
        if config.schemas.dir != current.schemas.dir {
            tracing::warn!("[schemas] dir changed; restart eddy to apply it");
            config.schemas.dir = current.schemas.dir.clone();
        }
        if config.http != current.http {
            tracing::warn!("[http] settings changed; restart eddy to apply them");
            config.http = current.http.clone();
        }
        tracing::info!(
            routes = config.routes.len(),
            topics = ?config.topics(),
            "config reloaded"
        );
        Some(Arc::new(config))
    }

    /// The plugin set of `dir` if it differs from `current`: new and changed
    /// files loaded, refused ones leaving the version before them in place,
    /// removed ones gone.
    fn reconcile_plugins(
        &mut self,
        settings: &PluginsConfig,
        current: &BTreeMap<String, Arc<Plugin>>,
    ) -> anyhow::Result<Option<BTreeMap<String, Arc<Plugin>>>> {
        let mut next = BTreeMap::new();
        let mut changed = false;
        for path in wasm_files(&settings.dir)? {
            let Some(name) = plugin_name(&path).map(str::to_string) else {
                continue;
            };
            let running = current.get(&name);
            let bytes = match plugins::read(&path, settings.max_plugin_bytes) {
                Ok(bytes) => bytes,
                // Gone between listing and reading: the next event sees it.
                Err(Unread::Missing(_)) => continue,
                Err(too_large @ Unread::TooLarge { .. }) => {
                    let reason = too_large.to_string();
                    if self.refused.get(&name) != Some(&reason) {
                        let keeps = running.map_or_else(
                            || "no version of it is running".to_string(),
                            |p| format!("version {} keeps serving", p.hash()),
                        );
                        tracing::error!(plugin = %name, "{} refused: {reason}; {keeps}", path.display());
                        metrics::reload(&name, "failed");
                        self.refused.insert(name.clone(), reason);
                    }
                    if let Some(plugin) = running {
                        next.insert(name, plugin.clone());
                    }
                    continue;
                }
            };
            let version = version_of(&bytes);
            if let Some(plugin) = running.filter(|p| p.hash() == version) {
                next.insert(name, plugin.clone());
                continue;
            }
            if self.refused.get(&name) == Some(&version) {
                if let Some(plugin) = running {
                    next.insert(name, plugin.clone());
                }
                continue;
            }
            match self.runtime.load_file(&path, &bytes) {
                Ok(plugin) => {
                    self.refused.remove(&name);
                    match running {
                        Some(old) => tracing::info!(
                            plugin = %name,
                            version = %plugin.hash(),
                            previous = %old.hash(),
                            "plugin reloaded"
                        ),
                        None => tracing::info!(
                            plugin = %name,
                            version = %plugin.hash(),
                            from_cache = plugin.from_cache,
                            "plugin loaded"
                        ),
                    }
                    metrics::reload(&name, "ok");
                    next.insert(name, Arc::new(plugin));
                    changed = true;
                }
                Err(e) => {
                    let keeps = running.map_or_else(
                        || "no version of it is running".to_string(),
                        |p| format!("version {} keeps serving", p.hash()),
                    );
                    tracing::error!(
                        plugin = %name,
                        version = %version,
                        "{e:#}; {keeps} (a file still being written is tried again when it \
                         next changes)"
                    );
                    metrics::reload(&name, "failed");
                    self.refused.insert(name.clone(), version);
                    if let Some(plugin) = running {
                        next.insert(name, plugin.clone());
                    }
                }
            }
        }
        for (name, plugin) in current {
            if !next.contains_key(name) {
                tracing::warn!(
                    plugin = %name,
                    version = %plugin.hash(),
                    "plugin file removed: its events are dead-lettered (plugin-missing) until it is back"
                );
                metrics::reload(name, "removed");
                self.refused.remove(name);
                changed = true;
            }
        }
        Ok(changed.then_some(next))
    }
}

/// Watches the plugin folder and the config file; each quiet spell after a
/// change to either sends one `()`. Other files beside the config file (logs,
/// say) are ignored.
pub fn watch(
    config: &Config,
) -> anyhow::Result<(
    Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    std::sync::mpsc::Receiver<()>,
)> {
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let plugin_dir = absolute(&config.plugins.dir);
    let schema_dir = config.schemas.dir.as_deref().map(absolute);
    let config_file = config.source.as_deref().map(absolute);
    let config_dir = config_file
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf);

    let (sender, receiver) = std::sync::mpsc::channel();
    let relevant = {
        let (plugin_dir, config_file) = (plugin_dir.clone(), config_file.clone());
        let schema_dir = schema_dir.clone();
        move |path: &Path| {
            path.parent() == Some(plugin_dir.as_path())
                || Some(path) == config_file.as_deref()
                || schema_dir
                    .as_deref()
                    .is_some_and(|dir| path.starts_with(dir))
        }
    };
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let changed = match result {
            Ok(events) => events.iter().any(|e| e.paths.iter().any(|p| relevant(p))),
            Err(errors) => {
                for e in errors {
                    tracing::warn!("file watcher: {e}");
                }
                true
            }
        };
        if changed {
            let _ = sender.send(());
        }
    })
    .context("cannot start the file watcher")?;
    let mut folders: Vec<PathBuf> = vec![plugin_dir];
    if let Some(dir) = config_dir.filter(|d| !folders.contains(d)) {
        folders.push(dir);
    }
    let mut watched: Vec<(PathBuf, RecursiveMode)> = folders
        .into_iter()
        .map(|f| (f, RecursiveMode::NonRecursive))
        .collect();
    // A schema folder has a folder per event type: watched whole.
    if let Some(dir) = schema_dir.filter(|d| d.is_dir()) {
        watched.push((dir, RecursiveMode::Recursive));
    }
    for (folder, mode) in &watched {
        debouncer.watch(folder, *mode).map_err(|e| {
            let kind = match &e.kind {
                notify::ErrorKind::Io(io) => io.kind(),
                _ => std::io::ErrorKind::Other,
            };
            let whom = eddy_core::config::as_whom(kind);
            anyhow::anyhow!("cannot watch {}: {e}{whom}", folder.display())
        })?;
    }
    Ok((debouncer, receiver))
}
