//! `ard`: the ARD Studio command-line tool.

use clap::Parser;

fn main() {
    if let Err(e) = ard_app::cli::run(ard_app::cli::Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
