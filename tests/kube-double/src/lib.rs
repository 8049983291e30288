//! A small, state-keeping double of the Kubernetes API server, for tests.
//!
//! No kube-apiserver can be installed on the machines the tests run on (no Debian package,
//! no PyPI or npm binary, envtest downloads at run time), so the reconciler's Kubernetes
//! code is tested against this double instead. It is a double, not an API server: it keeps
//! objects per group/version/resource/namespace/name with uid, resourceVersion and
//! generation (bumped when anything outside metadata and status changes); server-side apply
//! with field managers, conflicts (409 with `FieldManagerConflict` causes) and `force`;
//! create, update, JSON merge patch, the status subresource; list with equality label
//! selectors; delete, namespaces staying `Terminating` for [`Double::set_terminate_after`];
//! `Status` bodies for 400/403/404/409/415/422; `coordination.k8s.io/v1` Leases with
//! resourceVersion-checked replace (409 `Conflict` on a stale one), as leader election uses
//! them; the `default`, `kube-system` and `kube-node-lease` namespaces from the start;
//! besides the core types, Deployments, PodDisruptionBudgets, NetworkPolicies and RBAC
//! objects, refused without the fields the API server requires of them (the sidecar
//! `byoc apply` installs); CRDs with their structural schema judged on
//! write as the API server judges it (pruning of unknown fields and nulls; type with
//! int-or-string, required, enum, items, additionalProperties, minimum, maximum, maxLength,
//! pattern), so the risingwave-operator's real CRD can be loaded; and, when given rules
//! ([`Double::set_rbac`]), RBAC for resource requests ([`rbac`]). No defaulting. It does not do watch, strategic merge patch,
//! list-map merging (lists are atomic), admission, or defaulting beyond a service's
//! clusterIP and a namespace's phase.
//!
//! Two ways in: [`Double::client`] gives a `kube::Client` whose requests the double answers
//! in process, and [`Double::serve`] answers HTTP on a loopback port, for the real `byoc`
//! binary through a kubeconfig.

mod fields;
pub mod operator;
pub mod rbac;
mod schema;
mod store;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

pub use schema::ResourceType;
use store::{ApiError, Store};

/// One request the double answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// The body, as text.
    pub body: String,
    /// The status code answered.
    pub status: u16,
    /// The bearer token sent, if any (the real binary's come from its kubeconfig; the
    /// in-process [`Double::client`] sends none).
    pub token: Option<String>,
    /// `User-Agent`, if sent: how two clients with one field manager are told apart, as the
    /// API server's audit log tells them.
    pub user_agent: Option<String>,
    /// When the request arrived.
    pub at: std::time::SystemTime,
}

/// The double; clones share state.
#[derive(Clone)]
pub struct Double {
    store: Arc<Mutex<Store>>,
    log: Arc<Mutex<Vec<Recorded>>>,
    rbac: Arc<Mutex<Option<rbac::Rbac>>>,
}

impl Double {
    /// A double serving the built-in types and the CRDs given as YAML texts.
    pub fn new(crds: &[&str]) -> anyhow::Result<Double> {
        let mut types = Vec::new();
        for crd in crds {
            types.extend(ResourceType::from_crd(crd)?);
        }
        Ok(Double { store: Arc::new(Mutex::new(Store::new(types))), log: Arc::default(), rbac: Arc::default() })
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long a deleted namespace stays `Terminating` (default 300 ms).
    pub fn set_terminate_after(&self, d: Duration) {
        self.store().terminate_after = d;
    }

    /// Judges every later request by `rbac` (`None`: everything is allowed, the default).
    pub fn set_rbac(&self, rbac: Option<rbac::Rbac>) {
        *self.rbac.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = rbac;
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The requests that were not reads.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method != Method::GET).collect()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    /// A `kube::Client` answered by this double, in process.
    pub fn client(&self) -> kube::Client {
        let double = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let double = double.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let resp = double.handle(Request::from_parts(parts, bytes));
                Ok::<_, Infallible>(resp.map(kube::client::Body::from))
            }
        });
        kube::Client::new(service, "default")
    }

    /// Answers HTTP/1.1 on `listener` until the returned task is aborted or dropped with the
    /// runtime.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let double = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let double = double.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let double = double.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            Ok::<_, Infallible>(double.handle(Request::from_parts(parts, bytes)).map(Full::new))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    // A client that goes away mid-request is its own business.
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        })
    }

    /// Answers one request.
    pub fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        let header = |name| req.headers().get(name).and_then(|v: &http::HeaderValue| v.to_str().ok()).map(str::to_owned);
        let content_type = header(http::header::CONTENT_TYPE);
        let user_agent = header(http::header::USER_AGENT);
        let at = std::time::SystemTime::now();
        let uri = req.uri().to_string();
        let method = req.method().clone();
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let body_text = String::from_utf8_lossy(req.body()).into_owned();
        let (status, body) = match self.route(&req, content_type.as_deref()) {
            Ok((status, v)) => (status, v),
            Err(e) => (StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), e.status()),
        };
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Recorded {
            method,
            uri,
            content_type,
            body: body_text,
            status: status.as_u16(),
            token,
            user_agent,
            at,
        });
        let mut resp = Response::new(Bytes::from(body.to_string()));
        *resp.status_mut() = status;
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        resp
    }

    fn route(&self, req: &Request<Bytes>, content_type: Option<&str>) -> Result<(StatusCode, Value), ApiError> {
        let path = req.uri().path();
        let query: Vec<(String, String)> = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let target = parse_path(path)
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({path})")))?;
        if let Some(rbac) = self.rbac.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().filter(|r| r.judges(req.headers()))
        {
            let verb = rbac::verb(req.method(), target.name.is_some(), matches!(param("watch"), Some("true" | "1")));
            let resource = match &target.subresource {
                Some(sub) => format!("{}/{sub}", target.plural),
                None => target.plural.clone(),
            };
            rbac.check(verb, &target.group, &resource, target.namespace.as_deref(), target.name.as_deref())?;
        }
        let mut store = self.store();
        store.sweep();
        let rt = store
            .resource_type(&target.group, &target.version, &target.plural)
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({path})")))?;
        let ns = target.namespace.clone().unwrap_or_default();
        if rt.namespaced != target.namespace.is_some() && target.name.is_some() {
            return Err(ApiError::new(404, "NotFound", format!("{} is {}namespaced", rt.plural, if rt.namespaced { "" } else { "not " })));
        }
        let body = || -> Result<Value, ApiError> {
            serde_json::from_slice(req.body()).map_err(|e| ApiError::new(400, "BadRequest", format!("the body is not JSON: {e}")))
        };
        let manager = param("fieldManager").unwrap_or("unknown").to_owned();
        let ok = |v| Ok((StatusCode::OK, v));
        match (req.method().clone(), target.name.as_deref(), target.subresource.as_deref()) {
            (Method::GET, None, None) => ok(store.list(&rt, target.namespace.as_deref(), param("labelSelector"))?),
            (Method::GET, Some(name), None | Some("status")) => ok(store.get(&rt, &ns, name)?),
            (Method::POST, None, None) => Ok((StatusCode::CREATED, store.create(&rt, &ns, body()?, &manager)?)),
            (Method::PUT, Some(name), None) => ok(store.update(&rt, &ns, name, None, Some(body()?), &manager)?),
            (Method::PUT, Some(name), Some("status")) => ok(store.update_status(&rt, &ns, name, &body()?, false)?),
            (Method::PATCH, Some(name), sub) => match (content_type, sub) {
                (Some("application/merge-patch+json"), Some("status")) => ok(store.update_status(&rt, &ns, name, &body()?, true)?),
                (Some("application/merge-patch+json"), None) => ok(store.update(&rt, &ns, name, Some(&body()?), None, &manager)?),
                (Some("application/apply-patch+yaml"), None) => {
                    if param("fieldManager").is_none() {
                        return Err(ApiError::new(
                            400,
                            "BadRequest",
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                        ));
                    }
                    let exists = store.get(&rt, &ns, name).is_ok();
                    let out = store.apply(&rt, &ns, name, body()?, &manager, param("force") == Some("true"))?;
                    Ok((if exists { StatusCode::OK } else { StatusCode::CREATED }, out))
                }
                (other, _) => {
                    Err(ApiError::new(415, "UnsupportedMediaType", format!("the double does not support the patch content type {other:?}")))
                }
            },
            (Method::DELETE, Some(name), None) => ok(store.delete(&rt, &ns, name)?),
            (m, _, _) => Err(ApiError::new(405, "MethodNotAllowed", format!("{m} is not supported on {path}"))),
        }
    }
}

/// Where a request goes.
#[derive(Debug, PartialEq)]
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => (String::new(), (*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => ((*group).to_owned(), (*version).to_owned(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        // The namespaces themselves: /api/v1/namespaces[/NAME[/status]].
        ["namespaces"] | ["namespaces", _] | ["namespaces", _, "status"] => (None, rest),
        ["namespaces", ns, rest @ ..] => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    Some(Target {
        group,
        version,
        namespace,
        plural: plural.to_owned(),
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

/// A kubeconfig whose one context points at `server` (e.g. `http://127.0.0.1:8001`).
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {server}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: double\n    namespace: default\ncurrent-context: double\nusers:\n- name: double\n  user:\n    token: double\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_namespaced_and_cluster_scoped_objects() {
        let t = parse_path("/api/v1/namespaces/rw-a").expect("ns");
        assert_eq!((t.plural.as_str(), t.namespace, t.name.as_deref()), ("namespaces", None, Some("rw-a")));
        let t = parse_path("/api/v1/namespaces/rw-a/services/x").expect("svc");
        assert_eq!((t.plural.as_str(), t.namespace.as_deref(), t.name.as_deref()), ("services", Some("rw-a"), Some("x")));
        let t = parse_path("/apis/risingwave.risingwavelabs.com/v1alpha1/namespaces/n/risingwaves/a/status").expect("status");
        assert_eq!((t.group.as_str(), t.subresource.as_deref()), ("risingwave.risingwavelabs.com", Some("status")));
        assert!(parse_path("/healthz").is_none());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let d = Double::new(&[]).expect("double");
        for name in ["a", "b"] {
            let body = format!(
                "{{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{{\"name\":\"{name}\",\"labels\":{{\"x\":\"{name}\"}}}}}}"
            );
            let req = Request::post("/api/v1/namespaces").body(Bytes::from(body)).expect("request");
            assert_eq!(d.handle(req).status(), StatusCode::CREATED);
        }
        let req = Request::get("/api/v1/namespaces?labelSelector=x%3Da%2C%21y").body(Bytes::new()).expect("request");
        let list: Value = serde_json::from_slice(d.handle(req).body()).expect("json");
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "x=a,!y selects one: {list}");
    }
}
