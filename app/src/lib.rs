//! ARD Studio binaries' shared code: the `ard` command line.

pub mod cli;
