//! `stockflow-operator`: `run` the controller, or print the `crd`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use clap::{Parser, Subcommand};
use stockflow_operator::controller::{self, Context};
use stockflow_operator::error::Error;
use stockflow_operator::leader::LeaderLease;

#[derive(Parser)]
#[command(
    name = "stockflow-operator",
    version,
    about = "InventoryRegion operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the InventoryRegion CRD as YAML (what crds/ holds).
    Crd,
    /// Print the InventoryRegion field reference as Markdown (docs/reference/).
    CrdReference,
    /// Run the controller.
    Run {
        /// Health and metrics address.
        #[arg(long, env = "OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
        http_addr: SocketAddr,
        /// Namespace of the leader-election Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "stockflow-system")]
        lease_namespace: String,
        /// Identity in the Lease (the pod name).
        #[arg(long, env = "POD_NAME", default_value = "stockflow-operator")]
        identity: String,
        /// Run without leader election (a single replica).
        #[arg(long)]
        no_leader_election: bool,
        /// Watch one namespace instead of all.
        #[arg(long, env = "WATCH_NAMESPACE")]
        watch_namespace: Option<String>,
        /// Regions may run only images starting with this prefix (repeatable, or
        /// comma-separated in the env var); end it with `/` or `:` so that
        /// `registry.example.com/stockflow/` does not also allow
        /// `registry.example.com/stockflow-evil`. None: any image (warned at start-up).
        #[arg(
            long = "allowed-image-prefix",
            env = "OPERATOR_ALLOWED_IMAGE_PREFIXES",
            value_delimiter = ','
        )]
        allowed_image_prefixes: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match stockflow_operator::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CrdReference => match stockflow_operator::reference::markdown() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            http_addr,
            lease_namespace,
            identity,
            no_leader_election,
            watch_namespace,
            allowed_image_prefixes,
        } => {
            // JSON logs; a span per reconciliation where OTEL_EXPORTER_OTLP_ENDPOINT is set.
            let traces = stockflow_telemetry::init_tracing(true, "stockflow-operator");
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(run(Settings {
                http_addr,
                lease_namespace,
                identity,
                elect: !no_leader_election,
                watch_namespace,
                allowed_image_prefixes,
            }));
            traces.shutdown();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// What `run` was asked to do.
struct Settings {
    http_addr: SocketAddr,
    lease_namespace: String,
    identity: String,
    elect: bool,
    watch_namespace: Option<String>,
    allowed_image_prefixes: Vec<String>,
}

async fn run(settings: Settings) -> Result<(), Error> {
    let Settings {
        http_addr,
        lease_namespace,
        identity,
        elect,
        watch_namespace,
        allowed_image_prefixes,
    } = settings;
    let allowed_image_prefixes: Vec<String> = allowed_image_prefixes
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if allowed_image_prefixes.is_empty() {
        tracing::warn!(
            "no --allowed-image-prefix: whoever may create an InventoryRegion may run any image \
             with the Secrets of its namespace labelled stockflow.dev/usage=region"
        );
    }
    for prefix in &allowed_image_prefixes {
        if !prefix.ends_with(['/', ':', '@']) {
            tracing::warn!(
                %prefix,
                "an allowed image prefix that does not end with '/', ':' or '@' also allows \
                 every repository whose name merely starts with it"
            );
        }
    }
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| Error::Startup {
        context: "metrics recorder".into(),
        source: e.to_string().into(),
    })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let h = handle.clone();
                async move { h.render() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| Error::Startup {
            context: format!("bind {http_addr}"),
            source: Box::new(e),
        })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    let client = kube::Client::try_default().await?;
    let lease = LeaderLease::new(
        client.clone(),
        &lease_namespace,
        "stockflow-operator",
        &identity,
    );
    if elect {
        lease.acquire().await;
    }
    let ctx = Arc::new(
        Context::new(client, Some(identity)).with_allowed_image_prefixes(allowed_image_prefixes),
    );
    if elect {
        tokio::select! {
            _ = controller::run(ctx, watch_namespace) => Ok(()),
            _ = lease.keep() => Err(Error::LostLeadership),
        }
    } else {
        controller::run(ctx, watch_namespace).await;
        Ok(())
    }
}
