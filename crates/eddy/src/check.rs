//! `eddy check`'s report: the config's problems, every plugin its routes
//! name, and the schemas, checked without Kafka.

use eddy_core::Config;
use eddy_sandbox::Runtime;
use eddy_sandbox::plugins::load_dir;
use eddy_sandbox::runtime::plugin_name;

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
            plugin.name(),
            plugin.hash()
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
        for line in eddy_schema::check(config) {
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
