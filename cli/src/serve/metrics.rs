//! `GET /metrics`: what the server has done and holds, in Prometheus' text format, through
//! the `prometheus-client` crate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use mote_host::Hypervisor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::functions::Function;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answer {
    function: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Ending {
    function: String,
    class: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Named {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    function: String,
    state: String,
}

type Histograms = Family<Named, Histogram, fn() -> Histogram>;

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<Answer, Counter>,
    endings: Family<Ending, Counter>,
    latency: Histograms,
    in_flight: Gauge,
    queued: Gauge,
    pool_vms: Family<PoolState, Gauge>,
    budget_used: Gauge<u64, AtomicU64>,
    budget_limit: Gauge<u64, AtomicU64>,
}

/// Call latencies from 50 µs to about 26 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 20))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mote");
        let requests = Family::<Answer, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by function and status",
            requests.clone(),
        );
        let endings = Family::<Ending, Counter>::default();
        registry.register(
            "runs",
            "Calls that reached mote, by how they ended (class and kind as in mote's JSON)",
            endings.clone(),
        );
        let latency: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "call_duration_seconds",
            "Time from a call's arrival to its answer, by function",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests being served",
            in_flight.clone(),
        );
        let queued = Gauge::default();
        registry.register("queued_calls", "Calls waiting for a worker", queued.clone());
        let pool_vms = Family::<PoolState, Gauge>::default();
        registry.register(
            "pool_vms",
            "VMs of each warm function's pool",
            pool_vms.clone(),
        );
        let budget_used = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "memory_budget_used_bytes",
            "Host memory the runs and pools hold against the budget",
            budget_used.clone(),
        );
        let budget_limit = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "memory_budget_bytes",
            "The memory budget",
            budget_limit.clone(),
        );
        Self {
            registry,
            requests,
            endings,
            latency,
            in_flight,
            queued,
            pool_vms,
            budget_used,
            budget_limit,
        }
    }

    pub fn answered(&self, function: &str, status: u16, seconds: f64) {
        let function = function.to_owned();
        self.requests
            .get_or_create(&Answer {
                function: function.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&Named { function })
            .observe(seconds);
    }

    pub fn ended(&self, function: &str, class: &str, kind: &str) {
        self.endings
            .get_or_create(&Ending {
                function: function.to_owned(),
                class: class.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The text a scrape gets, with the gauges read now.
    pub fn encode(
        &self,
        functions: &BTreeMap<String, Arc<Function>>,
        queued: usize,
        hypervisor: &Hypervisor,
    ) -> String {
        self.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
        for (name, function) in functions {
            if let Some((idle, busy)) = function.pool_size() {
                for (state, count) in [("idle", idle), ("busy", busy)] {
                    self.pool_vms
                        .get_or_create(&PoolState {
                            function: name.clone(),
                            state: state.into(),
                        })
                        .set(i64::try_from(count).unwrap_or(i64::MAX));
                }
            }
        }
        let (limit, used) = hypervisor.memory_budget();
        self.budget_used.set(used);
        self.budget_limit.set(limit);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
