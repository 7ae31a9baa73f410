//! Pipelines through the API: the same TOML or JSON body as a `shmplug run` file, run on the
//! server's plugin processes (so they are supervised like the rest, and their instances are
//! replayed after a plugin restart or update).
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /pipelines[?id=ID]` with the pipeline | 201 `{"id": ID}`: its instances started, tuples moving |
//! | `GET /pipelines` | 200, a JSON array: each pipeline's id, state, counters |
//! | `GET /pipelines/{id}` | 200, the same for one, with its plugins as `shmplug status` shows them |
//! | `DELETE /pipelines/{id}` | 200 `pipeline ID is stopped`: its instances stopped, and forgotten |
//!
//! A pipeline that ends by itself (its source ended, its limits were reached, it failed) stays
//! listed with the reason until it is deleted. Its instances belong to rule `ID`, which a
//! plugin's `/status` counts in `refCount`.

use std::collections::BTreeMap;
use std::path::Path as FilePath;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use shmplug_host::{FunctionClient, InstanceStatus, Plugin, SinkWriter, SourceReader};

use super::host::{Host, Process};
use super::reply::{self, ApiError};
use super::{App, BODY_LIMIT};
use crate::live::{self, PluginSnapshot, plugin_snapshot};
use crate::pipeline::Pipeline;
use crate::pump::{Outcome, Pump, Step};
use crate::stages::Stages;

/// Most tuples moved at once (as `shmplug run` does).
const BATCH: usize = 256;
/// How long one step waits for the source: also how soon a stop is noticed.
const STEP_WAIT: Duration = Duration::from_millis(100);

/// Upper bounds of the buckets of `shmplug_pipeline_latency_seconds`, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.1, 1.0,
];
/// How often a pipeline publishes its latency histogram.
const LATENCY_EVERY: Duration = Duration::from_secs(1);

/// A pipeline's latencies (batch received to sent on to the sink, per tuple) in the buckets of
/// [`LATENCY_BUCKETS`]: the count in each (not cumulative; above the last: only in `count`).
#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub buckets: Vec<u64>,
    pub count: u64,
    /// Of every latency, in seconds (from the recording histogram: 3 significant digits).
    pub sum: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        let mut buckets = vec![0; LATENCY_BUCKETS.len()];
        for value in histogram.iter_recorded() {
            let secs = value.value_iterated_to() as f64 / 1e9;
            if let Some(i) = LATENCY_BUCKETS.iter().position(|bound| secs <= *bound) {
                buckets[i] += value.count_at_value();
            }
        }
        let count = histogram.len();
        Latency {
            buckets,
            count,
            sum: histogram.mean() * count as f64 / 1e9,
        }
    }

    /// Each bucket's upper bound and count (not cumulative: the encoder adds them up), the
    /// last one `+Inf` with the latencies above [`LATENCY_BUCKETS`].
    pub fn prometheus_buckets(&self) -> Vec<(f64, u64)> {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .enumerate()
            .map(|(i, bound)| (*bound, self.buckets.get(i).copied().unwrap_or(0)))
            .collect();
        let bounded: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::INFINITY, self.count.saturating_sub(bounded)));
        buckets
    }
}

/// One pipeline's figures for `/metrics`.
#[derive(Debug)]
pub struct Counters {
    pub id: String,
    pub tuples: u64,
    pub errors: u64,
    pub running: bool,
    pub latency: Latency,
    /// Per stage, in pipeline order.
    pub stages: Vec<Stage>,
}

/// One stage of a pipeline (its source, a function, its sink): the instance and its
/// latencies (per tuple, the time its batch spent in the stage; see `pump::Stats::stages`).
#[derive(Clone, Debug)]
pub struct Stage {
    /// `source`, `function` or `sink`.
    pub kind: &'static str,
    pub plugin: String,
    pub symbol: String,
    pub instance: u64,
    pub latency: Latency,
}

/// What a pipeline's thread publishes besides its counters.
#[derive(Debug, Default)]
struct Figures {
    stages: Vec<Stage>,
    /// Once it ended: its instances' counters as they were last (the instances themselves are
    /// gone from their plugins' statuses), with their plugin's name.
    instances: Vec<(String, InstanceStatus)>,
}

/// The server's pipelines, by id.
#[derive(Debug, Default)]
pub struct Pipelines {
    next: AtomicU64,
    runs: Mutex<BTreeMap<String, Arc<Run>>>,
}

/// One pipeline: its counters (published by its thread once per batch) and its end.
#[derive(Debug)]
pub struct Run {
    id: String,
    started: Instant,
    started_unix_ms: u64,
    tuples: AtomicU64,
    errors: AtomicU64,
    latency: Mutex<Latency>,
    figures: Mutex<Figures>,
    stop: AtomicBool,
    /// Why it ended, and when (since `started`).
    ended: Mutex<Option<(String, Duration)>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The plugins it uses, in pipeline order; weak, so deleting a plugin still stops its
    /// process (and the pipeline then fails, as an eKuiper rule does).
    plugins: Vec<(String, Weak<Plugin>)>,
}

/// A pipeline as the API shows it.
#[derive(Debug, Serialize)]
pub struct Shown {
    id: String,
    /// `running` or `ended`.
    state: &'static str,
    /// Why it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended: Option<String>,
    started_unix_ms: u64,
    uptime_secs: f64,
    tuples: u64,
    tuples_per_sec: f64,
    errors: u64,
    /// Its plugins, as `shmplug status` shows them (in `GET /pipelines/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    plugins: Option<Vec<PluginSnapshot>>,
}

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Started {
    id: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a poisoned lock is used as it is.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pipelines {
    fn get(&self, id: &str) -> Option<Arc<Run>> {
        lock(&self.runs).get(id).cloned()
    }

    /// Every pipeline's figures (for `/metrics`).
    pub fn counters(&self) -> Vec<Counters> {
        lock(&self.runs)
            .values()
            .map(|r| Counters {
                id: r.id.clone(),
                tuples: r.tuples.load(Ordering::Relaxed),
                errors: r.errors.load(Ordering::Relaxed),
                running: lock(&r.ended).is_none(),
                latency: lock(&r.latency).clone(),
                stages: lock(&r.figures).stages.clone(),
            })
            .collect()
    }

    /// The instances of the pipelines that ended, with their plugin's name and their last
    /// counters.
    pub fn ended_instances(&self) -> Vec<(String, InstanceStatus)> {
        lock(&self.runs)
            .values()
            .flat_map(|r| lock(&r.figures).instances.clone())
            .collect()
    }

    /// Stops every pipeline and waits for each to end (blocking).
    pub fn stop_all(&self) {
        let runs: Vec<Arc<Run>> = std::mem::take(&mut *lock(&self.runs))
            .into_values()
            .collect();
        for run in runs {
            run.stop_and_wait();
        }
    }
}

impl Run {
    fn stop_and_wait(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("pipeline `{}`: its thread panicked", self.id);
        }
    }

    fn show(&self, with_plugins: bool) -> Shown {
        let ended = lock(&self.ended).clone();
        // An ended pipeline's figures stay those of its run.
        let uptime = ended
            .as_ref()
            .map_or_else(|| self.started.elapsed(), |(_, at)| *at)
            .as_secs_f64();
        let ended = ended.map(|(reason, _)| reason);
        let tuples = self.tuples.load(Ordering::Relaxed);
        let plugins = with_plugins.then(|| {
            self.plugins
                .iter()
                .filter_map(|(_, plugin)| plugin.upgrade())
                .map(|plugin| plugin_snapshot(&plugin))
                .collect()
        });
        Shown {
            id: self.id.clone(),
            state: if ended.is_some() { "ended" } else { "running" },
            ended,
            started_unix_ms: self.started_unix_ms,
            uptime_secs: uptime,
            tuples,
            tuples_per_sec: live::per_second(tuples, uptime),
            errors: self.errors.load(Ordering::Relaxed),
            plugins,
        }
    }
}

pub async fn start(
    State(app): State<App>,
    Query(query): Query<StartQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    const CONTEXT: &str = "create pipeline error";
    let body = reply::body(body, BODY_LIMIT)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request(CONTEXT, "the pipeline is not UTF-8 text"))?;
    // The same parser as `shmplug run`: JSON for an object, TOML otherwise.
    let label = if text.trim_start().starts_with('{') {
        "request-body.json"
    } else {
        "request-body.toml"
    };
    let pipeline = Pipeline::parse(text, FilePath::new(label))
        .map_err(|e| ApiError::bad_request(CONTEXT, e))?;
    let _change = app.host.change().await;
    let id = match query.id {
        Some(id) => {
            validate_id(&id).map_err(|e| ApiError::bad_request(CONTEXT, e))?;
            if app.pipelines.get(&id).is_some() {
                return Err(ApiError::bad_request(
                    CONTEXT,
                    format!("pipeline {id} already exists: DELETE /pipelines/{id} first"),
                ));
            }
            id
        }
        None => loop {
            let n = app.pipelines.next.fetch_add(1, Ordering::Relaxed) + 1;
            let id = format!("pipeline-{n}");
            if app.pipelines.get(&id).is_none() {
                break id;
            }
        },
    };
    let host = app.host.clone();
    let opened = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || open(&host, &id, pipeline))
            .await
            .map_err(|e| ApiError::internal("starting the pipeline", e))?
    };
    let (run, opened) = opened.map_err(|e| ApiError::bad_request(CONTEXT, e))?;
    let run = Arc::new(run);
    let thread = {
        let run = run.clone();
        std::thread::Builder::new()
            .name(format!("shmplug-{id}"))
            .spawn(move || pump(&run, opened))
            .map_err(|e| ApiError::internal("starting the pipeline's thread", e))?
    };
    *lock(&run.thread) = Some(thread);
    lock(&app.pipelines.runs).insert(id.clone(), run);
    tracing::info!("started pipeline `{id}`");
    Ok((StatusCode::CREATED, Json(Started { id })))
}

pub async fn list(State(app): State<App>) -> Json<Vec<Shown>> {
    let runs: Vec<Arc<Run>> = lock(&app.pipelines.runs).values().cloned().collect();
    Json(runs.iter().map(|r| r.show(false)).collect())
}

pub async fn inspect(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Json<Shown>, ApiError> {
    let run = app
        .pipelines
        .get(&id)
        .ok_or_else(|| ApiError::not_found(&format!("describe pipeline {id} error")))?;
    let shown = tokio::task::spawn_blocking(move || run.show(true))
        .await
        .map_err(|e| ApiError::internal("reading the pipeline", e))?;
    Ok(Json(shown))
}

pub async fn stop(State(app): State<App>, Path(id): Path<String>) -> Result<String, ApiError> {
    let run = lock(&app.pipelines.runs)
        .remove(&id)
        .ok_or_else(|| ApiError::not_found(&format!("stop pipeline {id} error")))?;
    tokio::task::spawn_blocking(move || run.stop_and_wait())
        .await
        .map_err(|e| ApiError::internal("stopping the pipeline", e))?;
    tracing::info!("stopped pipeline `{id}`");
    Ok(format!("pipeline {id} is stopped"))
}

/// A pipeline's open handles and limits, moved into its thread.
struct Opened {
    source: SourceReader,
    calls: Vec<(FunctionClient, Step)>,
    sink: SinkWriter,
    count: Option<u64>,
    duration: Option<Duration>,
}

/// Opens `pipeline`'s instances on the server's plugin processes (blocking).
fn open(host: &Host, id: &str, pipeline: Pipeline) -> Result<(Run, Opened), String> {
    let mut plugins: BTreeMap<String, Arc<Plugin>> = BTreeMap::new();
    for name in pipeline.plugins() {
        match host.process(&name) {
            Some(Process::Started(plugin)) => {
                plugins.insert(name, plugin);
            }
            Some(Process::Failed(e)) => {
                return Err(format!("plugin `{name}` did not start: {e}"));
            }
            None => {
                return Err(format!(
                    "the pipeline uses plugin `{name}`, which is not installed (see GET \
                     /plugins/portables)"
                ));
            }
        }
    }
    // As `shmplug run` opens them: symbols checked first, the source before the sink.
    let Stages {
        calls,
        source,
        sink,
    } = crate::stages::open(&pipeline, |name| plugins.get(name).map(|p| &**p), id)
        .map_err(|e| e.to_string())?;
    let run = Run {
        id: id.to_owned(),
        started: Instant::now(),
        started_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        tuples: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latency: Mutex::new(Latency::default()),
        figures: Mutex::default(),
        stop: AtomicBool::new(false),
        ended: Mutex::new(None),
        thread: Mutex::new(None),
        plugins: pipeline
            .plugins()
            .into_iter()
            .map(|name| {
                let weak = Arc::downgrade(&plugins[&name]);
                (name, weak)
            })
            .collect(),
    };
    let opened = Opened {
        source,
        calls,
        sink,
        count: pipeline.limits.count,
        duration: pipeline.limits.duration_secs.map(Duration::from_secs_f64),
    };
    Ok((run, opened))
}

/// The pipeline's thread: moves batches until it is stopped, its source ends, a limit is
/// reached or it fails; then stops its instances and records why it ended.
fn pump(run: &Run, opened: Opened) {
    let Opened {
        mut source,
        mut calls,
        mut sink,
        count,
        duration,
    } = opened;
    let mut pump = Pump::new(calls.len());
    let stage = |kind, plugin: &str, symbol: &str, instance| Stage {
        kind,
        plugin: plugin.to_owned(),
        symbol: symbol.to_owned(),
        instance,
        latency: Latency::default(),
    };
    let mut stages = vec![stage(
        "source",
        source.plugin(),
        source.symbol(),
        source.instance_id(),
    )];
    for (client, _) in &calls {
        stages.push(stage(
            "function",
            client.plugin(),
            client.symbol(),
            client.instance_id(),
        ));
    }
    stages.push(stage(
        "sink",
        sink.plugin(),
        sink.symbol(),
        sink.instance_id(),
    ));
    lock(&run.figures).stages = stages;
    let publish_latencies = |pump: &Pump| {
        *lock(&run.latency) = Latency::of(&pump.stats.latency);
        let mut figures = lock(&run.figures);
        for (stage, histogram) in figures.stages.iter_mut().zip(&pump.stats.stages) {
            stage.latency = Latency::of(histogram);
        }
    };
    let mut published = Instant::now();
    let end = loop {
        if run.stop.load(Ordering::Relaxed) {
            break "stopped".to_owned();
        }
        let tuples = pump.stats.tuples;
        if count.is_some_and(|c| tuples >= c) {
            break "count reached".to_owned();
        }
        if duration.is_some_and(|d| run.started.elapsed() >= d) {
            break "duration reached".to_owned();
        }
        let limit = count.map_or(BATCH, |c| {
            BATCH.min(usize::try_from(c - tuples).unwrap_or(BATCH))
        });
        let outcome = pump.step(&mut source, &mut calls, &mut sink, limit, STEP_WAIT);
        run.tuples.store(pump.stats.tuples, Ordering::Relaxed);
        run.errors.store(pump.stats.errors, Ordering::Relaxed);
        if published.elapsed() >= LATENCY_EVERY {
            publish_latencies(&pump);
            published = Instant::now();
        }
        match outcome {
            Outcome::Moved | Outcome::Idle => {}
            Outcome::SourceEnded => break "the source ended".to_owned(),
            Outcome::Failed(reason) => break format!("failed: {reason}"),
        }
    };
    // Every count is in (the last batch flushed the sink): keep the instances' figures, which
    // leave their plugins' statuses as the instances stop.
    lock(&run.figures).instances = run
        .plugins
        .iter()
        .filter_map(|(_, plugin)| plugin.upgrade())
        .flat_map(|plugin| {
            let status = plugin.status();
            let name = status.name;
            status
                .instances
                .into_iter()
                .filter(|i| i.rule_id == run.id)
                // An ended instance is starved no longer; its count of episodes stays.
                .map(move |i| {
                    (
                        name.clone(),
                        InstanceStatus {
                            starved_for: None,
                            ..i
                        },
                    )
                })
        })
        .collect();
    drop(source);
    if let Err(e) = sink.stop() {
        tracing::warn!(
            "pipeline `{}`: the sink did not confirm its stop: {e}",
            run.id
        );
        pump.stats.errors += 1;
    }
    drop(calls);
    run.errors.store(pump.stats.errors, Ordering::Relaxed);
    publish_latencies(&pump);
    tracing::info!("pipeline `{}` ended: {end}", run.id);
    *lock(&run.ended) = Some((end, run.started.elapsed()));
}

/// Accepts ids that are safe in a URL path and a log line.
fn validate_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid pipeline id {id:?}: use 1 to 64 letters, digits, `_`, `-` or `.`"
        ))
    }
}
