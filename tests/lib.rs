//! Helpers for end-to-end tests: build and run the real `stockflow` binary as a child
//! process, wait for readiness, stop it gracefully or with `kill -9`; [`kubelet`] runs
//! what an operator writes into a real kube-apiserver as such processes.

pub mod kubelet;
pub mod mixed_load;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `stockflow` binary of this workspace, built once per test run (a no-op when fresh).
pub fn stockflow_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("STOCKFLOW_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/<test> → target/<profile>/stockflow
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test runs from target/<profile>/deps");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "stockflow", "--bin", "stockflow"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the stockflow binary failed");
        profile_dir.join("stockflow")
    })
    .clone()
}

/// A setting `scripts/test.sh` exports for the tests (the servers it started).
pub fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is unset: run ./scripts/test.sh, which starts the servers (Cassandra, Kafka, kube-apiserver) and sets it"
        )
    })
}

/// Creates (or updates) warehouse `id` in `region` through the command API at `base`;
/// panics unless it is accepted.
pub async fn put_warehouse(client: &reqwest::Client, base: &str, id: &str, region: &str) {
    let r = client
        .put(format!("{base}/v1/locations/{id}"))
        .json(&serde_json::json!({"region": region, "kind": "warehouse", "name": id}))
        .send()
        .await
        .expect("the command API answers");
    assert!(r.status().is_success(), "PUT location {id}: {}", r.status());
}

/// Runs `stockflow` with `args` to completion; panics with its output on failure.
pub fn run_stockflow(args: &[&str]) {
    stockflow_output(args);
}

/// Runs `stockflow` with `args` to completion and returns what it printed; panics with its
/// output on failure.
pub fn stockflow_output(args: &[&str]) -> String {
    output_of(&stockflow_bin(), args)
}

/// Runs `bin` (this build's `stockflow` or another) with `args` to completion and returns
/// what it printed; panics with its output on failure.
pub fn output_of(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("stockflow runs");
    assert!(
        out.status.success(),
        "stockflow {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates `keyspace` on the test Cassandra at `nodes` with the schema this build needs
/// (replication 1), as the operator's migrate Job does.
pub fn migrate_keyspace(nodes: &str, keyspace: &str) {
    migrate_keyspace_with(&stockflow_bin(), nodes, keyspace);
}

/// Like [`migrate_keyspace`], with the schema that `bin` needs (another build's).
pub fn migrate_keyspace_with(bin: &Path, nodes: &str, keyspace: &str) {
    output_of(
        bin,
        &[
            "migrate",
            "--scylla-nodes",
            nodes,
            "--scylla-keyspace",
            keyspace,
            "--scylla-replication",
            "datacenter1:1",
        ],
    );
}

/// A fresh keyspace `<prefix>_<pid>` of the test Cassandra (`STOCKFLOW_CQL_NODES`),
/// migrated as the operator's Job does.
pub struct TestKeyspace {
    /// Contact points.
    pub nodes: String,
    /// The keyspace.
    pub name: String,
}

impl TestKeyspace {
    /// Creates and migrates it; fails without `STOCKFLOW_CQL_NODES`.
    pub fn migrated(prefix: &str) -> Self {
        let nodes = required("STOCKFLOW_CQL_NODES");
        let name = format!("{prefix}_{}", std::process::id());
        migrate_keyspace(&nodes, &name);
        Self { nodes, name }
    }

    /// The arguments that put `stockflow dev` on it.
    pub fn dev_args(&self) -> [&str; 6] {
        [
            "--store",
            "scylla",
            "--scylla-nodes",
            &self.nodes,
            "--scylla-keyspace",
            &self.name,
        ]
    }

    /// Its storage configuration, for opening it beside the processes.
    pub fn config(&self) -> stockflow_storage::scylla::ScyllaConfig {
        let nodes = self.nodes.split(',').map(str::to_string).collect();
        stockflow_storage::scylla::ScyllaConfig::new(nodes, self.name.clone())
    }
}

/// POSTs `body` to `base` + `path` under Idempotency-Key `key`; the status, or 0 when no
/// answer came within 10 s (a load generator counts what was applied, not why not).
pub async fn post_status(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
    body: serde_json::Value,
) -> u16 {
    client
        .post(format!("{base}{path}"))
        .header("idempotency-key", key)
        .json(&body)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// A free port on 127.0.0.1 (released before the child binds it).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// A running `stockflow dev` child process.
pub struct DevProcess {
    child: Child,
    /// Where it serves HTTP.
    pub addr: SocketAddr,
}

impl DevProcess {
    /// Starts `stockflow dev` on `data_dir` at `addr` and waits until `/readyz` answers.
    pub async fn start(data_dir: &Path, addr: SocketAddr) -> Self {
        Self::start_with(data_dir, addr, &[]).await
    }

    /// Like [`DevProcess::start`], with extra arguments (`--store scylla ...`).
    pub async fn start_with(data_dir: &Path, addr: SocketAddr, extra: &[&str]) -> Self {
        let child = Command::new(stockflow_bin())
            .args(["dev", "--partitions", "4", "--data-dir"])
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("stockflow starts");
        let process = Self { child, addr };
        process.wait_ready().await;
        process
    }

    /// Like [`DevProcess::start`] at a free address, with Kafka at `brokers` as its bus and
    /// `topic` as the topic.
    pub async fn start_on_kafka(data_dir: &Path, brokers: &str, topic: &str) -> Self {
        let bus = [
            "--bus",
            "kafka",
            "--kafka-brokers",
            brokers,
            "--bus-topic",
            topic,
        ];
        Self::start_with(data_dir, free_addr(), &bus).await
    }

    /// Like [`DevProcess::start`] at a free address, with Fluvio at `endpoint` as its bus,
    /// `topic` as the topic, and the events written in `form` (`--fluvio-cloudevents`).
    pub async fn start_on_fluvio(data_dir: &Path, endpoint: &str, topic: &str, form: &str) -> Self {
        let bus = [
            "--bus",
            "fluvio",
            "--fluvio-endpoint",
            endpoint,
            "--bus-topic",
            topic,
            "--fluvio-cloudevents",
            form,
        ];
        Self::start_with(data_dir, free_addr(), &bus).await
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get(format!("http://{}/readyz", self.addr))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "stockflow did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        terminate(&mut self.child, "stockflow");
    }
}

/// The sample `name` (a counter or gauge without labels) of the `/metrics` at `base`, if
/// the process has one.
pub async fn metric(base: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

/// Sends SIGTERM and waits up to 30 s for a successful exit.
fn terminate(child: &mut Child, what: &str) {
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{what} exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment a region's roles share, as the operator sets it: the keyspace at
/// `nodes`, the region, its partition count, a 100 ms outbox scan, and `bus` (the bus's
/// own settings).
pub fn region_env(
    (nodes, keyspace): (&str, &str),
    region: &str,
    partitions: u32,
    bus: Vec<(&'static str, String)>,
) -> Vec<(String, String)> {
    [
        ("STOCKFLOW_SCYLLA_NODES", nodes.to_string()),
        ("STOCKFLOW_SCYLLA_KEYSPACE", keyspace.to_string()),
        ("STOCKFLOW_REGION", region.to_string()),
        ("STOCKFLOW_PARTITIONS", partitions.to_string()),
        ("STOCKFLOW_OUTBOX_SCAN_MS", "100".to_string()),
    ]
    .into_iter()
    .chain(bus)
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A running distributed role (`stockflow command-api`, `publisher`, ...), configured
/// through its environment as a pod would be.
pub struct RoleProcess {
    child: Child,
    /// The role's name.
    pub role: String,
    /// Where it serves HTTP.
    pub addr: SocketAddr,
}

impl RoleProcess {
    /// Starts `stockflow <role>` with `env` (plus `STOCKFLOW_LISTEN`) in an empty working
    /// directory and waits until `/readyz` answers.
    pub async fn start(role: &str, env: &[(String, String)], workdir: &Path) -> Self {
        Self::start_from(&stockflow_bin(), role, env, workdir).await
    }

    /// Like [`RoleProcess::start`], running `bin` (another build's `stockflow`).
    pub async fn start_from(
        bin: &Path,
        role: &str,
        env: &[(String, String)],
        workdir: &Path,
    ) -> Self {
        let process = Self::spawn_from(bin, role, env, workdir);
        process.wait_ready().await;
        process
    }

    /// Starts it without waiting.
    pub fn spawn(role: &str, env: &[(String, String)], workdir: &Path) -> Self {
        Self::spawn_from(&stockflow_bin(), role, env, workdir)
    }

    fn spawn_from(bin: &Path, role: &str, env: &[(String, String)], workdir: &Path) -> Self {
        let addr = free_addr();
        let child = Command::new(bin)
            .arg(role)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("STOCKFLOW_LISTEN", addr.to_string())
            // These tests are about crashes and convergence, not the edge (which
            // services/stockflow/tests/auth.rs covers): the roles serve without tokens.
            .env("STOCKFLOW_INSECURE_NO_AUTH", "true")
            // Their load all comes from this host's one address: no per-address bucket.
            .env("STOCKFLOW_RATE_LIMIT_PER_SECOND", "0")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(workdir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("stockflow starts");
        Self {
            child,
            role: role.to_string(),
            addr,
        }
    }

    /// Base URL of its HTTP API.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("{}/readyz", self.base()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stockflow {} did not become ready",
                self.role
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to exit by itself; returns its exit status.
    pub fn wait_exit(mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "stockflow {} did not exit",
                self.role
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        let what = format!("stockflow {}", self.role);
        terminate(&mut self.child, &what);
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
