//! `byoc verify` keeps its high-water mark in a GCS bucket (`--state-gcs`, on
//! fake-gcs-server) or an Azure Blob container (`--state-azblob`, on azurite with a SAS in
//! `AZURE_STORAGE_SAS_TOKEN`) as it does in S3: the next run verifies only the new commit,
//! and a rewind is refused. And each flag takes only its own kind of URL.

use super::Signed;

/// Runs verify three times against one store: first run, one new commit, a rewind.
fn high_water_mark_lives_in(flag: &str, url: &str, env: &[(&str, &str)], extra: &[&str]) {
    let mut s = Signed::new();
    s.default_policy();
    s.write("env/a.yaml", "a: 1\n");
    let base = s.commit(Some("alice"), "base");
    let (repo, policy) = (s.repo().display().to_string(), s.dir.path().join("policy.yaml").display().to_string());
    let dir = s.dir.path().to_owned();
    let verify = || {
        let args = [&["verify", "--repo", &repo, "--policy", &policy, flag, url][..], extra].concat();
        crate::support::byoc_env(&dir, &args, env)
    };
    let run = verify();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    s.write("env/b.yaml", "b: 1\n");
    let tip = s.commit(Some("bob"), "add b");
    let run = verify();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("range {}..{}", &base[..12], &tip[..12])), "{}", run.stdout);
    s.git(&["reset", "-q", "--hard", &base]);
    let run = verify();
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("history rewritten: {base} is not a descendant of {tip}")), "{}", run.stdout);
}

#[test]
fn the_high_water_mark_can_live_in_a_gcs_bucket() {
    let bucket = crate::state_gcs::new_bucket();
    let url = format!("gs://{bucket}/envs/prod");
    high_water_mark_lives_in("--state-gcs", &url, &[], &["--endpoint-url", crate::state_gcs::fake_gcs()]);
}

#[test]
fn the_high_water_mark_can_live_in_an_azure_blob_container() {
    let container = crate::state_azblob::new_container();
    let sas = crate::state_azblob::sas();
    high_water_mark_lives_in("--state-azblob", &format!("{container}/envs/prod"), &[("AZURE_STORAGE_SAS_TOKEN", &sas)], &[]);
}

#[test]
fn each_state_flag_takes_only_its_own_kind_of_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (flag, url, why) in [
        ("--state-gcs", "s3://bucket/prefix", "expected gs://BUCKET/PREFIX"),
        ("--state-s3", "gs://bucket/prefix", "expected s3://BUCKET/PREFIX"),
        ("--state-azblob", "gs://bucket/prefix", "not a blob endpoint"),
        ("--state-azblob", "http://acct.blob.core.windows.net/state", "must use https"),
    ] {
        let run = crate::support::byoc(dir.path(), &["verify", "--repo", ".", "--policy", "p.yaml", flag, url]);
        assert_eq!(run.code, 64, "a usage error: {flag} {url}: {}", run.stderr);
        assert!(run.stderr.contains(why), "{flag} {url}: {}", run.stderr);
    }
}
