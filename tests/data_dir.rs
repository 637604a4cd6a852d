//! One process per data directory: a second `stockflow dev` on a directory in use is
//! refused at start-up, naming the process that holds it, and the directory is free again
//! the moment that process dies, even by `kill -9`.

use std::process::Command;

use stockflow_e2e::{DevProcess, free_addr, stockflow_bin};

fn second_dev(dir: &std::path::Path) -> std::process::Output {
    Command::new(stockflow_bin())
        .args(["dev", "--partitions", "4", "--data-dir"])
        .arg(dir)
        .arg("--listen")
        .arg(free_addr().to_string())
        .env("RUST_LOG", "error")
        .output()
        .expect("stockflow runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_data_directory_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevProcess::start(dir.path(), free_addr()).await;

    let out = second_dev(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second process started: {stderr}"
    );
    assert!(
        stderr.contains("is in use by another stockflow process")
            && stderr.contains(&format!("pid {}", first.pid())),
        "the refusal names the holder: {stderr}"
    );

    // The kernel releases the lock with the process, however it dies.
    first.kill_hard();
    let again = DevProcess::start(dir.path(), free_addr()).await;
    again.stop();
}
