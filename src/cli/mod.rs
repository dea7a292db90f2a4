//! Command-line entry points, one module per subcommand. Each exposes `XArgs` (clap) and `run`.
pub mod decode;
pub mod registry;
pub mod serve;
pub mod sim;
