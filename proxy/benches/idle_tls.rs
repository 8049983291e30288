//! Opens N TLS connections to rwproxy (SSLRequest, then a full TLS handshake verified
//! against the given CA) and holds them idle for a few seconds, so the caller can read the
//! proxy's RSS. Used by tests/bench/proxy.sh.
//! Usage: idle_tls PORT COUNT CA_PEM HOLD_SECONDS

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` adds --bench; take the positional arguments after the program name.
    let positional: Vec<&String> = args.iter().skip(1).filter(|a| !a.starts_with("--")).collect();
    let [port, count, ca, hold] = positional.as_slice() else {
        eprintln!("usage: idle_tls PORT COUNT CA_PEM HOLD_SECONDS");
        std::process::exit(2);
    };
    let port: u16 = port.parse().expect("port");
    let count: usize = count.parse().expect("count");
    let hold = Duration::from_secs(hold.parse().expect("seconds"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca.as_str()).expect("ca") {
        roots.add(cert.expect("pem")).expect("add");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let started = Instant::now();
        // 32 handshakes in flight: on a busy machine one at a time takes minutes, longer
        // than a proxy lets a connection sit before its startup message.
        let mut opening = tokio::task::JoinSet::new();
        let mut held = Vec::with_capacity(count);
        let mut failed = 0;
        let mut record = |result: Result<Result<_, std::io::Error>, tokio::task::JoinError>| match result {
            Ok(Ok(s)) => held.push(s),
            _ => failed += 1,
        };
        for _ in 0..count {
            if opening.len() >= 32
                && let Some(done) = opening.join_next().await
            {
                record(done);
            }
            let connector = connector.clone();
            opening.spawn(async move {
                let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let mut request = 8u32.to_be_bytes().to_vec();
                request.extend_from_slice(&80_877_103u32.to_be_bytes());
                tcp.write_all(&request).await?;
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).await?;
                let name = ServerName::try_from("bench.sql.test").expect("name");
                connector.connect(name, tcp).await
            });
        }
        while let Some(done) = opening.join_next().await {
            record(done);
        }
        println!("idle TLS connections: {} open, {failed} failed, opened in {:.1} s", held.len(), started.elapsed().as_secs_f64());
        tokio::time::sleep(hold).await;
        drop(held);
    });
}
