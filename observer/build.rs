//! Embeds the kernel programs' object file in the binary, so `oom-observer` installs as
//! one file. `cargo xtask build-ebpf` produces the object; a plain `cargo build` without it
//! still compiles (for unit tests), and the binary then refuses to run with a clear message.
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rustc-check-cfg=cfg(ebpf_object_missing)");
    println!("cargo:rerun-if-env-changed=OOM_OBSERVER_EBPF_OBJ");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let default = manifest.join("../target/ebpf/bpfel-unknown-none/release/observer-ebpf");
    let src = env::var_os("OOM_OBSERVER_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-changed={}", src.display());
    let out = PathBuf::from(env::var("OUT_DIR")?).join("observer.bpf.o");
    match fs::read(&src) {
        Ok(bytes) => fs::write(&out, bytes)?,
        Err(_) => {
            fs::write(&out, b"")?;
            println!("cargo:rustc-cfg=ebpf_object_missing");
        }
    }
    Ok(())
}
