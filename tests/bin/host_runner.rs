//! Child for `host_kill`: a tiny host process.
//!
//! `host-runner PLUGIN_EXECUTABLE` starts the mirror plugin at `PLUGIN_EXECUTABLE` under a
//! [`Plugin`], opens a slow `random` source on it (so the plugin keeps running), reads one
//! tuple, prints the plugin's pid on a line of stdout, then blocks until its stdin closes (so
//! it never outlives a test that forgot it), and shuts the plugin down.
//!
//! `host-runner PLUGIN_EXECUTABLE descriptor-limit N` instead lowers its own descriptor limit
//! to `N` once the plugin runs, opens idle sources until one fails, prints how many opened and
//! the error on two lines, and shuts the plugin down.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::time::Duration;

use shmplug_host::{InstanceSpec, Plugin, PluginSpec, SupervisorConfig};

fn main() {
    let executable = std::env::args_os()
        .nth(1)
        .expect("usage: host-runner PLUGIN_EXECUTABLE");
    let config = SupervisorConfig {
        ping_interval: Duration::from_millis(200),
        ring_capacity: 1 << 16,
        handle_spin: Duration::from_micros(5),
        ..SupervisorConfig::default()
    };
    let plugin =
        Plugin::start(PluginSpec::new("mirror", executable), config).expect("starting mirror");
    if let Some(limit) = std::env::args()
        .nth(3)
        .filter(|_| std::env::args().nth(2).as_deref() == Some("descriptor-limit"))
    {
        let limit: u64 = limit.parse().expect("a descriptor limit");
        let lowered = rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, lowered)
            .expect("lowering the descriptor limit");
        let mut open = Vec::new();
        let error = loop {
            let spec = InstanceSpec::new("random")
                .property("interval", 1000)
                .property("pattern", serde_json::json!({"a": 1}))
                .ring_capacity(1 << 12);
            match plugin.source(spec) {
                Ok(source) => open.push(source),
                Err(e) => break e,
            }
            assert!(open.len() < 10_000, "no error after 10000 instances");
        };
        println!("{}\n{error}", open.len());
        drop(open);
        plugin.shutdown();
        return;
    }
    let mut source = plugin
        .source(
            InstanceSpec::new("random")
                .property("interval", 20)
                .property("pattern", serde_json::json!({"a": 1})),
        )
        .expect("starting the random source");
    let first = source
        .recv_timeout(Duration::from_secs(20))
        .expect("reading the source")
        .map(|t| t.to_owned());
    assert!(first.is_some(), "no tuple from the random source");
    let pid = plugin.status().pid.expect("the plugin's pid");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{pid}").expect("writing the pid");
    out.flush().expect("flushing stdout");
    drop(out);
    // Block until the test closes our stdin (or kills us).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(source);
    plugin.shutdown();
}
