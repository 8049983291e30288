//! The `arm-double` binary: prints its URL, writes its CA, serves, and stops by itself.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the binary if the test fails before it stops by itself.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn the_binary_serves_with_the_ca_it_wrote_and_stops_after_its_lifetime() {
    let dir = std::env::temp_dir().join(format!("arm-double-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_arm-double"))
            .args(["--lifetime", "3", "--ca-file"])
            .arg(&ca_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the binary starts"),
    );
    let started = Instant::now();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut url = String::new();
    let mut secret = String::new();
    for line in lines.by_ref().take(6) {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("url=") {
            url = u.to_owned();
        }
        if let Some(s) = line.strip_prefix("client_secret=") {
            secret = s.to_owned();
        }
    }
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert!(!secret.is_empty());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(&ca_file).expect("the CA file was written");
    let http = reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()]).build().unwrap();
    let token = http
        .post(format!("{url}/00000000-0000-0000-0000-000000000002/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=client_credentials&client_id=11111111-1111-1111-1111-111111111111&client_secret={secret}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default"))
        .send()
        .await
        .expect("TLS with the written CA");
    assert_eq!(token.status().as_u16(), 200);
    // Bounded wait for the lifetime to end.
    let mut status = None;
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(s) = child.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else { panic!("the binary did not stop after --lifetime 3") };
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
