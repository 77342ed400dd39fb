//! TCP serving: the accept loop ([`accept`]) and the per-connection driver ([`connection`]).

pub mod accept;
pub mod connection;
