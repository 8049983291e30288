//! `kube-double`: the Kubernetes API double as a loopback HTTP server, for trying the real
//! `byoc` binary by hand. It prints a kubeconfig to use and stops by itself after
//! `--lifetime` seconds.
//!
//! ```text
//! gzip -dc tests/fixtures/risingwave-operator/risingwaves.crd.yaml.gz > /tmp/rw.crd.yaml
//! cargo run -p kube-double -- --listen 127.0.0.1:8001 --crd /tmp/rw.crd.yaml > /tmp/kubeconfig
//! ```
//!
//! With `--stand-in-operator`, RisingWave objects are reported Running as soon as they are
//! written (see [`kube_double::operator`]), as the demo needs.

use std::time::Duration;

use anyhow::{Context, bail};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut crds = Vec::new();
    let mut lifetime = 3600u64;
    let mut operator = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?,
            "--crd" => {
                let path = value()?;
                crds.push(std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?);
            }
            "--lifetime" => lifetime = value()?.parse().context("--lifetime takes seconds")?,
            "--stand-in-operator" => operator = true,
            other => bail!(
                "unknown argument {other:?}; usage: kube-double [--listen 127.0.0.1:PORT] [--crd FILE]... [--lifetime SECS] [--stand-in-operator]"
            ),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        bail!("the double only listens on loopback addresses, not {addr}");
    }
    let texts: Vec<&str> = crds.iter().map(String::as_str).collect();
    let double = kube_double::Double::new(&texts)?;
    let server = double.serve(listener);
    if operator {
        // Every 50 ms for the double's lifetime.
        tokio::spawn(kube_double::operator::run(double.client(), Duration::from_millis(50), lifetime.saturating_mul(20)));
    }
    println!("{}", kube_double::kubeconfig(&format!("http://{addr}")));
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(lifetime)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.abort();
    Ok(())
}
