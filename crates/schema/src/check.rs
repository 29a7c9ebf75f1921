//! `eddy check`'s lines about schemas: the folder and the registry, read
//! once, and whether each routed event type has a schema.

use std::sync::Arc;

use eddy_core::config::UnknownSchema;

use crate::{Catalog, Found, Registry, Schemas, files};

/// `eddy check`'s lines about schemas, each `Ok` or an error: the schema
/// files, and, where `unknown = "dead-letter"`, that every event type a
/// route names has a schema.
pub fn check(config: &eddy_core::Config) -> Vec<Result<String, String>> {
    let mut lines = Vec::new();
    let (catalog, refused) = match &config.schemas.dir {
        Some(dir) => files::load(dir, &Catalog::default()),
        None => (Catalog::default(), Vec::new()),
    };
    for r in refused {
        lines.push(Err(format!(
            "schema file {} refused: {}",
            r.path.display(),
            r.reason
        )));
    }
    let registry = Registry::of(&config.schemas).map(Arc::new);
    let schemas = Schemas::new(&config.schemas, catalog, registry);
    for ((event_type, version), schema) in schemas.files.iter() {
        let version = version.as_deref().unwrap_or("every version");
        lines.push(Ok(format!(
            "schema {event_type} ({version}): {}",
            schema.origin
        )));
    }
    if config.schemas.unknown != UnknownSchema::DeadLetter {
        return lines;
    }
    for route in &config.routes {
        for event_type in &route.event_types {
            if event_type == "*" {
                continue;
            }
            let at = format!("route {} [{event_type}] -> {}", route.topic, route.plugin);
            if schemas.files.has_type(event_type) {
                continue;
            }
            let found = match schemas.by_subject(&route.topic, event_type) {
                Ok(Found::Schema(schema, _)) => {
                    lines.push(Ok(format!("schema {event_type}: {}", schema.origin)));
                    continue;
                }
                Ok(Found::Unusable(why)) => why,
                Ok(Found::None) => schemas.none_for(&route.topic, event_type, "any"),
                Err(unavailable) => format!("cannot tell whether it has a schema: {unavailable}"),
            };
            lines.push(Err(format!(
                "{at}: {found}, and [schemas] unknown is \"dead-letter\": \
                 every such event would be dead-lettered"
            )));
        }
    }
    lines
}
