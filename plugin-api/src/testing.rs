//! A sans-IO harness for plugin authors: drive a [`Consumer`](crate::Consumer) without
//! sockets. Filled in by the authoring-kit work.
