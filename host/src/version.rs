//! What `sockhost --version` says: the host's version, the commit and cargo profile it was
//! built from (recorded by `build.rs`), and the plugin ABI it loads — the root module ABI
//! and the host services level — which is what decides whether a plugin file loads.

/// `sockhost -V`: the version alone.
pub const SHORT: &str = env!("CARGO_PKG_VERSION");

/// `sockhost --version`: every line after the program name.
pub fn long() -> &'static str {
    let text = format!(
        "{}\ncommit:     {}\nbuild:      {}\nplugin ABI: sockhost-plugin-api {} (root module ABI {}, host services level {})",
        env!("CARGO_PKG_VERSION"),
        env!("SOCKHOST_COMMIT"),
        env!("SOCKHOST_PROFILE"),
        plugin_api::host::host_api_version(),
        plugin_api::host::root_module_abi(plugin_api::host::host_api_version()),
        plugin_api::host::SERVICES_LEVEL,
    );
    // Once per process, at parse time: clap keeps a `&'static str`.
    Box::leak(text.into_boxed_str())
}
