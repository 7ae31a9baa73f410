//! The mirror example plugin, built here so the host tests can find a real SDK plugin
//! executable with `env!("CARGO_BIN_EXE_mirror-plugin")`.

#![forbid(unsafe_code)]

fn main() {
    mirror::main()
}
