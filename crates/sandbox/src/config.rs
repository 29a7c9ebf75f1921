//! `eddy:plugin/config`: the plugin's `config` table from `eddy.toml`.

use crate::bindings;
use crate::host::HostState;

impl bindings::eddy::plugin::config::Host for HostState {
    fn get(&mut self, name: String) -> Option<String> {
        self.settings.config.get(&name).cloned()
    }
}
