//! `arm-double`: the ARM fake as a loopback HTTPS server, for trying the Azure provider by
//! hand. It writes its test CA to a file, prints its URL and credentials, and stops by itself
//! after `--lifetime` seconds.
//!
//! ```text
//! cargo run -p arm-double -- --ca-file /tmp/arm-ca.pem --lifetime 600
//! ```

use std::time::Duration;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut lifetime = 3600u64;
    let mut ca_file = "arm-double-ca.pem".to_owned();
    let mut opts = arm_double::Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?,
            "--lifetime" => lifetime = value()?.parse().context("--lifetime takes seconds")?,
            "--ca-file" => ca_file = value()?,
            "--polls" => opts.provisioning_polls = value()?.parse().context("--polls takes a count")?,
            "--throttle" => opts.throttle_rate = value()?.parse().context("--throttle takes a share, 0.0 to 1.0")?,
            "--unregistered-provider" => opts.unregistered_providers.push(value()?),
            "--unregistered-feature" => opts.unregistered_features.push(value()?),
            other => bail!(
                "unknown argument {other:?}; usage: arm-double [--listen 127.0.0.1:PORT] [--lifetime SECS] [--ca-file FILE] [--polls N] [--throttle RATE] [--unregistered-provider NS]... [--unregistered-feature NS/NAME]..."
            ),
        }
    }
    let tenant = opts.tenant.clone();
    let subscription = opts.subscription.clone();
    let double = arm_double::Double::spawn_on(&listen, opts)?;
    std::fs::write(&ca_file, double.ca_pem()).with_context(|| format!("writing the test CA to {ca_file}"))?;
    println!("url={}", double.url());
    println!("ca_file={ca_file}");
    println!("tenant={tenant}");
    println!("subscription={subscription}");
    println!("client_id={}", double.client_id());
    println!("client_secret={}", double.client_secret());
    std::thread::sleep(Duration::from_secs(lifetime));
    Ok(())
}
