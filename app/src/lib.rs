//! ARD Studio binaries' shared code: the `ard` command line and the `ard-studio` window.

pub mod assets;
pub mod cli;
pub mod gui;
