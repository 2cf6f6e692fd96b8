//! What every handler shares: the database, the ledger, settings, keys, metrics, and the
//! broker to probe.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use ledger::Ledger;
use sea_orm::DatabaseConnection;

use crate::crypto::KeyEncryption;
use crate::metrics::Metrics;

/// Settings of the API. [`ApiConfig::default`] states the production values.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// How long a bearer token from login works.
    pub session_ttl: Duration,
    /// How long an `Idempotency-Key` and its stored response are kept; after that the key
    /// may be used again.
    pub idempotency_ttl: Duration,
    /// Accepted distance between a signed request's timestamp and the server's clock.
    pub signature_window: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest time a request may take; past it the client gets 503 `timeout`.
    pub request_timeout: Duration,
    /// Origins allowed to call the API from a browser; none by default (no CORS headers).
    pub cors_origins: Vec<HeaderValue>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            session_ttl: Duration::from_secs(30 * 60),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            signature_window: Duration::from_secs(5 * 60),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            cors_origins: Vec::new(),
        }
    }
}

/// Probes RabbitMQ for `/readyz`, on one connection kept open (and reopened when down).
pub struct BrokerProbe {
    url: String,
    broker: tokio::sync::Mutex<Option<workflows::amqp::Broker>>,
}

impl BrokerProbe {
    pub fn new(url: impl Into<String>) -> Self {
        BrokerProbe {
            url: url.into(),
            broker: tokio::sync::Mutex::new(None),
        }
    }

    /// Opens (and closes) a channel: the broker is reachable and accepts this process.
    pub async fn check(&self) -> anyhow::Result<()> {
        let mut guard = self.broker.lock().await;
        if guard.is_none() {
            *guard = Some(
                workflows::amqp::Broker::connect(&self.url, "forecourt", "forecourt api readiness")
                    .await?,
            );
        }
        let broker = guard.as_ref().expect("connected above");
        let channel = broker.channel().await?;
        let _ = channel.close(200, "readiness probe".into()).await;
        Ok(())
    }
}

/// Shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub ledger: Ledger,
    pub config: Arc<ApiConfig>,
    pub keys: Arc<KeyEncryption>,
    pub metrics: Arc<Metrics>,
    pub broker: Option<Arc<BrokerProbe>>,
    /// The treasury area, where a custodial bank is configured.
    pub treasury: Option<Arc<crate::routes::treasury::TreasuryContext>>,
    /// The payments area, where channel adapters are configured.
    pub payments: Option<Arc<crate::routes::payments::PaymentsContext>>,
}

impl AppState {
    pub fn new(
        db: DatabaseConnection,
        ledger: Ledger,
        config: ApiConfig,
        keys: KeyEncryption,
    ) -> Self {
        AppState {
            db,
            ledger,
            config: Arc::new(config),
            keys: Arc::new(keys),
            metrics: Arc::new(Metrics::default()),
            broker: None,
            treasury: None,
            payments: None,
        }
    }

    /// Enables the treasury area.
    pub fn with_treasury(mut self, treasury: crate::routes::treasury::TreasuryContext) -> Self {
        self.treasury = Some(Arc::new(treasury));
        self
    }

    /// Enables the payments area.
    pub fn with_payments(mut self, payments: crate::routes::payments::PaymentsContext) -> Self {
        self.payments = Some(Arc::new(payments));
        self
    }

    /// Makes `/readyz` check RabbitMQ too.
    pub fn with_broker(mut self, url: impl Into<String>) -> Self {
        self.broker = Some(Arc::new(BrokerProbe::new(url)));
        self
    }
}
