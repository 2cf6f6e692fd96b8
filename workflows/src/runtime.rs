//! The in-process runtime of the embedded mode: workers that take due messages straight from
//! the outbox. Messages still pass through the outbox, so the guarantees are those of the
//! brokered mode: a message is delivered after the transaction that wrote it commits, at
//! least once, and processed once (the inbox drops repeats).

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::engine::Engine;

/// How long an idle worker sleeps before it looks again, unless woken. Bounds the delay of
/// timers and retries, which nothing wakes.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Most messages a worker takes in one transaction.
const BATCH: u64 = 32;

/// Running workers; dropping it does not stop them, [`Workers::shutdown`] does.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Workers {
    /// Starts `event_workers` consumers of workflow messages, `activity_workers` activity
    /// workers and a schedule ticker on the current runtime.
    pub fn spawn(engine: &Engine, event_workers: usize, activity_workers: usize) -> Workers {
        let (stop, _) = watch::channel(false);
        engine.consumes_in_process();
        let mut tasks = JoinSet::new();
        for _ in 0..event_workers {
            let (engine, stop) = (engine.clone(), stop.subscribe());
            tasks.spawn(work(engine, stop, Kind::Events));
        }
        for _ in 0..activity_workers {
            let (engine, stop) = (engine.clone(), stop.subscribe());
            tasks.spawn(work(engine, stop, Kind::Activities));
        }
        tasks.spawn(crate::schedule::run_schedules(
            engine.clone(),
            stop.subscribe(),
        ));
        let (listener, stopped) = (engine.clone(), stop.subscribe());
        tasks.spawn(async move { listener.listen_for_messages(stopped).await });
        Workers { stop, tasks }
    }

    /// Lets every worker finish what it holds, then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Events,
    Activities,
}

async fn work(engine: Engine, mut stop: watch::Receiver<bool>, kind: Kind) {
    loop {
        if *stop.borrow() {
            return;
        }
        // Listen before looking: a wake that comes while this worker looks (and finds
        // nothing yet) is kept, instead of waiting out the idle poll.
        let wake = engine.wake.notified();
        let result = match kind {
            Kind::Events => engine.process_next_events(BATCH).await,
            Kind::Activities => engine.run_next_activities(BATCH).await,
        };
        match result {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(err) => tracing::debug!(error = %err, "worker step failed; retrying"),
        }
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}
