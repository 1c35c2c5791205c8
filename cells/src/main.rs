//! The `sigil` binary; see [`sigil_cell::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    sigil_cell::cli::main()
}
