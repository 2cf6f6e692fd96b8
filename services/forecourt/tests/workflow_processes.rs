//! The workflow engine as separate OS processes on PostgreSQL and RabbitMQ: `forecourt
//! scheduler` and several `forecourt worker`s, killed with SIGKILL again and again.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Deployment, kill};
use sea_orm::EntityTrait;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_workflows_finish_while_workers_are_killed_again_and_again() {
    let d = Deployment::new().await;
    // Enough steps that the run outlasts a good number of kills.
    let steps = 20;
    let mut scheduler = d.spawn(&["scheduler"]);
    let mut workers: Vec<_> = (0..3)
        .map(|_| d.spawn(&["worker", "--concurrency", "2"]))
        .collect();
    let ids = d.start_canaries(200, steps).await;

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0usize;
    while d.completed().await < ids.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of 200 finished",
            d.completed().await
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        // SIGKILL a worker mid-flight and start a fresh one; every fifth time the scheduler too.
        let victim = kills % workers.len();
        kill(&mut workers[victim]);
        workers[victim] = d.spawn(&["worker", "--concurrency", "2"]);
        if kills % 5 == 4 {
            kill(&mut scheduler);
            scheduler = d.spawn(&["scheduler"]);
        }
        kills += 1;
    }
    assert!(
        kills >= 5,
        "the run ended after {kills} kills: too few to prove anything"
    );
    let reruns: i64 = entities::wf_canary_effects::Entity::find()
        .all(d.engine.db())
        .await
        .unwrap()
        .iter()
        .map(|e| i64::from(e.runs - 1))
        .sum();
    eprintln!("{kills} kills; {reruns} step activities ran again after a kill or retry");
    d.assert_every_effect_once(&ids, steps).await;
    for w in &mut workers {
        kill(w);
    }
    kill(&mut scheduler);
    d.remove_queues().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_stops_cleanly_on_sigterm() {
    let d = Deployment::new().await;
    let mut worker = d.spawn(&["worker", "--scheduler"]);
    let ids = d.start_canaries(5, 2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.completed().await < ids.len() as u64 {
        assert!(Instant::now() < deadline, "canaries did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = worker.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = worker.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the worker ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "the worker exited with {exit:?} on SIGTERM");
    d.remove_queues().await;
}
