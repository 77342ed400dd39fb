//! TCP serving: the accept loop ([`accept`]), the per-connection driver ([`connection`]; its
//! output in `output`, host-services work in `work`, its end in `closing`), and the worker's
//! readiness set for accepted sockets ([`reactor`]), and TLS over an accepted stream
//! ([`tls_stream`]).

pub mod accept;
mod closing;
pub mod connection;
mod output;
// The worker's epoll set is Linux's; elsewhere tokio registers each connection.
#[cfg_attr(not(target_os = "linux"), path = "reactor_other.rs")]
pub mod reactor;
#[cfg(target_os = "linux")]
#[path = "refuse_linux.rs"]
pub mod refuse;
mod slot;
pub mod tls_stream;
mod work;
