//! liengate: a gateway that lenders run to watch the cars they financed.
//!
//! See ARCHITECTURE.md for the map of this crate.
pub use liengate_protocols as protocols;

pub mod cli;
pub mod config;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod model;
pub mod net;
pub mod pipeline;
pub mod prefetch;
pub mod registry;
pub mod sched;
pub mod sim;
pub mod store;
