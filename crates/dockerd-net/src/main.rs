//! `dockerd-net`: see the library crate for everything.

fn main() -> std::process::ExitCode {
    dockerd_net::cli::main()
}
