//! The comparison `shmplug bench` runs: the same cases over shmplug and the transports a user
//! would otherwise pick, measured side by side in one run on the user's machine.
//!
//! Cases ([`Case`]): a plugin source sending small tuples to the host, the host sending small
//! tuples to a plugin sink, the host calling an echo function and waiting for each answer, and
//! a source sending tuples with a 1 MiB bytes field, and a pipeline (a 20-field source, one
//! function on two fields, a sink checking every field and the answer). Implementations ([`Impl`]): shmplug itself
//! (a real [`Plugin`](shmplug_host::Plugin) process under the real host), owned tuples through `rtrb`
//! between two threads (what a native in-process plugin pays), length-prefixed JSON over a Unix
//! socket between two processes (how eKuiper's portable plugins move data), iceoryx2
//! publish-subscribe and request-response between two processes, and the physical references
//! `memcpy` and `pingpong` (a cache-line round trip between two processes); for the pipeline,
//! the same source, function and sink code called directly in one thread (`native`).
//!
//! Every implementation moves the same tuples ([`workload`]) and its reader checks every field
//! of every tuple, so that no implementation wins by not looking at the data. Throughput is
//! timed from the first tuple the reader sees to the last, so process and instance start-up
//! are not counted; a round trip is timed call by call.
//!
//! The other processes are this same program started again: [`Launcher`] says how, and the
//! program must hand those command lines to [`plugin_main`] and [`peer_main`].

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

mod json_nng;
mod json_uds;
mod peer;
mod physical;
pub mod pipeline;
mod plugin;
mod rtrb_threads;
pub mod scale;
mod shmplug;
pub mod stats;
pub mod workload;

#[cfg(feature = "iceoryx2")]
mod iceoryx2;

pub use peer::peer_main;
pub use plugin::plugin_main;

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Case {
    /// A plugin source sends 5-field tuples to the host ([`workload::Workload::with_small`]).
    SourceSmall,
    /// The host sends 5-field tuples to a plugin sink.
    SinkSmall,
    /// The host calls an echo function with the 5 fields and waits for the answer.
    FunctionRtt,
    /// A plugin source sends tuples with a 1 MiB bytes field to the host
    /// ([`workload::Workload::with_large`]).
    Large1Mib,
    /// A plugin source sends 20-field tuples, the host calls a function on two fields of each
    /// and sends the tuple plus the answer to a plugin sink that checks them
    /// ([`pipeline`]).
    Pipeline,
}

impl Case {
    /// Every case, in the order of the table.
    pub const ALL: [Case; 5] = [
        Case::SourceSmall,
        Case::SinkSmall,
        Case::FunctionRtt,
        Case::Large1Mib,
        Case::Pipeline,
    ];

    /// The stable name, used in the table, in JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Case::SourceSmall => "source_small",
            Case::SinkSmall => "sink_small",
            Case::FunctionRtt => "function_rtt",
            Case::Large1Mib => "large_1mib",
            Case::Pipeline => "pipeline",
        }
    }

    /// The case called `name`.
    pub fn from_name(name: &str) -> Option<Case> {
        Case::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who does the moving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Impl {
    /// The real host and a real plugin process.
    Shmplug,
    /// Owned tuples through `rtrb` between two threads of this process.
    RtrbInprocess,
    /// The tuples' encoded bytes through an `rtrb` byte queue between two threads of this
    /// process, copied out and validated as the host does, allocating nothing (not for calls).
    RtrbBytes,
    /// Length-prefixed JSON over a Unix socket between two processes.
    JsonUds,
    /// The host driving a plugin process over eKuiper's portable protocol (nng SP over
    /// `ipc://`, JSON), as it runs unchanged eKuiper plugins (for `function_rtt` and
    /// `pipeline`).
    JsonNng,
    /// The tuples' bytes through iceoryx2 publish-subscribe (request-response for calls)
    /// between two processes.
    Iceoryx2,
    /// Copying the 1 MiB field from one buffer to another in one thread (for `large_1mib`).
    Memcpy,
    /// A value bounced between two processes through one shared cache line each way (for
    /// `function_rtt`).
    Pingpong,
    /// The pipeline's source, function and sink called directly in one thread (for
    /// `pipeline`): what an eKuiper native plugin costs.
    Native,
}

impl Impl {
    /// Every implementation, in the order of the table.
    pub const ALL: [Impl; 9] = [
        Impl::Shmplug,
        Impl::Native,
        Impl::RtrbInprocess,
        Impl::RtrbBytes,
        Impl::JsonUds,
        Impl::JsonNng,
        Impl::Iceoryx2,
        Impl::Memcpy,
        Impl::Pingpong,
    ];

    /// The stable name, used in the table, in JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Shmplug => "shmplug",
            Impl::RtrbInprocess => "rtrb_inprocess",
            Impl::RtrbBytes => "rtrb_bytes",
            Impl::JsonUds => "json_uds",
            Impl::JsonNng => "json_nng",
            Impl::Iceoryx2 => "iceoryx2",
            Impl::Memcpy => "memcpy",
            Impl::Pingpong => "pingpong",
            Impl::Native => "native",
        }
    }

    /// The implementation called `name`.
    pub fn from_name(name: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether this implementation has a figure for `case`: the physical references only for
    /// the case they bound; the pipeline over shmplug, in one thread and over JSON.
    pub fn applies_to(self, case: Case) -> bool {
        match self {
            Impl::Memcpy => case == Case::Large1Mib,
            Impl::Pingpong => case == Case::FunctionRtt,
            Impl::Native => case == Case::Pipeline,
            Impl::JsonNng => matches!(case, Case::Pipeline | Case::FunctionRtt),
            Impl::RtrbInprocess | Impl::Iceoryx2 => case != Case::Pipeline,
            Impl::RtrbBytes => case != Case::FunctionRtt && case != Case::Pipeline,
            Impl::Shmplug | Impl::JsonUds => true,
        }
    }

    /// Whether this build can run it (iceoryx2 is a cargo feature, on by default).
    pub fn is_available(self) -> bool {
        self != Impl::Iceoryx2 || cfg!(feature = "iceoryx2")
    }
}

impl fmt::Display for Impl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One measurement; `None` where the figure does not apply (a throughput case has no
/// per-tuple latency, a small-tuple case no byte rate).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Measurement {
    /// Tuples (or calls, or copies) per second.
    pub tuples_per_s: Option<f64>,
    /// Bytes of the 1 MiB field per second (`large_1mib` only).
    pub bytes_per_s: Option<f64>,
    /// Median round trip, nanoseconds (`function_rtt` only).
    pub p50_ns: Option<f64>,
    /// 99th-percentile round trip, nanoseconds (`function_rtt` only).
    pub p99_ns: Option<f64>,
}

impl Measurement {
    /// A throughput figure: `tuples` moved in `elapsed`, each carrying `bytes` of payload
    /// worth reporting (0: no byte rate).
    pub fn throughput(tuples: u64, elapsed: Duration, bytes: u64) -> Measurement {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let rate = tuples as f64 / secs;
        Measurement {
            tuples_per_s: Some(rate),
            bytes_per_s: (bytes > 0).then_some(rate * bytes as f64),
            ..Measurement::default()
        }
    }

    /// A round-trip figure from per-call times (in nanoseconds), which it sorts.
    pub fn round_trips(samples: &mut [u64]) -> Measurement {
        samples.sort_unstable();
        let total: u64 = samples.iter().sum();
        Measurement {
            tuples_per_s: (total > 0).then(|| samples.len() as f64 * 1e9 / total as f64),
            bytes_per_s: None,
            p50_ns: stats::percentile_sorted(samples, 50.0),
            p99_ns: stats::percentile_sorted(samples, 99.0),
        }
    }
}

/// How many tuples, calls and copies one measurement moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Small tuples per throughput measurement.
    pub small: u64,
    /// Calls (round trips) per latency measurement.
    pub calls: u64,
    /// Tuples with a 1 MiB field per measurement.
    pub large: u64,
    /// Tuples through the pipeline per measurement.
    pub pipeline: u64,
    /// The slow implementations (JSON) move this fraction of the above, at least 1 in 100.
    pub slow_divisor: u64,
}

impl Sizes {
    /// Sizes for `--quick`: the whole run within 60 s on a 2-vCPU machine.
    pub const QUICK: Sizes = Sizes {
        small: 1_000_000,
        calls: 50_000,
        large: 500,
        pipeline: 200_000,
        slow_divisor: 4,
    };

    /// Sizes for a full run (each measurement is also repeated).
    pub const FULL: Sizes = Sizes {
        small: 2_000_000,
        calls: 200_000,
        large: 2_000,
        pipeline: 500_000,
        slow_divisor: 4,
    };

    /// The number of tuples or calls for `case` for a fast implementation.
    pub fn of(&self, case: Case) -> u64 {
        match case {
            Case::SourceSmall | Case::SinkSmall => self.small,
            Case::FunctionRtt => self.calls,
            Case::Large1Mib => self.large,
            Case::Pipeline => self.pipeline,
        }
    }

    /// The number for `case` for a slow implementation.
    pub fn slow(&self, case: Case) -> u64 {
        (self.of(case) / self.slow_divisor.max(1))
            .max(self.of(case) / 100)
            .max(1)
    }
}

/// How to start the other processes of a measurement: `program` with `plugin_args` runs the
/// bench plugin ([`plugin_main`]), with `peer_args` followed by a role the peer processes
/// ([`peer_main`]).
#[derive(Clone, Debug)]
pub struct Launcher {
    /// The program.
    pub program: PathBuf,
    /// Arguments that make it run [`plugin_main`].
    pub plugin_args: Vec<OsString>,
    /// Arguments that make it run [`peer_main`] with the arguments that follow.
    pub peer_args: Vec<OsString>,
}

/// A measurement that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The host or the plugin failed.
    #[error(transparent)]
    Host(#[from] shmplug_host::Error),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] shmplug_transport::Error),
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The other side sent something other than what the workload says, or went quiet.
    #[error("{0}")]
    Protocol(String),
    /// The implementation is not in this build.
    #[error("{0} is not in this build (cargo feature `{0}`)")]
    Unavailable(Impl),
}

impl BenchError {
    /// An [`BenchError::Io`] saying what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// Measures `case` over `imp` once, moving `sizes`' number of tuples.
///
/// # Errors
/// Whatever stopped the measurement; a check that failed on the data is
/// [`BenchError::Protocol`].
pub fn measure(
    case: Case,
    imp: Impl,
    sizes: &Sizes,
    launcher: &Launcher,
) -> Result<Measurement, BenchError> {
    if !imp.applies_to(case) {
        return Err(BenchError::Protocol(format!(
            "{imp} has no figure for {case}"
        )));
    }
    match imp {
        Impl::Shmplug => shmplug::measure(case, sizes.of(case), launcher),
        Impl::RtrbInprocess => rtrb_threads::measure(case, sizes.of(case)),
        Impl::RtrbBytes => rtrb_threads::stream_bytes(case, sizes.of(case)),
        Impl::JsonUds => json_uds::measure(case, sizes.slow(case), launcher),
        Impl::JsonNng => json_nng::measure(case, sizes.slow(case), launcher),
        #[cfg(feature = "iceoryx2")]
        Impl::Iceoryx2 => iceoryx2::measure(case, sizes.of(case), launcher),
        #[cfg(not(feature = "iceoryx2"))]
        Impl::Iceoryx2 => Err(BenchError::Unavailable(imp)),
        Impl::Memcpy => Ok(physical::memcpy(sizes.of(case))),
        Impl::Pingpong => physical::pingpong(sizes.of(case), launcher),
        Impl::Native => pipeline::measure_native(sizes.of(case)),
    }
}

/// How long any single wait for the other side may take before the measurement fails.
pub const STUCK: Duration = Duration::from_secs(20);
