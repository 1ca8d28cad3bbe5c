//! Integration tests for weightkit-io (one binary, modules per area).
mod arch;
mod convert;
mod imatrix;
mod mixture;
mod pipeline;
