//! A local kubelet for tests: runs the Jobs and Deployments written into a real
//! kube-apiserver as local processes of the `stockflow` binary (the image's entrypoint),
//! since there is no Docker engine here.
//!
//! What it does, as a kubelet would:
//! - each pod runs the container's exact command and args, with exactly the env its
//!   template declares (literal values, ConfigMap and Secret references, `envFrom`,
//!   `fieldRef`s), plus `HOSTNAME` = the pod name; nothing of the test's own environment;
//! - `readOnlyRootFilesystem` is enforced: the process runs in its own mount namespace where
//!   `/` (and `/dev/shm`) are remounted read-only but for its `emptyDir` at `/tmp` (a fresh
//!   directory of the pod, given as `TMPDIR`), and `runAsUser`/`runAsGroup` are applied,
//!   so a role that writes to local disk elsewhere fails here as it would in a pod;
//! - readiness and liveness probes (`httpGet`) are polled (readiness at every step,
//!   liveness every `periodSeconds` with its `timeoutSeconds` and `failureThreshold`); a
//!   dead or unhealthy process is restarted; a changed template is rolled out (new pods first, old ones stopped once the
//!   new ones are ready); Job and Deployment status are written back;
//! - and, standing in for the garbage collector of kube-controller-manager (which does not
//!   run here), children whose `InventoryRegion` owner is gone are deleted.
//!
//! One liberty: every replica shares this machine's loopback, where a pod would have its
//! own IP, so the container port named `http` is served on a free 127.0.0.1 port given to
//! the process in `STOCKFLOW_LISTEN` (the variable the template sets to `0.0.0.0:8080`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodTemplateSpec, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::free_addr;

/// What the kubelet runs: the binary standing in for the image.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The namespace to watch.
    pub namespace: String,
    /// The image's entrypoint.
    pub binary: PathBuf,
    /// Where pods' logs go.
    pub log_dir: PathBuf,
}

/// One running (or restarting) pod.
#[derive(Debug)]
struct Pod {
    /// `Deployment/<name>` or `Job/<name>`.
    owner: String,
    /// Digest of the template it runs.
    template: String,
    child: Option<Child>,
    port: u16,
    ready: bool,
    liveness_failures: u32,
    /// When the liveness probe last ran (it runs every `periodSeconds`, as a kubelet's).
    liveness_probed: Instant,
    restarts: u32,
    started: Instant,
    exit: Option<i32>,
    spec: PodTemplateSpec,
}

/// A pod as the test sees it.
#[derive(Debug, Clone)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// `Deployment/<name>` or `Job/<name>`.
    pub owner: String,
    /// Where it serves HTTP.
    pub port: u16,
    /// Whether its readiness probe passes.
    pub ready: bool,
    /// How often it was restarted.
    pub restarts: u32,
    /// Its process id, while running.
    pub pid: Option<u32>,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Pod>,
    /// Pods started per owner, for unique names.
    serial: BTreeMap<String, u32>,
    /// The status last written per owner, so only changes are written.
    reported: BTreeMap<String, serde_json::Value>,
    /// The pods as of the end of the last step (the pods themselves are out of the lock
    /// while a step probes and starts them).
    views: Vec<PodView>,
}

/// A running kubelet; stops its pods when dropped.
pub struct Kubelet {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
    log_dir: PathBuf,
}

impl Kubelet {
    /// Starts watching `config.namespace`.
    pub fn start(client: Client, config: KubeletConfig) -> Self {
        std::fs::create_dir_all(&config.log_dir).expect("kubelet log directory");
        let state = Arc::new(Mutex::new(State::default()));
        let log_dir = config.log_dir.clone();
        let task = tokio::spawn(run(client, config, state.clone()));
        Self {
            state,
            task,
            log_dir,
        }
    }

    /// Every pod, as of the kubelet's last step (every 250 ms).
    pub fn pods(&self) -> Vec<PodView> {
        self.state.lock().expect("kubelet state").views.clone()
    }

    /// The ready pods of a Deployment.
    pub fn ready_pods(&self, deployment: &str) -> Vec<PodView> {
        let owner = format!("Deployment/{deployment}");
        self.pods()
            .into_iter()
            .filter(|p| p.owner == owner && p.ready)
            .collect()
    }

    /// SIGKILLs a pod's process (the kubelet restarts it).
    pub fn kill(&self, pod: &str) {
        let pid = self
            .pods()
            .into_iter()
            .find(|p| p.name == pod)
            .and_then(|p| p.pid)
            .unwrap_or_else(|| panic!("no running pod {pod}"));
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -KILL {pid}");
    }

    /// The last lines of a pod's log (for failure messages).
    pub fn log_tail(&self, pod: &str) -> String {
        let text =
            std::fs::read_to_string(self.log_dir.join(format!("{pod}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        // An aborted step may hold pods outside the state: reach them by pid too.
        let pids: Vec<String> = state
            .views
            .iter()
            .filter_map(|p| p.pid.map(|pid| pid.to_string()))
            .collect();
        for pod in state.pods.values_mut() {
            stop(pod, Duration::from_secs(5));
        }
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(scratch_root());
    }
}

/// Where this kubelet's pods get their `emptyDir` volumes.
fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("stockflow-kubelet-{}", std::process::id()))
}

fn digest(template: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// SIGTERM, then SIGKILL after `grace`.
fn stop(pod: &mut Pod, grace: Duration) {
    let Some(mut child) = pod.child.take() else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn run(client: Client, config: KubeletConfig, state: Arc<Mutex<State>>) {
    let mut env_cache = EnvSources::new(client.clone(), &config.namespace);
    let mut rounds = 0u64;
    loop {
        if let Err(e) = step(&client, &config, &state, &mut env_cache).await {
            eprintln!("kubelet: {e}");
        }
        rounds += 1;
        if rounds.is_multiple_of(8)
            && let Err(e) = collect_garbage(&client, &config.namespace).await
        {
            eprintln!("kubelet: garbage collection: {e}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes the objects of `K` whose `InventoryRegion` owner no longer exists.
async fn collect<K>(client: &Client, namespace: &str, regions: &[String]) -> Result<(), String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let items = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list: {e}"))?;
    for item in items.items {
        let orphaned = item.owner_references().iter().any(|o| {
            o.kind == "InventoryRegion" && o.controller == Some(true) && !regions.contains(&o.uid)
        });
        if orphaned {
            let _ = api
                .delete(&item.name_any(), &kube::api::DeleteParams::background())
                .await;
        }
    }
    Ok(())
}

/// The garbage collector's part this namespace needs: children of deleted regions go.
async fn collect_garbage(client: &Client, namespace: &str) -> Result<(), String> {
    let resource = kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "stockflow.dev",
        "v1alpha1",
        "InventoryRegion",
    ));
    let regions: Api<kube::core::DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource);
    let uids: Vec<String> = match regions.list(&ListParams::default()).await {
        Ok(list) => list.items.iter().filter_map(|r| r.uid()).collect(),
        // No CRD (yet): nothing can be owned by a region.
        Err(_) => return Ok(()),
    };
    collect::<Deployment>(client, namespace, &uids).await?;
    collect::<Job>(client, namespace, &uids).await?;
    collect::<ConfigMap>(client, namespace, &uids).await?;
    collect::<k8s_openapi::api::core::v1::Service>(client, namespace, &uids).await?;
    collect::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(client, namespace, &uids).await
}

/// ConfigMaps and Secrets of the namespace, read when a pod starts.
struct EnvSources {
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    namespace: String,
}

impl EnvSources {
    fn new(client: Client, namespace: &str) -> Self {
        Self {
            config_maps: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
        }
    }

    async fn config_map(&self, name: &str) -> Result<BTreeMap<String, String>, String> {
        let cm = self
            .config_maps
            .get(name)
            .await
            .map_err(|e| format!("configmap {name}: {e}"))?;
        Ok(cm.data.unwrap_or_default())
    }

    async fn secret(&self, name: &str) -> Result<BTreeMap<String, String>, String> {
        let s = self
            .secrets
            .get(name)
            .await
            .map_err(|e| format!("secret {name}: {e}"))?;
        let mut out: BTreeMap<String, String> = s.string_data.unwrap_or_default();
        for (k, v) in s.data.unwrap_or_default() {
            out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
        }
        Ok(out)
    }

    /// The environment a container declares, resolved.
    async fn resolve(&self, c: &Container, pod: &str) -> Result<Vec<(String, String)>, String> {
        let mut env = BTreeMap::new();
        for from in c.env_from.clone().unwrap_or_default() {
            let prefix = from.prefix.unwrap_or_default();
            let data = if let Some(cm) = from.config_map_ref {
                self.config_map(&cm.name).await?
            } else if let Some(s) = from.secret_ref {
                self.secret(&s.name).await?
            } else {
                BTreeMap::new()
            };
            for (k, v) in data {
                env.insert(format!("{prefix}{k}"), v);
            }
        }
        for var in c.env.clone().unwrap_or_default() {
            let value = if let Some(v) = var.value {
                v
            } else if let Some(from) = var.value_from {
                if let Some(k) = from.config_map_key_ref {
                    let data = self.config_map(&k.name).await?;
                    data.get(&k.key)
                        .cloned()
                        .ok_or_else(|| format!("configmap {} has no key {}", k.name, k.key))?
                } else if let Some(k) = from.secret_key_ref {
                    let data = self.secret(&k.name).await?;
                    data.get(&k.key)
                        .cloned()
                        .ok_or_else(|| format!("secret {} has no key {}", k.name, k.key))?
                } else if let Some(f) = from.field_ref {
                    match f.field_path.as_str() {
                        "metadata.name" => pod.to_string(),
                        "metadata.namespace" => self.namespace.clone(),
                        "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                        other => return Err(format!("fieldRef {other} is not supported")),
                    }
                } else {
                    return Err(format!("env {} has an unsupported source", var.name));
                }
            } else {
                String::new()
            };
            env.insert(var.name, value);
        }
        env.insert("HOSTNAME".into(), pod.to_string());
        Ok(env.into_iter().collect())
    }
}

/// Starts the process of `pod` from its template.
async fn spawn(
    config: &KubeletConfig,
    sources: &EnvSources,
    name: &str,
    pod: &mut Pod,
) -> Result<(), String> {
    let spec = pod.spec.spec.clone().ok_or("template without a pod spec")?;
    let c = spec.containers.first().ok_or("pod without a container")?;
    let mut env = sources.resolve(c, name).await?;
    // The container port `http`: a free loopback port for this replica.
    let listen = format!("127.0.0.1:{}", pod.port);
    env.retain(|(k, _)| k != "STOCKFLOW_LISTEN");
    env.push(("STOCKFLOW_LISTEN".into(), listen));
    let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
    if argv.is_empty() {
        argv.push(config.binary.display().to_string());
    }
    argv.extend(c.args.clone().unwrap_or_default());
    let read_only = c
        .security_context
        .as_ref()
        .and_then(|s| s.read_only_root_filesystem)
        .unwrap_or(false);
    let user = c
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .or(spec.security_context.as_ref().and_then(|s| s.run_as_user));
    let group = c
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_group)
        .or(spec.security_context.as_ref().and_then(|s| s.run_as_group))
        .or(user);
    let mut wrapper: Vec<String> = Vec::new();
    if read_only {
        // Each `emptyDir` the container mounts is a fresh directory of this pod, bound onto
        // itself so it stays writable under the read-only root. The one at `/tmp` (the only
        // path a region mounts one at) is handed over as `TMPDIR` instead of being bound
        // over `/tmp`, where the binary standing in for the image may itself live.
        let mut binds = String::new();
        for m in c.volume_mounts.iter().flatten() {
            let empty = spec
                .volumes
                .iter()
                .flatten()
                .any(|v| v.name == m.name && v.empty_dir.is_some());
            if !empty {
                continue;
            }
            if m.mount_path != "/tmp" {
                return Err(format!(
                    "emptyDir {} at {}: only /tmp is supported",
                    m.name, m.mount_path
                ));
            }
            // Under the machine's /tmp, where the pod's user can reach it (a test's own
            // temporary directory is its owner's only).
            let pods =
                std::env::temp_dir().join(format!("stockflow-kubelet-{}", std::process::id()));
            let dir = pods.join(format!("{name}-{}", m.name));
            std::fs::create_dir_all(&dir).map_err(|e| format!("emptyDir {}: {e}", m.name))?;
            use std::os::unix::fs::PermissionsExt;
            for (path, mode) in [(&pods, 0o755), (&dir, 0o1777)] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("emptyDir {}: {e}", m.name))?;
            }
            binds.push_str(&format!("mount --bind '{0}' '{0}' && ", dir.display()));
            env.push(("TMPDIR".into(), dir.display().to_string()));
        }
        let script = format!(
            "{binds}mount -o remount,bind,ro / && mount -o remount,bind,ro /dev/shm && exec \"$@\""
        );
        wrapper.extend(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ]
            .map(String::from),
        );
        wrapper.push(script);
        wrapper.push("sh".into());
    }
    if let Some(uid) = user {
        let gid = group.unwrap_or(uid);
        wrapper.extend([
            "setpriv".into(),
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
            "--inh-caps=-all".into(),
            "--".into(),
        ]);
    }
    wrapper.extend(argv);
    // Appended across restarts, so a crash's reason survives the next start (what
    // `kubectl logs --previous` shows).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.log_dir.join(format!("{name}.log")))
        .map_err(|e| format!("log file: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
    let child = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .env_clear()
        .envs(env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", wrapper[0]))?;
    eprintln!(
        "kubelet: pod {name} started ({}), http on 127.0.0.1:{}",
        c.args.clone().unwrap_or_default().join(" "),
        pod.port
    );
    pod.child = Some(child);
    pod.started = Instant::now();
    pod.ready = false;
    pod.liveness_failures = 0;
    pod.liveness_probed = pod.started;
    pod.exit = None;
    Ok(())
}

async fn probe(client: &reqwest::Client, port: u16, path: &str, timeout: Duration) -> bool {
    client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(timeout)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// An `httpGet` probe of the pod's container, with Kubernetes' defaults for what it
/// leaves out.
struct HttpProbe {
    path: String,
    period: Duration,
    timeout: Duration,
    failure_threshold: u32,
}

fn http_probe(spec: &PodTemplateSpec, readiness: bool) -> Option<HttpProbe> {
    let c = spec.spec.as_ref()?.containers.first()?;
    let p = if readiness {
        c.readiness_probe.as_ref()
    } else {
        c.liveness_probe.as_ref()
    }?;
    let seconds = |v: Option<i32>, default: u64| {
        Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
    };
    Some(HttpProbe {
        path: p.http_get.as_ref()?.path.clone()?,
        period: seconds(p.period_seconds, 10),
        timeout: seconds(p.timeout_seconds, 1),
        failure_threshold: p
            .failure_threshold
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(3),
    })
}

fn new_pod(owner: String, template: String, spec: PodTemplateSpec) -> Pod {
    Pod {
        owner,
        template,
        child: None,
        port: free_addr().port(),
        ready: false,
        liveness_failures: 0,
        liveness_probed: Instant::now(),
        restarts: 0,
        started: Instant::now(),
        exit: None,
        spec,
    }
}

async fn step(
    client: &Client,
    config: &KubeletConfig,
    state: &Arc<Mutex<State>>,
    sources: &mut EnvSources,
) -> Result<(), String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &config.namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &config.namespace);
    let deployment_list = deployments
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list deployments: {e}"))?;
    let job_list = jobs
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list jobs: {e}"))?;
    let http = reqwest::Client::new();

    // What should run: (owner, template digest, template, replicas).
    let mut wanted: BTreeMap<String, (String, PodTemplateSpec, i32)> = BTreeMap::new();
    for d in &deployment_list.items {
        let Some(spec) = &d.spec else { continue };
        wanted.insert(
            format!("Deployment/{}", d.name_any()),
            (
                digest(&spec.template),
                spec.template.clone(),
                spec.replicas.unwrap_or(1),
            ),
        );
    }
    for j in &job_list.items {
        let done = j
            .status
            .as_ref()
            .is_some_and(|s| s.succeeded.unwrap_or(0) > 0 || s.failed.unwrap_or(0) > 0);
        let Some(spec) = &j.spec else { continue };
        if !done {
            wanted.insert(
                format!("Job/{}", j.name_any()),
                (digest(&spec.template), spec.template.clone(), 1),
            );
        }
    }

    // Take the pods out of the lock while probing and starting processes.
    let mut pods = std::mem::take(&mut state.lock().map_err(|e| e.to_string())?.pods);
    let mut serial = std::mem::take(&mut state.lock().map_err(|e| e.to_string())?.serial);
    let mut reported = std::mem::take(&mut state.lock().map_err(|e| e.to_string())?.reported);

    // Pods whose owner is gone stop.
    let gone: Vec<String> = pods
        .iter()
        .filter(|(_, p)| !wanted.contains_key(&p.owner))
        .map(|(n, _)| n.clone())
        .collect();
    for name in gone {
        if let Some(mut p) = pods.remove(&name) {
            stop(&mut p, Duration::from_secs(10));
        }
    }

    for (owner, (template, spec, replicas)) in &wanted {
        let current: Vec<String> = pods
            .iter()
            .filter(|(_, p)| &p.owner == owner && &p.template == template)
            .map(|(n, _)| n.clone())
            .collect();
        let replicas = usize::try_from(*replicas).unwrap_or(0);
        // Scale up (and roll out: new pods first).
        for _ in current.len()..replicas {
            let n = serial.entry(owner.clone()).or_default();
            *n += 1;
            let base = owner.split('/').nth(1).unwrap_or("pod");
            let name = format!("{base}-{}-{n}", &template[..6]);
            let mut pod = new_pod(owner.clone(), template.clone(), spec.clone());
            if let Err(e) = spawn(config, sources, &name, &mut pod).await {
                eprintln!("kubelet: {name}: {e}");
            }
            pods.insert(name, pod);
        }
        // Scale down: the newest extra pods stop.
        for name in current
            .iter()
            .rev()
            .take(current.len().saturating_sub(replicas))
        {
            if let Some(mut p) = pods.remove(name) {
                stop(&mut p, Duration::from_secs(10));
            }
        }
    }

    // A Job's pod is retried until its backoff limit, then left failed.
    let backoff_limits: BTreeMap<String, u32> = job_list
        .items
        .iter()
        .map(|j| {
            let limit = j.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(6);
            (
                format!("Job/{}", j.name_any()),
                u32::try_from(limit).unwrap_or(0),
            )
        })
        .collect();
    // Status written for owners that no longer exist is forgotten (a Job of the same name
    // may come again, e.g. a region's teardown).
    reported.retain(|owner, _| wanted.contains_key(owner) || backoff_limits.contains_key(owner));

    // Liveness of every process: restart what died (Deployments), record exits (Jobs).
    for (name, pod) in &mut pods {
        let is_job = pod.owner.starts_with("Job/");
        let gave_up = is_job
            && pod.exit.is_some_and(|code| code != 0)
            && backoff_limits
                .get(&pod.owner)
                .is_some_and(|limit| pod.restarts >= *limit);
        let exited = match pod.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten(),
            None => None,
        };
        if let Some(status) = exited {
            pod.child = None;
            pod.ready = false;
            pod.exit = Some(status.code().unwrap_or(-1));
        }
        if pod.child.is_none() && !(is_job && pod.exit == Some(0)) && !gave_up {
            // A crash-looping pod backs off a little, as a kubelet does.
            let backoff = Duration::from_millis(500 * u64::from(pod.restarts.min(6) + 1));
            if pod.started.elapsed() >= backoff {
                pod.restarts += 1;
                if let Err(e) = spawn(config, sources, name, pod).await {
                    eprintln!("kubelet: {name}: {e}");
                }
            }
            continue;
        }
        if pod.child.is_none() {
            continue;
        }
        // Readiness is probed every step (faster than `periodSeconds`, so tests do not
        // wait on it); liveness as a kubelet does, or a slow moment on a loaded machine
        // would restart a healthy process.
        if let Some(readiness) = http_probe(&pod.spec, true) {
            pod.ready = probe(&http, pod.port, &readiness.path, readiness.timeout).await;
        } else {
            pod.ready = true;
        }
        if let Some(liveness) = http_probe(&pod.spec, false)
            && pod.liveness_probed.elapsed() >= liveness.period
        {
            pod.liveness_probed = Instant::now();
            if probe(&http, pod.port, &liveness.path, liveness.timeout).await {
                pod.liveness_failures = 0;
            } else {
                pod.liveness_failures += 1;
                if pod.liveness_failures >= liveness.failure_threshold {
                    eprintln!(
                        "kubelet: {name} failed its liveness probe {} times; restarting",
                        pod.liveness_failures
                    );
                    stop(pod, Duration::from_secs(5));
                }
            }
        }
    }

    // Old template: stopped once the new pods are all ready.
    for (owner, (template, _, replicas)) in &wanted {
        let replicas = usize::try_from(*replicas).unwrap_or(0);
        let new_ready = pods
            .values()
            .filter(|p| &p.owner == owner && &p.template == template && p.ready)
            .count();
        if new_ready >= replicas {
            let old: Vec<String> = pods
                .iter()
                .filter(|(_, p)| &p.owner == owner && &p.template != template)
                .map(|(n, _)| n.clone())
                .collect();
            for name in old {
                if let Some(mut p) = pods.remove(&name) {
                    stop(&mut p, Duration::from_secs(10));
                }
            }
        }
    }

    // Status back to the API server.
    for d in &deployment_list.items {
        let owner = format!("Deployment/{}", d.name_any());
        let Some((template, _, replicas)) = wanted.get(&owner) else {
            continue;
        };
        let mine: Vec<&Pod> = pods.values().filter(|p| p.owner == owner).collect();
        let updated = mine.iter().filter(|p| &p.template == template).count();
        let ready = mine.iter().filter(|p| p.ready).count();
        let updated_ready = mine
            .iter()
            .filter(|p| p.ready && &p.template == template)
            .count();
        let available = usize::try_from(*replicas).unwrap_or(0) <= updated_ready;
        let status = json!({"status": {
            "observedGeneration": d.metadata.generation,
            "kubeletTemplate": template,
            "replicas": mine.len(),
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [{
                "type": "Available",
                "status": if available { "True" } else { "False" },
                "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                "message": format!("{updated_ready} of {replicas} updated replicas ready"),
            }],
        }});
        if reported.get(&owner) == Some(&status) {
            continue;
        }
        let mut body = status.clone();
        if let Some(s) = body["status"].as_object_mut() {
            s.remove("kubeletTemplate");
        }
        match deployments
            .patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                reported.insert(owner, status);
            }
            Err(e) => eprintln!("kubelet: status of {owner}: {e}"),
        }
    }
    for j in &job_list.items {
        let owner = format!("Job/{}", j.name_any());
        let Some(pod) = pods.values().find(|p| p.owner == owner) else {
            continue;
        };
        if reported.contains_key(&owner) {
            continue;
        }
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = match pod.exit {
            Some(0) => {
                json!({"status": {"succeeded": 1, "active": 0, "startTime": now, "completionTime": now,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
                ]}})
            }
            Some(_)
                if backoff_limits
                    .get(&owner)
                    .is_some_and(|limit| pod.restarts >= *limit) =>
            {
                json!({"status": {"failed": 1, "active": 0, "startTime": now,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": "BackoffLimitExceeded"},
                    {"type": "Failed", "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": "BackoffLimitExceeded"}
                ]}})
            }
            // Running: nothing to report until it ends.
            _ => continue,
        };
        match jobs
            .patch_status(
                &j.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
        {
            Ok(_) => {
                reported.insert(owner, status);
            }
            Err(e) => eprintln!("kubelet: status of {owner}: {e}"),
        }
    }

    let mut guard = state.lock().map_err(|e| e.to_string())?;
    guard.views = pods
        .iter()
        .map(|(name, p)| PodView {
            name: name.clone(),
            owner: p.owner.clone(),
            port: p.port,
            ready: p.ready,
            restarts: p.restarts,
            pid: p.child.as_ref().map(Child::id),
        })
        .collect();
    guard.pods = pods;
    guard.serial = serial;
    guard.reported = reported;
    Ok(())
}

/// The directory the kubelet keeps pod logs in, under `base`.
pub fn log_dir(base: &Path) -> PathBuf {
    base.join("pods")
}
