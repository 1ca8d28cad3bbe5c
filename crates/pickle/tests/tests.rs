//! Integration tests for weightkit-pickle (one binary, modules per area).
mod checkpoint;
mod vm;
mod zip;
