//! `dockerd-net`: the binary. Wiring only; every decision is in `netcore`.
fn main() -> anyhow::Result<()> {
    println!("dockerd-net {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
