//! A deployment of the workflow engine for process-level tests: a fresh PostgreSQL schema,
//! a queue prefix of its own, and `forecourt` processes started against them.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use testkit::{Backend, TestDb};
use uuid::Uuid;
use workflows::amqp::Broker;
use workflows::canary::{Canary, CanaryInput};
use workflows::{Engine, Registry, Status};

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub struct Deployment {
    pub db: TestDb,
    pub prefix: String,
    pub engine: Engine,
}

impl Deployment {
    pub async fn new() -> Deployment {
        let db = TestDb::fresh(Backend::Postgres).await;
        let prefix = format!("t{}", Uuid::new_v4().simple());
        let engine = Engine::new(
            db.db.clone(),
            workflows::canary::register(Registry::default(), db.db.clone()),
        );
        Deployment { db, prefix, engine }
    }

    pub fn spawn(&self, args: &[&str]) -> Proc {
        self.spawn_with(args, &[])
    }

    /// Like [`spawn`](Self::spawn), with more environment.
    pub fn spawn_with(&self, args: &[&str], env: &[(&str, String)]) -> Proc {
        let child = Command::new(env!("CARGO_BIN_EXE_forecourt"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("DATABASE_URL", &self.db.url)
            .env("AMQP_URL", AMQP_URL)
            .env("AMQP_QUEUE_PREFIX", &self.prefix)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file(args))
            .spawn()
            .expect("start forecourt");
        Proc(child)
    }

    pub async fn start_canaries(&self, n: usize, steps: u32) -> Vec<Uuid> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let input = CanaryInput {
                steps,
                record_effects: true,
            };
            ids.push(
                self.engine
                    .start::<Canary>(&format!("canary-{i}"), input)
                    .await
                    .unwrap(),
            );
        }
        ids
    }

    pub async fn completed(&self) -> u64 {
        entities::wf_instances::Entity::find()
            .filter(entities::wf_instances::Column::Status.eq(Status::Completed.as_str()))
            .count(self.engine.db())
            .await
            .unwrap()
    }

    /// Step side effects written so far.
    pub async fn effects(&self) -> u64 {
        entities::wf_canary_effects::Entity::find()
            .count(self.engine.db())
            .await
            .unwrap()
    }

    pub async fn assert_every_effect_once(&self, ids: &[Uuid], steps: u32) {
        use entities::wf_canary_effects as effects;
        let rows = effects::Entity::find().all(self.engine.db()).await.unwrap();
        assert_eq!(
            rows.len(),
            ids.len() * steps as usize,
            "one effect per step of every instance"
        );
        for id in ids {
            let mut mine: Vec<i32> = rows
                .iter()
                .filter(|r| r.instance_id == *id)
                .map(|r| r.step)
                .collect();
            mine.sort_unstable();
            assert_eq!(
                mine,
                (1..=steps as i32).collect::<Vec<_>>(),
                "instance {id}"
            );
            let instance = self.engine.instance(*id).await.unwrap();
            assert_eq!(instance.status, Status::Completed, "{instance:#?}");
        }
    }

    pub async fn remove_queues(&self) {
        let broker = Broker::connect(AMQP_URL, &self.prefix, "test cleanup")
            .await
            .unwrap();
        broker.delete(&self.engine.destinations()).await.unwrap();
        broker.close().await.unwrap();
    }
}

/// With `TEST_PROCESS_LOGS=<dir>`, each process's stderr goes to a file there.
fn log_file(args: &[&str]) -> Stdio {
    match std::env::var("TEST_PROCESS_LOGS") {
        Ok(dir) => {
            let path = format!("{dir}/{}-{}.log", args[0], Uuid::new_v4().simple());
            std::fs::File::create(path)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null())
        }
        Err(_) => Stdio::null(),
    }
}

/// A `forecourt` process that is killed (SIGKILL) when dropped, so that a failing test
/// leaves none behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        kill(self);
    }
}

pub fn kill(proc: &mut Proc) {
    let _ = proc.0.kill();
    let _ = proc.0.wait();
}
