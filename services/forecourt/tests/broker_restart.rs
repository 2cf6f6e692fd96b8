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

/// Starts the broker again when dropped, so a failing test does not leave it stopped for the
/// tests that follow.
struct StoppedBroker;

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        let started = Command::new("rabbitmqctl").arg("start_app").status();
        if !std::thread::panicking() {
            assert!(
                started.is_ok_and(|s| s.success()),
                "rabbitmqctl start_app failed"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_workflow_finishes_once_when_the_broker_restarts_mid_run() {
    let d = Deployment::new().await;
    // Long enough that the run outlasts `rabbitmqctl stop_app` (an Erlang VM's start).
    let steps = 40;
    let mut scheduler = d.spawn(&["scheduler"]);
    let mut workers: Vec<_> = (0..2)
        .map(|_| d.spawn(&["worker", "--concurrency", "2"]))
        .collect();
    let ids = d.start_canaries(200, steps).await;
    // The broker goes away once the run is under way, and provably before it is over.
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.effects().await < 100 {
        assert!(Instant::now() < deadline, "the run did not get under way");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rabbitmqctl("stop_app");
    let stopped = StoppedBroker;
    let effects_when_stopped = d.effects().await;
    assert!(
        effects_when_stopped < ids.len() as u64 * u64::from(steps),
        "every step ran before the broker stopped: nothing was tested"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(stopped);
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
