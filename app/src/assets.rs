//! Where the shipped files are: default models, the text encoder, class lists.

use std::path::{Path, PathBuf};

/// `assets/`: `$ARD_ASSETS`, else next to the executable's checkout, else the source tree's.
pub fn assets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ARD_ASSETS") {
        return dir.into();
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .map(|a| a.join("assets"))
            .find(|a| a.join("ard.safetensors").exists())
    });
    from_exe.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets"))
}

/// The shipped text encoder (all-MiniLM-L6-v2) in `assets/text-encoder/`.
pub fn text_encoder_dir() -> PathBuf {
    assets_dir().join("text-encoder")
}
