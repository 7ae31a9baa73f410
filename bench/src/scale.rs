//! The `scale` measurement: many idle-ish source instances in one plugin process, all read by
//! one current-thread tokio runtime through the async receive (as an engine with many rules
//! would), reporting what each instance costs (time to open, memory, descriptors, threads), the
//! CPU per tuple in the host and the plugin, and how evenly the instances were served.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use shmplug_host::{InstanceSpec, Plugin, PluginSpec, SupervisorConfig};

use super::plugin::{self, NAME};
use super::{BenchError, Launcher};

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct ScaleConfig {
    /// Source instances to open.
    pub instances: usize,
    /// Tuples per second each instance emits.
    pub rate: f64,
    /// How long the tuples are counted, once every instance is open.
    pub window: Duration,
    /// Each instance's ring capacity, bytes.
    pub ring_capacity: usize,
    /// Nobody reads: the rings fill and the sources wait for room. The window then measures
    /// what waiting costs (the tuples it reports are zero).
    pub stalled: bool,
    /// Run each instance on a thread of its own (the blocking source `paced_thread`) instead
    /// of the SDK's executor (the polled source `paced`).
    pub threads: bool,
}

/// How long a stalled measurement lets the rings fill before it counts.
const STALL_SETTLE: Duration = Duration::from_secs(2);

/// What one `scale` measurement found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ScaleReport {
    /// Instances opened.
    pub instances: usize,
    /// Tuples per second asked of each instance.
    pub rate: f64,
    /// Seconds the tuples were counted.
    pub window_s: f64,
    /// Seconds to open every instance (one after the other).
    pub open_s: f64,
    /// Resident memory added per instance, KiB: in the host, in the plugin.
    pub host_kib_per_instance: f64,
    /// As `host_kib_per_instance`, in the plugin's process.
    pub plugin_kib_per_instance: f64,
    /// Descriptors added per instance: in the host, in the plugin.
    pub host_fds_per_instance: f64,
    /// As `host_fds_per_instance`, in the plugin's process.
    pub plugin_fds_per_instance: f64,
    /// Threads of the plugin's process with every instance open.
    pub plugin_threads: u64,
    /// Tuples received in the window, all instances.
    pub tuples: u64,
    /// CPU time over the window, as a share of one core: the host, the plugin.
    pub host_cpu: f64,
    /// As `host_cpu`, for the plugin's process.
    pub plugin_cpu: f64,
    /// CPU time per tuple received, microseconds, host and plugin together.
    pub cpu_us_per_tuple: f64,
    /// Fewest and most tuples one instance delivered in the window.
    pub min_per_instance: u64,
    /// See `min_per_instance`.
    pub max_per_instance: u64,
    /// Instances that delivered nothing in the window.
    pub starved: usize,
    /// Nobody read (see [`ScaleConfig::stalled`]).
    pub stalled: bool,
    /// The source that ran: `paced` (on the executor) or `paced_thread`.
    pub source: &'static str,
}

/// Runs the measurement with the bench plugin that `launcher` starts.
///
/// # Errors
/// The host's errors (starting the plugin or an instance), and failures to read `/proc`.
pub fn measure(config: ScaleConfig, launcher: &Launcher) -> Result<ScaleReport, BenchError> {
    descriptors_for(config.instances)?;
    let supervisor = SupervisorConfig {
        ring_capacity: config.ring_capacity,
        ..SupervisorConfig::default()
    };
    let mut spec = PluginSpec::new(NAME, &launcher.program);
    spec.args = launcher.plugin_args.clone();
    // Waiting threads by the thousand: spin as a user's plugin does.
    spec = spec.env(
        plugin::SPIN_ENV,
        shmplug_sdk::DEFAULT_SPIN.as_micros().to_string(),
    );
    let plugin = Plugin::start(spec, supervisor)?;
    let pid = plugin
        .status()
        .pid
        .ok_or_else(|| BenchError::Protocol("the bench plugin has no process".into()))?;
    let me = Proc::own();
    let child = Proc::pid(pid);
    let before = (me.sample()?, child.sample()?);

    let source = if config.threads {
        "paced_thread"
    } else {
        "paced"
    };
    let opening = Instant::now();
    let mut readers = Vec::with_capacity(config.instances);
    for _ in 0..config.instances {
        let spec = InstanceSpec::new(source).property("rate", config.rate);
        readers.push(plugin.source(spec)?);
    }
    let open_s = opening.elapsed().as_secs_f64();
    let opened = (me.sample()?, child.sample()?);

    if config.stalled {
        std::thread::sleep(STALL_SETTLE);
        let cpu_before = (me.cpu_s()?, child.cpu_s()?);
        let started = Instant::now();
        std::thread::sleep(config.window);
        let window_s = started.elapsed().as_secs_f64();
        let cpu_after = (me.cpu_s()?, child.cpu_s()?);
        let threads = child.sample()?.threads;
        for reader in readers {
            reader.stop()?;
        }
        plugin.shutdown();
        let n = config.instances.max(1) as f64;
        let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / n;
        return Ok(ScaleReport {
            instances: config.instances,
            rate: config.rate,
            window_s,
            open_s,
            host_kib_per_instance: per(opened.0.rss_kib, before.0.rss_kib),
            plugin_kib_per_instance: per(opened.1.rss_kib, before.1.rss_kib),
            host_fds_per_instance: per(opened.0.fds, before.0.fds),
            plugin_fds_per_instance: per(opened.1.fds, before.1.fds),
            plugin_threads: threads.max(opened.1.threads),
            tuples: 0,
            host_cpu: (cpu_after.0 - cpu_before.0) / window_s,
            plugin_cpu: (cpu_after.1 - cpu_before.1) / window_s,
            cpu_us_per_tuple: 0.0,
            min_per_instance: 0,
            max_per_instance: 0,
            starved: 0,
            stalled: true,
            source,
        });
    }

    // What queued while the others opened is not counted.
    for reader in &mut readers {
        while reader.try_recv()?.is_some() {}
    }
    let counts: Vec<Rc<Cell<u64>>> = (0..readers.len()).map(|_| Rc::default()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::io("starting a tokio runtime"))?;
    let cpu_before = (me.cpu_s()?, child.cpu_s()?);
    let started = Instant::now();
    let failures = runtime.block_on(async {
        let local = tokio::task::LocalSet::new();
        let deadline = tokio::time::Instant::now() + config.window;
        let tasks: Vec<_> = readers
            .drain(..)
            .zip(&counts)
            .map(|(mut reader, count)| {
                let count = count.clone();
                local.spawn_local(async move {
                    // One timer per reader for the whole window, not one per tuple.
                    let mut window = std::pin::pin!(tokio::time::sleep_until(deadline));
                    loop {
                        let got = {
                            let mut recv = std::pin::pin!(reader.recv_async());
                            std::future::poll_fn(|cx| {
                                if let Poll::Ready(received) = recv.as_mut().poll(cx) {
                                    return Poll::Ready(Some(received.map(drop)));
                                }
                                window.as_mut().poll(cx).map(|()| None)
                            })
                            .await
                        };
                        match got {
                            None => return Ok(reader),
                            Some(Ok(())) => count.set(count.get() + 1),
                            Some(Err(e)) => return Err(e),
                        }
                    }
                })
            })
            .collect();
        local
            .run_until(async {
                let mut failures = Vec::new();
                for task in tasks {
                    match task.await {
                        Ok(Ok(reader)) => readers.push(reader),
                        Ok(Err(e)) => failures.push(e.to_string()),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
            .await
    });
    let window_s = started.elapsed().as_secs_f64();
    let cpu_after = (me.cpu_s()?, child.cpu_s()?);
    if let Some(first) = failures.first() {
        return Err(BenchError::Protocol(format!(
            "{} of {} instances failed while read; the first: {first}",
            failures.len(),
            config.instances
        )));
    }
    for reader in readers {
        reader.stop()?;
    }
    plugin.shutdown();

    let n = config.instances.max(1) as f64;
    let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / n;
    let tuples: u64 = counts.iter().map(|c| c.get()).sum();
    let host_cpu = (cpu_after.0 - cpu_before.0) / window_s;
    let plugin_cpu = (cpu_after.1 - cpu_before.1) / window_s;
    Ok(ScaleReport {
        instances: config.instances,
        rate: config.rate,
        window_s,
        open_s,
        host_kib_per_instance: per(opened.0.rss_kib, before.0.rss_kib),
        plugin_kib_per_instance: per(opened.1.rss_kib, before.1.rss_kib),
        host_fds_per_instance: per(opened.0.fds, before.0.fds),
        plugin_fds_per_instance: per(opened.1.fds, before.1.fds),
        plugin_threads: opened.1.threads,
        tuples,
        host_cpu,
        plugin_cpu,
        cpu_us_per_tuple: (host_cpu + plugin_cpu) * window_s * 1e6 / tuples.max(1) as f64,
        min_per_instance: counts.iter().map(|c| c.get()).min().unwrap_or(0),
        max_per_instance: counts.iter().map(|c| c.get()).max().unwrap_or(0),
        starved: counts.iter().filter(|c| c.get() == 0).count(),
        stalled: false,
        source,
    })
}

/// Descriptors a source instance's ring holds in the host and in the plugin: the eventfd the
/// host waits on for data. The memfd is closed on both sides once sent and mapped, and the
/// plugin's side wakes through the process's doorbell.
const FDS_PER_INSTANCE: u64 = 1;

/// Makes sure this process (and so the plugin it starts, which inherits the limit) may hold
/// the descriptors of `instances` rings: raises the soft limit, and the hard one when that is
/// too low and the process may (as root); otherwise fails naming the limit.
fn descriptors_for(instances: usize) -> Result<(), BenchError> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let needed = instances as u64 * FDS_PER_INSTANCE + 512;
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|soft| soft >= needed) {
        return Ok(());
    }
    let hard = limit.maximum;
    limit.current = Some(needed);
    if hard.is_some_and(|hard| hard < needed) {
        limit.maximum = Some(needed);
    }
    setrlimit(Resource::Nofile, limit).map_err(|e| {
        BenchError::Protocol(format!(
            "{instances} instances need about {needed} descriptors in the host and as many in \
             the plugin ({FDS_PER_INSTANCE} per instance), over the hard limit of {} \
             (`ulimit -Hn`), which this process may not raise ({e}); raise it (`ulimit -Hn \
             {needed}` as root) or open fewer instances",
            hard.map_or("unlimited".to_owned(), |h| h.to_string())
        ))
    })
}

/// A process's entries in `/proc`.
struct Proc {
    dir: String,
}

/// Resident memory, descriptors and threads of a process at one moment.
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

impl Proc {
    fn own() -> Proc {
        Proc {
            dir: "/proc/self".into(),
        }
    }

    fn pid(pid: u32) -> Proc {
        Proc {
            dir: format!("/proc/{pid}"),
        }
    }

    fn read(&self, file: &str) -> Result<String, BenchError> {
        let path = format!("{}/{file}", self.dir);
        std::fs::read_to_string(&path).map_err(BenchError::io(format!("reading {path}")))
    }

    fn sample(&self) -> Result<Sample, BenchError> {
        let status = self.read("status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let path = format!("{}/fd", self.dir);
        let fds = std::fs::read_dir(&path)
            .map_err(BenchError::io(format!("listing {path}")))?
            .count() as u64;
        Ok(Sample {
            rss_kib: field("VmRSS:"),
            fds,
            threads: field("Threads:"),
        })
    }

    /// User plus system CPU time, seconds.
    fn cpu_s(&self) -> Result<f64, BenchError> {
        let stat = self.read("stat")?;
        // The fields after the command name (which may hold spaces) in parentheses.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the name.
        let per_second = rustix::param::clock_ticks_per_second() as f64;
        Ok((ticks(11) + ticks(12)) as f64 / per_second)
    }
}
