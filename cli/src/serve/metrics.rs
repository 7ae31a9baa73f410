//! `GET /metrics`: Prometheus text format (0.0.4), encoded by `prometheus-client` from a
//! snapshot taken at each scrape:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `shmplug_plugin_up` | gauge: 1 while the process runs and answers (0 also for a plugin whose process did not start) | `plugin` |
//! | `shmplug_plugin_restarts_total` | counter: processes restarted after a crash or a wedge | `plugin` |
//! | `shmplug_plugin_instances` | gauge: instances the running process confirmed | `plugin`, `kind` |
//! | `shmplug_instance_tuples_in_total` | counter: tuples into a sink or function instance (written, calls sent) | `plugin`, `kind`, `symbol`, `instance`, `pipeline` |
//! | `shmplug_instance_tuples_out_total` | counter: tuples out of a source or function instance (received, answers) | the same |
//! | `shmplug_instance_errors_total` | counter: failed calls, records refused as invalid | the same |
//! | `shmplug_sink_replayed_total` | counter: a sink instance's records written again to a restarted process (at-least-once) | the same |
//! | `shmplug_sink_duplicates_total` | counter: of those, how many the dead process may have collected already | the same |
//! | `shmplug_instance_starvations_total` | counter: episodes in which a source's or function's ring held tuples the host did not read for longer than the supervisor's `starved_after` | the same |
//! | `shmplug_instance_starved_seconds` | gauge: how long the current episode has lasted, 0 while the instance is read | the same |
//! | `shmplug_pipeline_tuples_total` | counter: tuples sent on to the sink | `pipeline` |
//! | `shmplug_pipeline_errors_total` | counter: failed calls, sends and the like | `pipeline` |
//! | `shmplug_pipeline_running` | gauge: 1 until the pipeline ends | `pipeline` |
//! | `shmplug_pipeline_latency_seconds` | histogram: batch received to sent on to the sink, per tuple | `pipeline` |
//! | `shmplug_stage_latency_seconds` | histogram: per tuple, the time its batch spent in one stage | `pipeline`, `stage`, `plugin`, `symbol`, `instance` |
//!
//! The instance counters are the host's data handles' own (`stats()`), read through each
//! plugin's status; an ended pipeline's instances keep their last figures until the pipeline is
//! deleted.

use std::collections::BTreeMap;
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
use shmplug_host::{InstanceStatus, Phase, SymbolKind};

use super::App;
use super::host::Host;
use super::pipelines::{Counters, Pipelines};
use super::reply::ApiError;

/// The content type of Prometheus' text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The server's metrics registry: one collector that reads the plugins' statuses.
pub fn registry(host: Arc<Host>, pipelines: Arc<Pipelines>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Plugins(host.clone())));
    registry.register_collector(Box::new(Instances {
        host,
        pipelines: pipelines.clone(),
    }));
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
        Ok(())
    }
}

/// Per instance counters: those of running instances from their plugins' statuses, and the
/// last ones of the instances of pipelines that ended.
#[derive(Debug)]
struct Instances {
    host: Arc<Host>,
    pipelines: Arc<Pipelines>,
}

/// A counter per instance: its name, help, the kinds of instance that have it, and its value.
type InstanceCounter = (
    &'static str,
    &'static str,
    &'static [SymbolKind],
    fn(&InstanceStatus) -> u64,
);

const INSTANCE_COUNTERS: [InstanceCounter; 6] = [
    (
        "shmplug_instance_tuples_in",
        "Tuples into the instance: written to a sink, calls sent to a function",
        &[SymbolKind::Sink, SymbolKind::Function],
        |i| i.tuples_in,
    ),
    (
        "shmplug_instance_tuples_out",
        "Tuples out of the instance: received from a source, answers from a function",
        &[SymbolKind::Source, SymbolKind::Function],
        |i| i.tuples_out,
    ),
    (
        "shmplug_instance_errors",
        "Calls that failed (the function's error, a crash, a time-out) and records refused \
         as invalid",
        &[SymbolKind::Source, SymbolKind::Sink, SymbolKind::Function],
        |i| i.errors,
    ),
    (
        "shmplug_sink_replayed",
        "Records of a sink instance written again to its restarted process",
        &[SymbolKind::Sink],
        |i| i.replayed,
    ),
    (
        "shmplug_sink_duplicates",
        "Replayed records the dead process may have collected already",
        &[SymbolKind::Sink],
        |i| i.duplicates,
    ),
    (
        "shmplug_instance_starvations",
        "Episodes in which the instance's ring held tuples the host did not read for longer \
         than the supervisor's starved_after",
        &[SymbolKind::Source, SymbolKind::Function],
        |i| i.starvations,
    ),
];

impl Collector for Instances {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // By plugin and instance id: an instance of a pipeline that just ended may still be
        // in its plugin's status; its kept figures are the final ones.
        let mut instances: BTreeMap<(String, u64), InstanceStatus> = BTreeMap::new();
        for status in self.host.statuses().0 {
            for i in status.instances {
                instances.insert((status.name.clone(), i.id), i);
            }
        }
        for (plugin, i) in self.pipelines.ended_instances() {
            instances.insert((plugin, i.id), i);
        }
        for (name, help, kinds, value) in INSTANCE_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for ((plugin, id), i) in &instances {
                if !kinds.contains(&i.kind) {
                    continue;
                }
                let id = id.to_string();
                let labels = [
                    ("plugin", plugin.as_str()),
                    ("kind", kind_label(i.kind)),
                    ("symbol", i.symbol.as_str()),
                    ("instance", id.as_str()),
                    ("pipeline", i.rule_id.as_str()),
                ];
                ConstCounter::new(value(i)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut starved = encoder.encode_descriptor(
            "shmplug_instance_starved_seconds",
            "How long the instance's ring has held tuples the host did not read, once that is \
             longer than the supervisor's starved_after; 0 while it is read",
            None,
            MetricType::Gauge,
        )?;
        for ((plugin, id), i) in &instances {
            if i.kind == SymbolKind::Sink {
                continue;
            }
            let id = id.to_string();
            let labels = [
                ("plugin", plugin.as_str()),
                ("kind", kind_label(i.kind)),
                ("symbol", i.symbol.as_str()),
                ("instance", id.as_str()),
                ("pipeline", i.rule_id.as_str()),
            ];
            let seconds = i.starved_for.map_or(0.0, |d| d.as_secs_f64());
            ConstGauge::new(seconds).encode(starved.encode_family(&labels)?)?;
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
            let buckets = c.latency.prometheus_buckets();
            latency
                .encode_family(&label(c))?
                .encode_histogram::<NoLabelSet>(c.latency.sum, c.latency.count, &buckets, None)?;
        }
        let mut stages = encoder.encode_descriptor(
            "shmplug_stage_latency_seconds",
            "Per tuple, the time its batch spent in one stage of the pipeline: taking it from \
             the source, a function's pipelined calls, the writes to the sink not overlapping \
             the last function's calls (published every second)",
            None,
            MetricType::Histogram,
        )?;
        for c in &counters {
            for stage in &c.stages {
                let instance = stage.instance.to_string();
                let labels = [
                    ("pipeline", c.id.as_str()),
                    ("stage", stage.kind),
                    ("plugin", stage.plugin.as_str()),
                    ("symbol", stage.symbol.as_str()),
                    ("instance", instance.as_str()),
                ];
                let l = &stage.latency;
                stages
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        l.sum,
                        l.count,
                        &l.prometheus_buckets(),
                        None,
                    )?;
            }
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
