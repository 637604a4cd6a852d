//! One process per data directory: a second `stockflow dev` on a directory in use is
//! refused at start-up, naming the process that holds it, and the directory is free again
//! the moment that process dies, even by `kill -9`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stockflow_e2e::{DevProcess, free_addr, stockflow_bin};

/// Runs a second `stockflow dev` on `dir`; it must exit by itself (refused) within 20 s.
fn second_dev(dir: &std::path::Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(stockflow_bin())
        .args(["dev", "--partitions", "4", "--data-dir"])
        .arg(dir)
        .arg("--listen")
        .arg(free_addr().to_string())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stockflow runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the second stockflow on a data directory in use did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_data_directory_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevProcess::start(dir.path(), free_addr()).await;

    let (status, stderr) = second_dev(dir.path());
    assert!(!status.success(), "the second process started: {stderr}");
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
