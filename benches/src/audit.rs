//! Who else used the CPUs while a bench ran. The benches keep both of this machine's 2 vCPUs
//! busy, so any other work (a build, a test run) takes a core from a spinning thread and distorts
//! the figures; this measures how much, from `/proc`, so a run can be judged from its own output.

use std::time::Instant;

/// Linux reports `/proc` times in `USER_HZ` ticks, 100 per second on every architecture we run.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time consumed on the machine and by this process since [`CpuAudit::start`].
pub struct CpuAudit {
    wall: Instant,
    machine: Option<Machine>,
    own: Option<f64>,
}

#[derive(Clone, Copy)]
struct Machine {
    busy: f64,
    steal: f64,
    cpus: usize,
}

/// Busy and stolen seconds of all CPUs, from the `cpu` line of `/proc/stat`.
fn machine() -> Option<Machine> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = stat.lines();
    let ticks: Vec<f64> = lines
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let field = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6);
    let cpus = lines.filter(|l| l.starts_with("cpu")).count();
    Some(Machine {
        busy: busy / TICKS_PER_SEC,
        steal: field(7) / TICKS_PER_SEC,
        cpus,
    })
}

/// Seconds of CPU used by this process and its reaped children (`ring_peer`), from
/// `/proc/self/stat` (utime, stime, cutime, cstime).
fn own() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces; utime is
    // field 14 of the line, the 12th after the `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..15)?
        .iter()
        .map(|t| t.parse::<f64>().unwrap_or(0.0))
        .sum();
    Some(ticks / TICKS_PER_SEC)
}

impl CpuAudit {
    /// Starts counting.
    pub fn start() -> CpuAudit {
        CpuAudit {
            wall: Instant::now(),
            machine: machine(),
            own: own(),
        }
    }

    /// One line: how much CPU other processes (and the hypervisor) took since the start.
    pub fn report(&self) -> String {
        let wall = self.wall.elapsed().as_secs_f64();
        let (Some(m0), Some(m1), Some(o0), Some(o1)) = (self.machine, machine(), self.own, own())
        else {
            return "cpu audit: /proc not readable".to_owned();
        };
        let others = ((m1.busy - m0.busy) - (o1 - o0)).max(0.0);
        let capacity = wall * m1.cpus as f64;
        format!(
            "cpu audit over {wall:.0} s on {} CPUs: this bench {:.1} CPU-s, other processes {others:.1} CPU-s \
             ({:.1}% of the machine), hypervisor steal {:.1} CPU-s; figures are unreliable when others \
             exceed a few %",
            m1.cpus,
            o1 - o0,
            100.0 * others / capacity,
            m1.steal - m0.steal
        )
    }
}

/// One-way core-to-core latency right now, in nanoseconds: two threads bounce a value between
/// two cache lines 20 000 times (median of 5 batches, round trip halved). On this VM it is
/// bimodal, about 60 ns or about 250 ns, depending on where the host placed the two vCPUs, and
/// it changes over minutes; every figure in a summary carries the value measured just before it
/// so that a comparison across modes is visible as such.
pub fn core_to_core_ns() -> f64 {
    use std::hint::spin_loop;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[repr(align(128))]
    struct Line(AtomicU64);

    const ROUNDS: u64 = 20_000;
    let (ping, pong) = (Line(AtomicU64::new(0)), Line(AtomicU64::new(0)));
    let mut batches: Vec<f64> = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=5 * ROUNDS {
                // ORDERING: Acquire/Release pairs make the values hand over, nothing else.
                while ping.0.load(Ordering::Acquire) != i {
                    spin_loop();
                }
                pong.0.store(i, Ordering::Release);
            }
        });
        (0..5)
            .map(|batch| {
                let start = Instant::now();
                for i in batch * ROUNDS + 1..=(batch + 1) * ROUNDS {
                    ping.0.store(i, Ordering::Release);
                    while pong.0.load(Ordering::Acquire) != i {
                        spin_loop();
                    }
                }
                start.elapsed().as_nanos() as f64 / ROUNDS as f64 / 2.0
            })
            .collect()
    });
    crate::report::median(&mut batches).unwrap_or(f64::NAN)
}

/// Voluntary context switches of a task so far (`task`: `"thread-self"` or a process id), from
/// `/proc/<task>/status`. In the benches' loops a voluntary switch is a park (a `futex` or
/// `poll` sleep), since nothing else there blocks.
pub fn voluntary_switches(task: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{task}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()
}

/// Parks (voluntary context switches) of both sides of a ring, over some number of records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parks {
    /// Records moved.
    pub records: u64,
    /// Producer parks.
    pub producer: u64,
    /// Consumer parks.
    pub consumer: u64,
}

impl Parks {
    /// Adds one measurement.
    pub fn add(&mut self, records: u64, producer: u64, consumer: u64) {
        self.records += records;
        self.producer += producer;
        self.consumer += consumer;
    }
}

impl std::fmt::Display for Parks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_m = |n: u64| n as f64 * 1e6 / self.records.max(1) as f64;
        write!(
            f,
            "parks per M rec: producer {:.1}, consumer {:.1}",
            per_m(self.producer),
            per_m(self.consumer)
        )
    }
}
