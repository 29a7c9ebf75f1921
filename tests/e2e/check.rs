//! `eddy check`: what it accepts and what it tells the user.

use crate::harness::{PluginFile, check, config_head};

fn config(extra: &str) -> String {
    format!(
        "{}[[routes]]\ntopic = \"user.events\"\nevent_types = [\"user.created\"]\nplugin = \"welcome-email\"\n\n\
         [plugin.welcome-email]\npublish_to = [\"notification.commands\"]\n{extra}",
        config_head("check")
    )
}

#[test]
fn a_good_setup_passes() {
    let (code, output) = check(&config(""), &[PluginFile::Example("welcome-email")], &[]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("ok: plugin welcome-email (version "),
        "{output}"
    );
}

#[test]
fn missing_and_broken_plugins_are_named() {
    let routes = "\n[[routes]]\ntopic = \"user.events\"\nevent_types = [\"user.deleted\"]\nplugin = \"user-cleanup\"\n\
                  \n[[routes]]\ntopic = \"user.events\"\nevent_types = [\"user.*\"]\nplugin = \"broken\"\n";
    let (code, output) = check(
        &config(routes),
        &[PluginFile::Example("welcome-email")],
        &[("broken.wasm", b"\0asm\x0d\0\x01\0 half a file")],
    );
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("no user-cleanup.wasm in"), "{output}");
    assert!(
        output.contains("plugin broken") && output.contains("broken.wasm"),
        "{output}"
    );
}

#[test]
fn a_core_module_is_not_a_plugin() {
    let core_module: &[u8] = b"\0asm\x01\0\0\0";
    let (code, output) = check(&config(""), &[], &[("welcome-email.wasm", core_module)]);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("not a WebAssembly component"), "{output}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    // The chaos plugin exports the world, but a file of another world must
    // be refused: an empty component exports nothing.
    let empty_component: &[u8] = b"\0asm\x0d\0\x01\0";
    let (code, output) = check(&config(""), &[], &[("welcome-email.wasm", empty_component)]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("does not export the eddy:plugin@0.1.0 handler world"),
        "{output}"
    );
}

#[test]
fn unknown_config_keys_are_errors() {
    let (code, output) = check(
        &config("colour = \"blue\"\n"),
        &[PluginFile::Example("welcome-email")],
        &[],
    );
    assert_ne!(code, 0, "{output}");
    assert!(output.contains("colour"), "{output}");
}

#[test]
fn a_plugin_file_over_max_plugin_bytes_is_refused_unread() {
    let text = config("").replace(
        "dir = \"plugins\"\n",
        "dir = \"plugins\"\nmax_plugin_bytes = 1000\n",
    );
    let (code, output) = check(&text, &[PluginFile::Example("welcome-email")], &[]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("welcome-email.wasm")
            && output.contains("over [plugins] max_plugin_bytes (1000)"),
        "{output}"
    );
}
