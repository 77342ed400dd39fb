//! Plays a plugin built against a *future* plugin-api, by the compatibility rules of
//! `plugin_api::services_abi`: its services table has one field more than this host knows
//! (appended, as the rules allow), and it declares the services level named by the
//! environment variable `NEXTVER_NEEDS` (default 1, what this host offers). With 1 it must
//! load and serve (the host ignores the appended field); with 2 the host must refuse it with
//! one line naming the level.
//!
//! It echoes, like the echo plugin. It exports the same two symbols `export_plugin!` writes,
//! by hand, so that its services table can be the extended one.

// FFI boundary: this test plugin writes the exported symbols by hand (what export_plugin! writes, with a next version's table).
#![allow(unsafe_code)]

use std::sync::OnceLock;

use plugin_api::services_abi::{HostServices, PluginServices, ServicesGlue};
use plugin_api::{ConnInfo, Consumer, Options, Output, PluginInfo, Protocol};

pub struct Next;
pub struct NextConsumer;

impl Protocol for Next {
    type Consumer = NextConsumer;
    const INFO: PluginInfo =
        PluginInfo::new("nextver", "9.9.9", "a plugin from the next plugin-api").services();

    fn new(_options: &Options) -> Result<Self, String> {
        Ok(Next)
    }

    fn consumer(&self, _info: &ConnInfo) -> NextConsumer {
        NextConsumer
    }
}

impl Consumer for NextConsumer {
    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        out.write(data);
    }
}

/// The services table of "the next version": today's, plus an appended field.
#[repr(C)]
pub struct NextServices {
    base: PluginServices,
    /// A callback a future host might call; this host must not.
    future_hook: extern "C" fn() -> u32,
}

extern "C" fn future_hook() -> u32 {
    42
}

fn table() -> &'static NextServices {
    static TABLE: OnceLock<NextServices> = OnceLock::new();
    TABLE.get_or_init(|| {
        let today = ServicesGlue::<Next>::TABLE;
        let needs = std::env::var("NEXTVER_NEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(today.needs);
        NextServices {
            base: PluginServices {
                size: std::mem::size_of::<NextServices>() as u32,
                needs,
                make_consumer: today.make_consumer,
                tick_interval: today.tick_interval,
                tick: today.tick,
                lifecycle: today.lifecycle,
            },
            future_hook,
        }
    })
}

/// The services handshake, as `export_plugin!` writes it but with the extended table.
///
/// # Safety
/// The host passes a table that lives as long as the process.
#[no_mangle]
pub unsafe extern "C" fn sockhost_services_v1(host: *const HostServices) -> *const PluginServices {
    // SAFETY: forwarded from the host's call.
    unsafe { plugin_api::services_abi::negotiate::<Next>(host) };
    &table().base
}

/// The root module, exactly as `export_plugin!` writes it.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static _1as_0lib_1header_0root_bmodule_bloader: plugin_api::__private::LibHeader = {
    extern "C" fn root() -> plugin_api::__private::RootModuleResult {
        plugin_api::__private::__call_root_module_loader(plugin_api::abi::Glue::<Next>::root_module)
    }
    // SAFETY: the constructor returns the root module of type `PluginModRef`.
    unsafe {
        plugin_api::__private::LibHeader::from_constructor::<plugin_api::abi::PluginModRef>(
            root,
            plugin_api::__private::CheckTypeLayout::Yes,
        )
    }
};
