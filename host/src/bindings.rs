//! Host-side bindings of the `eddy:plugin` world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    additional_derives: [PartialEq],
});

pub use eddy::plugin::log::Level;
pub use eddy::plugin::types::PublishError;
