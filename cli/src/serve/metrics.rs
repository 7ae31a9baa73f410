//! `GET /metrics`: Prometheus text format (0.0.4), encoded by `prometheus-client` from a
//! snapshot taken at each scrape:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `shmplug_plugin_up` | gauge: 1 while the process runs and answers (0 also for a plugin whose process did not start) | `plugin` |
//! | `shmplug_plugin_restarts_total` | counter: processes restarted after a crash or a wedge | `plugin` |
//! | `shmplug_plugin_instances` | gauge: instances the running process confirmed | `plugin`, `kind` |
//! | `shmplug_sink_replayed_total` | counter: a sink instance's records written again to a restarted process (at-least-once) | `plugin`, `symbol`, `instance`, `rule` |
//! | `shmplug_sink_duplicates_total` | counter: of those, how many the dead process may have collected already | `plugin`, `symbol`, `instance`, `rule` |
//! | `shmplug_pipeline_tuples_total` | counter: tuples sent on to the sink | `pipeline` |
//! | `shmplug_pipeline_errors_total` | counter: failed calls, sends and the like | `pipeline` |
//! | `shmplug_pipeline_running` | gauge: 1 until the pipeline ends | `pipeline` |
//! | `shmplug_pipeline_latency_seconds` | histogram: batch received to sent on to the sink, per tuple | `pipeline` |
//!
//! The host's data handles keep no counters of their own, so tuples and errors are counted per
//! pipeline, where they move.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use shmplug_host::{Phase, SymbolKind};

use super::App;
use super::host::Host;
use super::pipelines::{Counters, LATENCY_BUCKETS, Pipelines};
use super::reply::ApiError;

/// The content type of Prometheus' text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The server's metrics registry: one collector that reads the plugins' statuses.
pub fn registry(host: Arc<Host>, pipelines: Arc<Pipelines>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Plugins(host)));
    registry.register_collector(Box::new(PipelineCounters(pipelines)));
    registry
}

pub async fn scrape(State(app): State<App>) -> Result<impl IntoResponse, ApiError> {
    let text = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &app.metrics).map(|()| text)
    })
    .await
    .map_err(|e| ApiError::internal("collecting metrics", e))?
    .map_err(|e| ApiError::internal("encoding metrics", e))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text))
}

#[derive(Debug)]
struct Plugins(Arc<Host>);

impl Collector for Plugins {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (statuses, failed) = self.0.statuses();
        let mut up = encoder.encode_descriptor(
            "shmplug_plugin_up",
            "1 while the plugin's process runs and answers, else 0",
            None,
            MetricType::Gauge,
        )?;
        for s in &statuses {
            let value = i64::from(s.phase == Phase::Running);
            ConstGauge::new(value).encode(up.encode_family(&[("plugin", s.name.as_str())])?)?;
        }
        for name in &failed {
            ConstGauge::new(0).encode(up.encode_family(&[("plugin", name.as_str())])?)?;
        }
        let mut restarts = encoder.encode_descriptor(
            "shmplug_plugin_restarts",
            "Times the plugin's process was restarted after it died or stopped answering",
            None,
            MetricType::Counter,
        )?;
        for s in &statuses {
            ConstCounter::new(s.restarts)
                .encode(restarts.encode_family(&[("plugin", s.name.as_str())])?)?;
        }
        let mut instances = encoder.encode_descriptor(
            "shmplug_plugin_instances",
            "Source, sink and function instances the plugin's process confirmed",
            None,
            MetricType::Gauge,
        )?;
        for s in &statuses {
            for kind in [SymbolKind::Source, SymbolKind::Sink, SymbolKind::Function] {
                let live = s
                    .instances
                    .iter()
                    .filter(|i| i.kind == kind && i.live)
                    .count();
                let labels = [("plugin", s.name.as_str()), ("kind", kind_label(kind))];
                ConstGauge::new(i64::try_from(live).unwrap_or(i64::MAX))
                    .encode(instances.encode_family(&labels)?)?;
            }
        }
        // At-least-once delivery, per sink instance.
        for (name, help, value) in [
            (
                "shmplug_sink_replayed",
                "Records of a sink instance written again to its restarted process",
                (|i: &shmplug_host::InstanceStatus| i.replayed) as fn(&_) -> u64,
            ),
            (
                "shmplug_sink_duplicates",
                "Replayed records the dead process may have collected already",
                |i: &shmplug_host::InstanceStatus| i.duplicates,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &statuses {
                for i in s.instances.iter().filter(|i| i.kind == SymbolKind::Sink) {
                    let id = i.id.to_string();
                    let labels = [
                        ("plugin", s.name.as_str()),
                        ("symbol", i.symbol.as_str()),
                        ("instance", id.as_str()),
                        ("rule", i.rule_id.as_str()),
                    ];
                    ConstCounter::new(value(i)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct PipelineCounters(Arc<Pipelines>);

impl Collector for PipelineCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = self.0.counters();
        let label = |c: &Counters| [("pipeline", c.id.clone())];
        let mut tuples = encoder.encode_descriptor(
            "shmplug_pipeline_tuples",
            "Tuples the pipeline sent on to its sink",
            None,
            MetricType::Counter,
        )?;
        for c in &counters {
            ConstCounter::new(c.tuples).encode(tuples.encode_family(&label(c))?)?;
        }
        let mut errors = encoder.encode_descriptor(
            "shmplug_pipeline_errors",
            "Failed calls, failed sends and the like in the pipeline",
            None,
            MetricType::Counter,
        )?;
        for c in &counters {
            ConstCounter::new(c.errors).encode(errors.encode_family(&label(c))?)?;
        }
        let mut running = encoder.encode_descriptor(
            "shmplug_pipeline_running",
            "1 until the pipeline ends, then 0",
            None,
            MetricType::Gauge,
        )?;
        for c in &counters {
            ConstGauge::new(i64::from(c.running)).encode(running.encode_family(&label(c))?)?;
        }
        let mut latency = encoder.encode_descriptor(
            "shmplug_pipeline_latency_seconds",
            "Per tuple, from its batch's arrival from the source to its batch sent on to the \
             sink (published every second)",
            None,
            MetricType::Histogram,
        )?;
        for c in &counters {
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .zip(c.latency.buckets.iter().copied())
                .collect();
            latency
                .encode_family(&label(c))?
                .encode_histogram::<NoLabelSet>(c.latency.sum, c.latency.count, &buckets, None)?;
        }
        Ok(())
    }
}

fn kind_label(kind: SymbolKind) -> &'static str {
    match kind {
        SymbolKind::Source => "source",
        SymbolKind::Sink => "sink",
        SymbolKind::Function => "function",
    }
}
