//! TCP serving: the accept loop ([`accept`]), the per-connection driver ([`connection`]; its
//! output in `output`, host-services work in `work`, its end in `closing`), and the worker's
//! readiness set for accepted sockets ([`reactor`]), and TLS over an accepted stream
//! ([`tls_stream`]).

pub mod accept;
mod closing;
pub mod connection;
mod output;
pub mod reactor;
mod slot;
pub mod tls_stream;
mod work;
