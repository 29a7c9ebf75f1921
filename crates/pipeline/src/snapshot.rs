//! What events are dispatched with: a [`Snapshot`] of the config, the
//! loaded plugins, the routes and the schemas, immutable and swapped whole
//! by the reload thread. The record path depends on this, not on the file
//! watcher.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use eddy_core::config::{Config, PluginSettings};
use eddy_core::routing::Router;
use eddy_sandbox::Plugin;
use eddy_schema::Schemas;

/// Everything an event is dispatched with. Immutable; replaced whole.
pub struct Snapshot {
    pub config: Arc<Config>,
    /// The loaded plugin files, by name.
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    pub router: Router,
    /// What events and follow-ups are checked against.
    pub schemas: Arc<Schemas>,
    /// What each plugin name runs.
    handlers: HashMap<String, Handler>,
    settings: HashMap<String, Arc<PluginSettings>>,
}

/// What a routed plugin name runs.
pub enum Handler {
    /// A loaded `.wasm` plugin.
    Wasm(Arc<Plugin>),
    /// Benchmarks only: the no-op handler compiled into the host, routed as
    /// `bench_native::NAME`.
    #[cfg(feature = "bench-native")]
    Native,
}

impl Snapshot {
    pub fn new(
        config: Arc<Config>,
        plugins: BTreeMap<String, Arc<Plugin>>,
        schemas: Arc<Schemas>,
    ) -> Snapshot {
        let settings = config
            .routes
            .iter()
            .map(|r| (r.plugin.clone(), Arc::new(config.settings(&r.plugin))))
            .collect();
        #[allow(unused_mut)]
        let mut handlers: HashMap<String, Handler> = plugins
            .iter()
            .map(|(name, plugin)| (name.clone(), Handler::Wasm(plugin.clone())))
            .collect();
        #[cfg(feature = "bench-native")]
        handlers
            .entry(crate::bench_native::NAME.to_string())
            .or_insert(Handler::Native);
        Snapshot {
            router: Router::new(&config.routes),
            schemas,
            config,
            plugins,
            handlers,
            settings,
        }
    }

    /// What the plugin `name` runs, if it is loaded.
    pub fn handler(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name)
    }

    /// What a plugin's follow-ups are checked against, if eddy has schemas.
    pub fn follow_up_schemas(&self) -> Option<&Arc<Schemas>> {
        (!self.schemas.is_off()).then_some(&self.schemas)
    }

    /// The settings of a routed plugin.
    pub fn settings(&self, plugin: &str) -> Arc<PluginSettings> {
        self.settings.get(plugin).cloned().unwrap_or_default()
    }

    /// Says, loudly, which routed plugins have no usable file.
    pub fn log_missing_plugins(&self) {
        for route in &self.config.routes {
            if self.handler(&route.plugin).is_none() {
                tracing::error!(
                    plugin = %route.plugin,
                    topic = %route.topic,
                    "no usable {}.wasm in {}: its events are dead-lettered (plugin-missing) until there is",
                    route.plugin,
                    self.config.plugins.dir.display()
                );
            }
        }
    }
}
