//! A plugin whose root module claims to be a sockhost plugin built against the same
//! plugin-api version, but whose layout differs (a field changed type, one is missing): the
//! host must refuse it with a clear message instead of calling into it.

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::RStr;
use abi_stable::{declare_root_module_statics, export_root_module, StableAbi};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
pub struct PluginMod {
    pub name: RStr<'static>,
    /// Was `RStr` in plugin-api: a changed type.
    pub version: u64,
    #[sabi(last_prefix_field)]
    pub description: RStr<'static>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "sockhost_plugin";
    const NAME: &'static str = "sockhost plugin";
    // The same version as plugin-api, so that only the layout check can catch it.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.1.0");
}

#[export_root_module]
pub fn root() -> PluginModRef {
    PluginMod {
        name: RStr::from_str("incompatible"),
        version: 7,
        description: RStr::from_str("wrong layout"),
    }
    .leak_into_prefix()
}
