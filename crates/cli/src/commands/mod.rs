//! One module per subcommand, each with a clap `Args` struct and a
//! `run(&Args) -> Result<(), CliError>`.

pub(crate) mod adapter;
pub(crate) mod convert;
pub(crate) mod demo;
pub(crate) mod export;
pub(crate) mod inspect;
pub(crate) mod merge;
mod pipeline;
pub(crate) mod quantize;
