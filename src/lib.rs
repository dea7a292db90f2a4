//! liengate: a gateway that lenders run to watch the cars they financed.
pub use liengate_protocols as protocols;
