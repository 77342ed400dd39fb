//! Plugin-side bridge from the `log` facade to the host's logger.
//!
//! A plugin is its own copy of the `log` crate, so its `log::info!` calls go to this bridge,
//! which forwards each record over the ABI to the host; the host prints it through its own
//! subscriber, tagged with the plugin's name and filtered by `--log-level`.

use std::sync::OnceLock;

use abi_stable::std_types::RStr;

use crate::abi::HostRef;

static HOST: OnceLock<HostRef> = OnceLock::new();

struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(host) = HOST.get() {
            let message = record.args().to_string();
            (host.log())(
                record.level() as u8,
                RStr::from_str(record.target()),
                RStr::from_str(&message),
            );
        }
    }

    fn flush(&self) {}
}

/// Routes this plugin's `log` records to `host`. Called before the factory is built; later
/// calls (a second factory in the same process) keep the first host.
pub(crate) fn install(host: HostRef) {
    let _ = HOST.set(host);
    if log::set_logger(&HostLogger).is_ok() {
        log::set_max_level(level_filter(host.max_level()));
    }
}

fn level_filter(code: u8) -> log::LevelFilter {
    match code {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}
