//! `gcp-double`: the GCP fake on a loopback port, for trying the provider by hand. It prints
//! its URL (give it to the clients as their endpoint) and stops by itself after `--lifetime`
//! seconds.
//!
//! ```text
//! cargo run -p gcp-double -- --lifetime 600 [--gcs-upstream http://127.0.0.1:4443] [--fault-rate 0.1 --seed 7]
//! ```

use std::time::Duration;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut opts = gcp_double::Options::default();
    let mut lifetime = 3600u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--project" => opts.project = value()?,
            "--region" => opts.region = value()?,
            "--gcs-upstream" => opts.gcs_upstream = Some(value()?),
            "--fault-rate" => opts.fault_rate = value()?.parse().context("--fault-rate takes a share, 0 to 1")?,
            "--seed" => opts.seed = value()?.parse().context("--seed takes a number")?,
            "--operation-polls" => opts.operation_polls = value()?.parse().context("--operation-polls takes a number")?,
            "--disable-service" => opts.disabled_services.push(value()?),
            "--deny-permission" => opts.denied_permissions.push(value()?),
            "--lifetime" => lifetime = value()?.parse().context("--lifetime takes seconds")?,
            other => bail!(
                "unknown argument {other:?}; usage: gcp-double [--project P] [--region R] [--gcs-upstream URL] [--fault-rate F] [--seed N] [--operation-polls N] [--disable-service S]... [--deny-permission P]... [--lifetime SECS]"
            ),
        }
    }
    let double = gcp_double::Double::spawn(opts)?;
    println!("{}", double.url());
    std::thread::sleep(Duration::from_secs(lifetime));
    drop(double);
    Ok(())
}
