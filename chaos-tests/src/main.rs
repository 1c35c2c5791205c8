//! The `sigil-chaos` binary; see [`sigil_chaos::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    sigil_chaos::cli::main()
}
