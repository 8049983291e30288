//! The real client side: azure_identity's ClientSecretCredential (authority host = the
//! fake) and azure_core's pipeline with its bearer-token policy, over a reqwest client that
//! trusts only the fake's test CA.
#![allow(dead_code, missing_docs)]

use std::sync::Arc;

use arm_double::{Double, Options};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::Secret;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{ClientOptions, Context, Method, Pipeline, PipelineSendOptions, Request, RetryOptions, Transport, Url};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use serde_json::Value;

pub const SUB: &str = "00000000-0000-0000-0000-000000000001";

pub struct Arm {
    pub double: Double,
    pipeline: Pipeline,
}

/// One answer: status, headers (lower-case names), JSON body (Null when empty).
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

fn transport(double: &Double) -> Transport {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(double.ca_pem().as_bytes()).expect("the fake's CA parses");
    let http = reqwest::Client::builder().tls_certs_only([ca]).build().expect("reqwest client");
    Transport::new(Arc::new(http))
}

impl Arm {
    pub fn new(opts: Options) -> Arm {
        Self::with_retry(opts, RetryOptions::none())
    }

    pub fn with_retry(opts: Options, retry: RetryOptions) -> Arm {
        let double = Double::spawn(opts).expect("the fake starts");
        let mut custom = CustomConfiguration::default();
        custom.authority_host = double.url();
        let cloud = CloudConfiguration::Custom(custom);
        let mut cred_options = ClientSecretCredentialOptions::default();
        cred_options.client_options.cloud = Some(Arc::new(cloud));
        cred_options.client_options.transport = Some(transport(&double));
        let tenant = "00000000-0000-0000-0000-000000000002";
        let credential = ClientSecretCredential::new(
            tenant,
            double.client_id().to_owned(),
            Secret::new(double.client_secret().to_owned()),
            Some(cred_options),
        )
        .expect("credential");
        let bearer = BearerTokenAuthorizationPolicy::new(credential, ["https://management.azure.com/.default"]);
        let options = ClientOptions { transport: Some(transport(&double)), retry, ..Default::default() };
        let pipeline = Pipeline::new(Some("arm-double-tests"), Some("0"), options, Vec::new(), vec![Arc::new(bearer)], None);
        Arm { double, pipeline }
    }

    /// Sends `method` to `path` (which includes `?api-version=`).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>, headers: &[(&'static str, &str)]) -> Answer {
        let url = if path.starts_with("https://") { path.to_owned() } else { format!("{}{path}", self.double.url()) };
        let mut req = Request::new(Url::parse(&url).expect("url"), method);
        if let Some(b) = body {
            req.insert_header("content-type", "application/json");
            req.set_body(b.to_string());
        }
        for (k, v) in headers {
            req.insert_header(*k, v.to_string());
        }
        let res = self
            .pipeline
            .send(&Context::new(), &mut req, Some(PipelineSendOptions { skip_checks: true, ..Default::default() }))
            .await
            .expect("the request reaches the fake");
        let status = u16::from(res.status());
        let headers = res.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned())).collect();
        let bytes = res.into_body();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
        Answer { status, headers, body }
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::Put, path, Some(body), &[]).await
    }
    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::Get, path, None, &[]).await
    }
    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::Delete, path, None, &[]).await
    }

    /// Polls an `Azure-AsyncOperation` URL until it is no longer InProgress (bounded).
    pub async fn wait(&self, async_url: &str) -> String {
        for _ in 0..20 {
            let a = self.get(async_url).await;
            let status = a.body["status"].as_str().unwrap_or("").to_owned();
            if status != "InProgress" {
                return status;
            }
        }
        panic!("operation {async_url} still in progress after 20 polls");
    }

    pub async fn group(&self, name: &str) {
        let a = self
            .put(&format!("/subscriptions/{SUB}/resourceGroups/{name}?api-version=2021-04-01"), serde_json::json!({"location": "eastus"}))
            .await;
        assert!(a.status == 201 || a.status == 200, "{} {}", a.status, a.body);
    }

    /// PUTs and waits for a long-running PUT to finish; returns the final GET.
    pub async fn create(&self, path: &str, body: Value) -> Answer {
        let a = self.put(path, body).await;
        assert!([200, 201, 202].contains(&a.status), "PUT {path}: {} {}", a.status, a.body);
        if let Some(url) = a.header("azure-asyncoperation") {
            let url = url.to_owned();
            assert_eq!(self.wait(&url).await, "Succeeded");
        } else if a.status == 202 {
            // Location polling: 202 until done (bounded).
            let url = a.header("location").expect("a 202 names a Location").to_owned();
            for _ in 0..20 {
                if self.get(&url).await.status != 202 {
                    break;
                }
            }
        }
        self.get(path).await
    }
}

pub fn rg_path(rg: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}")
}
