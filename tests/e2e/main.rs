//! End-to-end tests: the real `byoc` binary against real git repositories.

mod aws;
mod aws_endpoint_services;
mod aws_hardening;
mod aws_real;
mod azure;
mod bad_specs;
mod gcp;
mod gcp_sidecar;
mod golden;
mod kube;
mod lb_controller;
mod manifests;
mod operating;
mod operating_aws;
mod plan_cases;
mod repo_shapes;

mod reviewed;
mod sidecar_install;
mod state_azblob;
mod state_gcs;
mod state_s3;
mod support;
mod verify;
