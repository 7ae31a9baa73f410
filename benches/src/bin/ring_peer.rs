//! The other process of shmplug's cross-process benches (`benches/ring_processes.rs`).
//!
//! Started as `ring_peer <sink|echo> <spin-µs>` with a Unix socket as standard input, over which
//! it receives two rings (data, then back); see `shmplug_benches::peer` for the protocol.

#![forbid(unsafe_code)]

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use shmplug_benches::checksum;
use shmplug_benches::peer::{KIND_MARK, Mode};
use shmplug_benches::rings::echo;
use shmplug_transport::{Consumer, EndpointConfig, Producer, fdpass};

const USAGE: &str = "\
ring_peer is the helper process of shmplug's cross-process benchmarks; the benchmark starts it.
Run the benchmarks instead:  cargo bench -p shmplug-benches --bench ring_processes

usage: ring_peer <sink|echo> <spin-microseconds>   (standard input: a Unix socket that carries
       the data ring, then the back ring, sent with shmplug_transport::fdpass::send_ring)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(spin)) = (
        args.get(1).and_then(|m| Mode::parse(m)),
        args.get(2).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(mode, Duration::from_micros(spin)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring_peer: {e}\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn run(mode: Mode, spin: Duration) -> Result<(), Box<dyn std::error::Error>> {
    // Die with the bench even if it is killed outright (the signal fires when the thread that
    // started us exits: the bench's main thread).
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let socket = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let data = fdpass::recv_ring(&socket)?;
    let back = fdpass::recv_ring(&socket)?;
    let config = EndpointConfig::default().with_spin(spin);
    let mut rx = data.consumer(config)?;
    let mut tx = back.producer(config)?;
    match mode {
        Mode::Sink => sink(&mut rx, &mut tx)?,
        Mode::Echo => echo(&mut rx, &mut tx)?,
    }
    Ok(())
}

/// Checksums data records; answers each mark with (count, sum) since the previous one.
fn sink(rx: &mut Consumer, tx: &mut Producer) -> shmplug_transport::Result<()> {
    let (mut count, mut sum) = (0u64, 0u64);
    loop {
        let record = match rx.read() {
            Ok(record) => record,
            Err(e) if e.is_closed() => return Ok(()),
            Err(e) => return Err(e),
        };
        if record.kind() != KIND_MARK {
            sum = sum.wrapping_add(checksum(&record));
            count += 1;
            continue;
        }
        drop(record);
        // Hand all space back so the next measurement starts from an empty ring.
        rx.flush();
        let mut ack = tx.claim(16)?;
        ack[..8].copy_from_slice(&count.to_le_bytes());
        ack[8..].copy_from_slice(&sum.to_le_bytes());
        ack.commit();
        (count, sum) = (0, 0);
    }
}
