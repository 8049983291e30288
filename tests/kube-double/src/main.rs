//! `kube-double`: the Kubernetes API double as a loopback HTTP server, for trying the real
//! `byoc` binary by hand. It prints a kubeconfig to use and stops by itself after
//! `--lifetime` seconds. With `--operator` it also stands in for the risingwave-operator
//! (every `RisingWave` reported Running at its generation: [`kube_double::operator`]), and with `--log FILE` it writes
//! one line per write it answered (`MICROS_SINCE_EPOCH METHOD STATUS URI USER-AGENT`), for
//! the daemon benchmark (tests/bench/daemon.sh).
//!
//! ```text
//! gzip -dc tests/fixtures/risingwave-operator/risingwaves.crd.yaml.gz > /tmp/rw.crd.yaml
//! cargo run -p kube-double -- --listen 127.0.0.1:8001 --crd /tmp/rw.crd.yaml > /tmp/kubeconfig
//! ```

use std::time::Duration;

use anyhow::{Context, bail};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut crds = Vec::new();
    let mut lifetime = 3600u64;
    let mut stand_in = false;
    let mut log: Option<String> = None;
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
            "--operator" => stand_in = true,
            "--log" => log = Some(value()?),
            other => bail!(
                "unknown argument {other:?}; usage: kube-double [--listen 127.0.0.1:PORT] [--crd FILE]... [--lifetime SECS] [--operator] [--log FILE]"
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
    println!("{}", kube_double::kubeconfig(&format!("http://{addr}")));
    let helpers = async {
        if stand_in {
            // Every 20 ms for the double's lifetime.
            tokio::spawn(kube_double::operator::run(double.client(), Duration::from_millis(20), lifetime.saturating_mul(50)));
        }
        let Some(path) = log else { return std::future::pending::<anyhow::Result<()>>().await };
        write_log(&double, &path).await
    };
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(lifetime)) => {}
        _ = tokio::signal::ctrl_c() => {}
        r = helpers => r?,
    }
    server.abort();
    Ok(())
}

/// Appends the writes answered to `path` every 10 ms, each with its arrival time.
async fn write_log(double: &kube_double::Double, path: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {path}"))?;
    let mut done = 0;
    loop {
        let requests = double.requests();
        for r in requests.iter().skip(done).filter(|r| r.method != http::Method::GET) {
            let micros = r.at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
            writeln!(file, "{micros} {} {} {} {}", r.method, r.status, r.uri, r.user_agent.as_deref().unwrap_or("-"))?;
        }
        done = requests.len();
        file.flush()?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
