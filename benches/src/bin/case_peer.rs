//! The other processes of the `cases` bench: the bench plugin (`case_peer bench-plugin`, run
//! under the host) and the baselines' peers (`case_peer bench-peer ROLE ...`), the same code
//! `shmplug bench` starts from the `shmplug` program.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("bench-plugin") => shmplug_bench::plugin_main(args),
        Some("bench-peer") => match shmplug_bench::peer_main(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("case_peer: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "case_peer is started by `cargo bench -p shmplug-benches --bench cases`; \
                 it is not meant to be run by hand"
            );
            ExitCode::from(2)
        }
    }
}
