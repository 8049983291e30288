//! Plans a pull request on an environment with 1,000 RisingWave clusters and 1,000 routes:
//! load and validate both revisions from YAML, expand both, plan. Prints the median time of
//! each phase over several runs and the process's peak RSS, against the targets (100 ms,
//! 64 MiB; memory with `--rss-once SCENARIO FORMAT`, in a fresh process, for the mostly
//! unchanged plan, all 1,000 clusters added, and all removed, each rendered as
//! `byoc plan --output FORMAT` renders it). Run: `cargo bench -p byoc-reconciler --bench plan` or tests/bench/plan.sh.

use std::time::{Duration, Instant};

use byoc::expand::{expand, expand_pair};
use byoc::plan::plan;
use byoc::plan::render::{Comments, Report};
use byoc::spec::load::{ParseCache, load, load_cached};
use rwproxy::specfiles::SourceFile;

// The same allocator as the `byoc` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLUSTERS: usize = 1_000;
const RUNS: usize = 9;

fn environment() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/aws/environment.yaml")).expect("example environment")
}

fn cluster(i: usize, compute: u32) -> String {
    format!(
        "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: RisingWaveCluster\nmetadata:\n  name: c{i:04}\nspec:\n  image: risingwavelabs/risingwave:v2.1.0\n  components:\n    meta: {{replicas: 1, cpu: \"1\", memory: 4Gi}}\n    frontend: {{replicas: 2, cpu: \"2\", memory: 4Gi}}\n    compute: {{replicas: {compute}, cpu: \"4\", memory: 16Gi}}\n    compactor: {{replicas: 1, cpu: \"2\", memory: 4Gi}}\n  stateStore:\n    prefix: c{i:04}\n  deletionPolicy: {}\n",
        if i.is_multiple_of(2) { "Retain" } else { "Delete" }
    )
}

fn routes() -> String {
    let mut s = String::from("apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Routes\nmetadata:\n  name: default\nspec:\n  routes:\n");
    for i in 0..CLUSTERS {
        s += &format!("    - {{name: r{i:04}, match: {{sni: c{i:04}.sql.example.com}}, cluster: c{i:04}, allowedCidrs: [10.20.0.0/16]}}\n");
    }
    s
}

/// The base revision, and the head: 10 clusters resized, one removed, one added.
fn revisions() -> (Vec<SourceFile>, Vec<SourceFile>) {
    let file = |path: String, text: String| SourceFile { path, bytes: text.into_bytes() };
    let mut base = vec![file("env/environment.yaml".into(), environment()), file("env/routes.yaml".into(), routes())];
    let mut head = base.clone();
    for i in 0..CLUSTERS {
        base.push(file(format!("env/clusters/c{i:04}.yaml"), cluster(i, 3)));
        if i == 1 {
            continue; // removed in head (its route stays valid: it is re-added below as c1000's)
        }
        head.push(file(format!("env/clusters/c{i:04}.yaml"), cluster(i, if i % 100 == 0 { 6 } else { 3 })));
    }
    // Keep every route valid: c0001 is gone, so its route now targets the new cluster.
    let head_routes = routes().replace("cluster: c0001,", "cluster: c1000,");
    head[1] = file("env/routes.yaml".into(), head_routes);
    head.push(file("env/clusters/c1000.yaml".into(), cluster(1000, 3)));
    (base, head)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A memory figure of this process from /proc/self/status, in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

fn rss_now_kib() -> u64 {
    status_kib("VmRSS:").unwrap_or(0)
}

fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// Which pull request `--rss-once` plans.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// 10 clusters resized, one removed, one added (the timed benchmark's plan).
    Mostly,
    /// All 1,000 clusters and their routes added to an environment that had none.
    AllCreate,
    /// All 1,000 clusters and their routes removed (half are `Retain`: blocked).
    AllDelete,
}

/// The environment alone, with an empty routes table.
fn bare() -> Vec<SourceFile> {
    let file = |path: &str, text: String| SourceFile { path: path.to_owned(), bytes: text.into_bytes() };
    vec![
        file("env/environment.yaml", environment()),
        file(
            "env/routes.yaml",
            "apiVersion: byoc.risingwave.dev/v1alpha1\nkind: Routes\nmetadata:\n  name: default\nspec:\n  routes: []\n".to_owned(),
        ),
    ]
}

/// Counts the bytes a renderer writes, keeping none.
struct Counting(usize);

impl std::io::Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One plan in a fresh process, rendered as `byoc plan --output FORMAT` renders it, then
/// the peak RSS: what planning a PR of this size needs, without the allocator's leftovers
/// from repeated runs.
fn rss_once(scenario: Scenario, format: &str) {
    let probe = |stage: &str| {
        if std::env::var_os("BYOC_RSS_STAGES").is_some() {
            eprintln!("  rss after {stage}: {:.1} MiB", rss_now_kib() as f64 / 1024.0)
        }
    };
    probe("start");
    let (base_files, head_files) = match scenario {
        Scenario::Mostly => revisions(),
        Scenario::AllCreate => (bare(), revisions().0),
        Scenario::AllDelete => (revisions().0, bare()),
    };
    probe("generating files");
    let cache = ParseCache::default();
    let base = load_cached("env", &base_files, &cache).expect("base valid");
    probe("base load");
    let head = load_cached("env", &head_files, &cache).expect("head valid");
    probe("head load");
    // As `byoc plan` does: the file texts go once parsed.
    drop((base_files, head_files, cache));
    let (observed, desired) = expand_pair(Some(&base), &head);
    probe("expand");
    let p = plan(&desired, &observed);
    drop((observed, desired));
    probe("plan");
    let report = Report::new("prod-use1", "aws", "main@sha1:base", "pr@sha1:head", &p);
    let mut out = Counting(0);
    match format {
        "json" => report.write_json(&mut out),
        "text" => report.write_text(&mut out),
        "markdown" => report.write_markdown(&mut out, Comments::One(65_536), ""),
        "markdown-parts" => report.write_markdown(&mut out, Comments::Parts(65_536), ""),
        other => panic!("unknown format {other}"),
    }
    .expect("rendered");
    probe("render");
    let s = p.summary();
    let rss = peak_rss_kib().unwrap_or(0);
    let name = match scenario {
        Scenario::Mostly => "10 resized, 1 removed, 1 added",
        Scenario::AllCreate => "all 1,000 clusters added",
        Scenario::AllDelete => "all 1,000 clusters removed",
    };
    println!(
        "  peak RSS, {name:<31} --output {format:<14} {:>6.1} MiB  (target < 64 MiB: {}); {} steps ({} create, {} delete, {} blocked), {} KiB of output",
        rss as f64 / 1024.0,
        if rss < 64 * 1024 { "met" } else { "MISSED" },
        p.steps.len(),
        s.create,
        s.delete,
        s.blocked,
        out.0 / 1024
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-once") {
        // `--rss-once [mostly|all-create|all-delete] [json|text|markdown|markdown-parts]`
        let scenario = match args.get(i + 1).map(String::as_str) {
            None | Some("mostly") => Scenario::Mostly,
            Some("all-create") => Scenario::AllCreate,
            Some("all-delete") => Scenario::AllDelete,
            Some(other) => panic!("unknown scenario {other}"),
        };
        rss_once(scenario, args.get(i + 2).map_or("json", String::as_str));
        return;
    }
    let (base_files, head_files) = revisions();
    let bytes: usize = head_files.iter().map(|f| f.bytes.len()).sum();
    let (mut t_cold, mut t_load, mut t_expand, mut t_plan, mut t_total) = (vec![], vec![], vec![], vec![], vec![]);
    let mut summary = None;
    let mut resources = 0;
    for _ in 0..RUNS {
        // One revision from nothing: what the live loop pays after a restart.
        let start = Instant::now();
        let cold = load("env", &head_files).expect("head valid");
        let graph = expand(&cold);
        std::hint::black_box(plan(&graph, &byoc::resource::Graph::default()));
        t_cold.push(start.elapsed());

        // A pull request: both revisions, each distinct file parsed once.
        let start = Instant::now();
        let cache = ParseCache::default();
        let base = load_cached("env", &base_files, &cache).expect("base valid");
        let head = load_cached("env", &head_files, &cache).expect("head valid");
        let loaded = Instant::now();
        let (observed, desired) = expand_pair(Some(&base), &head);
        let expanded = Instant::now();
        let p = plan(&desired, &observed);
        let planned = Instant::now();
        t_load.push(loaded - start);
        t_expand.push(expanded - loaded);
        t_plan.push(planned - expanded);
        t_total.push(planned - start);
        resources = desired.len();
        summary = Some(p.summary());
        std::hint::black_box(p);
    }
    let (min, max) = (t_total.iter().min().copied().unwrap_or_default(), t_total.iter().max().copied().unwrap_or_default());
    let total = median(t_total);
    println!(
        "plan benchmark: {CLUSTERS} clusters, {CLUSTERS} routes, {} spec files ({} KiB), {resources} resources per revision, median of {RUNS} runs",
        head_files.len(),
        bytes / 1024
    );
    println!("  one revision from nothing (load+validate+expand+plan): {:>8.2} ms", median(t_cold).as_secs_f64() * 1e3);
    println!("  pull request, base and head:");
    println!("  load+validate both revisions: {:>8.2} ms", median(t_load).as_secs_f64() * 1e3);
    println!("  expand both revisions:        {:>8.2} ms", median(t_expand).as_secs_f64() * 1e3);
    println!("  plan:                         {:>8.2} ms", median(t_plan).as_secs_f64() * 1e3);
    println!(
        "  total:                        {:>8.2} ms   (target < 100 ms: {})",
        total.as_secs_f64() * 1e3,
        if total < Duration::from_millis(100) { "met" } else { "MISSED" }
    );
    // This host's speed varies from run to run; the spread says how far to trust the median.
    println!(
        "  total over {RUNS} runs: min {:.2} ms, median {:.2} ms, max {:.2} ms",
        min.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    println!("  plan summary: {:?}", summary.expect("ran"));
}
