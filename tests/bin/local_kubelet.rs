//! `stockflow-local-kubelet`: the operator and the test kubelet over a real kube-apiserver,
//! so a region can be tried by hand without Docker:
//!
//! ```sh
//! scripts/cassandra.sh up && scripts/kafka.sh up
//! export KUBECONFIG=$(scripts/kube-apiserver.sh up)
//! cargo run -p stockflow-e2e --bin stockflow-local-kubelet -- --namespace default &
//! kubectl apply -f crds/ && kubectl apply -f config/samples/local.yaml
//! ```
//!
//! Every Job and Deployment replica of the namespace runs as a local `stockflow` process
//! (see `stockflow_e2e::kubelet`); their logs go under `--log-dir`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use kube::Client;
use stockflow_e2e::kubelet::{Kubelet, KubeletConfig};
use stockflow_operator::controller::{self, Context};

#[derive(Parser)]
#[command(about = "Run the stockflow operator and a local kubelet for one namespace")]
struct Args {
    /// The namespace whose regions, Jobs and Deployments to run.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Where pod logs go.
    #[arg(long, default_value = "/tmp/stockflow-local-kubelet")]
    log_dir: PathBuf,
    /// The `stockflow` binary standing in for the image (default: the one built beside
    /// this program).
    #[arg(long, env = "STOCKFLOW_BIN")]
    binary: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client = Client::try_default().await?;
    let kubelet = Kubelet::start(
        client.clone(),
        KubeletConfig {
            namespace: args.namespace.clone(),
            binary: match args.binary {
                Some(binary) => binary,
                None => std::env::current_exe()?
                    .parent()
                    .map(|dir| dir.join("stockflow"))
                    .ok_or("cannot locate the stockflow binary; pass --binary")?,
            },
            log_dir: args.log_dir.clone(),
        },
    );
    let ctx = Arc::new(Context::new(client, Some("local-kubelet".into())));
    let operator = tokio::spawn(controller::run(ctx, Some(args.namespace.clone())));
    println!(
        "operator and kubelet running for namespace {} (pod logs in {}); ctrl-c stops every pod",
        args.namespace,
        args.log_dir.display()
    );
    tokio::signal::ctrl_c().await?;
    operator.abort();
    drop(kubelet);
    Ok(())
}
