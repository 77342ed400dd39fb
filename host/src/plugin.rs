//! The plugin boundary: load and check a plugin file, validate binds and `--plugin-opt`
//! pairs against what it declares, build its factory; and `sockhost inspect`.
//!
//! The ABI itself (abi_stable) stays inside `plugin-api`'s `host` module; this module turns
//! its results into [`HostError`]s and log lines.

use std::path::Path;

use plugin_api::host::{Factory, Library, LoadError, PluginMeta};
use plugin_api::Transport;

use crate::bind::{BindSpec, SocketKind};
use crate::error::HostError;
use crate::metrics::PluginId;

/// A loaded, ABI-checked plugin and its metadata.
pub struct Plugin {
    library: Library,
    pub meta: PluginMeta,
}

impl Plugin {
    /// Load `path`; an incompatible plugin's full layout report goes to the debug log.
    pub fn load(path: &Path) -> Result<Plugin, HostError> {
        let library = Library::load(path).map_err(|e| {
            if let LoadError::Incompatible { detail, .. } = &e {
                tracing::debug!("layout difference reported by abi_stable:\n{detail}");
            }
            HostError::Load(e)
        })?;
        let meta = library.meta();
        Ok(Plugin { library, meta })
    }

    /// Load a snapshot of the plugin (`file`, e.g. `/proc/self/fd/N`), naming it `path`.
    pub fn load_snapshot(path: &Path, file: &Path) -> Result<Plugin, HostError> {
        let library = Library::load_file(path, file).map_err(|e| {
            if let LoadError::Incompatible { detail, .. } = &e {
                tracing::debug!("layout difference reported by abi_stable:\n{detail}");
            }
            HostError::Load(e)
        })?;
        let meta = library.meta();
        Ok(Plugin { library, meta })
    }

    /// Its name and version.
    pub fn id(&self) -> PluginId {
        PluginId::new(&self.meta.name, &self.meta.version)
    }

    /// Every bind must use a transport the plugin serves.
    pub fn check_binds(&self, binds: &[BindSpec]) -> Result<(), HostError> {
        for spec in binds {
            let (wanted, name) = match spec.transport {
                SocketKind::Tcp | SocketKind::Unix => (Transport::Tcp, "tcp"),
                SocketKind::Udp => (Transport::Udp, "udp"),
            };
            if !self.meta.transports.contains(wanted) {
                return Err(HostError::TransportNotServed {
                    name: self.meta.name.clone(),
                    transport: name,
                    spec: spec.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Refuse option keys the plugin did not declare.
    pub fn check_options(&self, options: &[(String, String)]) -> Result<(), HostError> {
        for (key, _) in options {
            if !self.meta.options.iter().any(|o| &o.name == key) {
                let accepted: Vec<&str> =
                    self.meta.options.iter().map(|o| o.name.as_str()).collect();
                let accepted = if accepted.is_empty() {
                    "it accepts no options".to_string()
                } else {
                    format!("accepted: {}", accepted.join(", "))
                };
                return Err(self.rejected(format!("unknown option {key:?} ({accepted})")));
            }
        }
        Ok(())
    }

    /// Build the factory; the plugin may refuse its options with a message.
    pub fn factory(&self, options: &[(String, String)]) -> Result<Factory, HostError> {
        self.check_options(options)?;
        let sink = crate::logging::plugin_sink();
        self.library
            .factory(options, sink)
            .map_err(|m| self.rejected(m))
    }

    fn rejected(&self, message: String) -> HostError {
        HostError::PluginRejected {
            name: self.meta.name.clone(),
            message,
        }
    }
}

/// `sockhost inspect PATH`: print the metadata and the ABI check result.
pub fn inspect(path: &Path) -> Result<(), HostError> {
    let plugin = Plugin::load(path)?;
    print!("{}", describe(&plugin.meta));
    Ok(())
}

fn describe(meta: &PluginMeta) -> String {
    let mut transports = Vec::new();
    if meta.transports.contains(Transport::Tcp) {
        transports.push("tcp");
    }
    if meta.transports.contains(Transport::Udp) {
        transports.push("udp");
    }
    let mut s = format!(
        "name:        {}\nversion:     {}\ndescription: {}\ntransports:  {}\n",
        meta.name,
        meta.version,
        meta.description,
        transports.join(", ")
    );
    if meta.options.is_empty() {
        s.push_str("options:     none\n");
    } else {
        s.push_str("options:\n");
        for o in &meta.options {
            let default = o
                .default
                .as_deref()
                .map(|d| format!(" (default: {d})"))
                .unwrap_or_default();
            s.push_str(&format!("  {:<12} {}{}\n", o.name, o.help, default));
        }
    }
    s.push_str(&format!(
        "abi:         compatible (plugin built against sockhost-plugin-api {}, host sockhost-plugin-api {}; root module ABI {})\n",
        meta.api_version,
        plugin_api::host::host_api_version(),
        plugin_api::host::root_module_abi(plugin_api::host::host_api_version())
    ));
    s.push_str(&match meta.services_level {
        None => "services:    none (built before host services; root module ABI 0.1)\n".to_string(),
        Some(0) => format!(
            "services:    none needed (host offers level {})\n",
            plugin_api::host::SERVICES_LEVEL
        ),
        Some(level) => format!(
            "services:    level {level} needed (host offers level {})\n",
            plugin_api::host::SERVICES_LEVEL
        ),
    });
    s
}
