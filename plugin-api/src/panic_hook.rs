//! The plugin's own panic hook, made quiet.
//!
//! A plugin is a `cdylib` with its own copy of std, and so its own panic hook: left as it
//! is, every panic in a callback prints `thread '…' panicked at …` and a note to stderr
//! (a whole backtrace under `RUST_BACKTRACE=1`) before the glue catches it — bypassing the
//! host's logger and `--log-level`, unescaped, once per panic a peer can provoke. The glue
//! already hands the message to the host, which logs it as one escaped, rate-limited line;
//! so the hook prints nothing to stderr.
//!
//! What it does instead: it sends one `debug` record through the plugin's `log` bridge (so
//! `--log-level debug` shows where the panic happened, which the message alone does not
//! say). That also covers panics the glue never sees, on threads the plugin spawned itself.

use std::sync::Once;

/// Replace this plugin's panic hook (once per plugin; later calls do nothing). Called
/// by the glue before the factory is built; a plugin that installs its own hook after that
/// keeps its own.
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(a non-string payload)");
            match info.location() {
                Some(at) => log::debug!("panic at {at}: {message}"),
                None => log::debug!("panic: {message}"),
            }
        }));
    });
}
