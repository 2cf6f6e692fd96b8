//! The broker restarts in the middle of a run (`rabbitmqctl stop_app` / `start_app`). Its own
//! test binary, so that no other test shares the broker while it is down.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Deployment, kill};

fn rabbitmqctl(command: &str) {
    let status = Command::new("rabbitmqctl")
        .arg(command)
        .status()
        .expect("run rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {command} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_workflow_finishes_once_when_the_broker_restarts_mid_run() {
    let d = Deployment::new().await;
    let steps = 5;
    let mut scheduler = d.spawn(&["scheduler"]);
    let mut workers: Vec<_> = (0..2)
        .map(|_| d.spawn(&["worker", "--concurrency", "2"]))
        .collect();
    let ids = d.start_canaries(200, steps).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    rabbitmqctl("stop_app");
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl("start_app");
    let deadline = Instant::now() + Duration::from_secs(90);
    while d.completed().await < ids.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of 200 finished after the restart",
            d.completed().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.assert_every_effect_once(&ids, steps).await;
    for w in &mut workers {
        kill(w);
    }
    kill(&mut scheduler);
    d.remove_queues().await;
}
