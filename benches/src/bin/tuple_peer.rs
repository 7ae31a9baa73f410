//! The other process of the tuple benches (`benches/tuples.rs`): it writes tuples, the bench
//! reads them.
//!
//! Started as `tuple_peer <small|large> <borrowed|owned|json> <spin-µs>` with a Unix socket as
//! standard input. For `borrowed` and `owned` the bench first sends a ring over the socket
//! (`fdpass::send_ring`) and this process becomes its producer. Then, for each command on the
//! socket (a little-endian `u64` count `n`), it writes tuples `0..n`:
//! - `borrowed`: `TupleSender::send_deferred` of a `TupleRef` over borrowed data, then `flush`;
//! - `owned`: the same with an owned `Tuple` built (and dropped) per tuple;
//! - `json`: each tuple's fields as a JSON object with a `u32` length prefix, through a
//!   `BufWriter` on the socket, flushed after the last.
//!
//! It ends when the socket closes, after a minute without a command, or with the bench (it asks
//! the kernel for `SIGKILL` when its parent dies).

#![forbid(unsafe_code)]

use std::io::{BufWriter, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use shmplug_transport::tuple::TupleSender;
use shmplug_transport::{EndpointConfig, fdpass};

#[path = "../tuples/source.rs"]
mod source;

use source::{Shape, Source, Writer};

const USAGE: &str = "\
tuple_peer is the helper process of shmplug's tuple benchmarks; the benchmark starts it.
Run the benchmark instead:  cargo bench -p shmplug-benches --bench tuples

usage: tuple_peer <small|large> <borrowed|owned|json> <spin-microseconds>
       (standard input: a Unix socket; for borrowed/owned it first carries the ring, sent with
       shmplug_transport::fdpass::send_ring; then little-endian u64 counts of tuples to write)";

/// How long to wait for the next command before deciding the bench is gone.
const IDLE: Duration = Duration::from_secs(60);

/// How long a JSON write may block before deciding the bench is stuck.
const STUCK: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(shape), Some(writer), Some(spin)) = (
        args.get(1)
            .and_then(|a| Shape::ALL.into_iter().find(|s| s.as_str() == a)),
        args.get(2).and_then(|a| {
            [Writer::Borrowed, Writer::Owned, Writer::Json]
                .into_iter()
                .find(|w| w.as_str() == a)
        }),
        args.get(3).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(shape, writer, Duration::from_micros(spin)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tuple_peer: {e}\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn run(shape: Shape, writer: Writer, spin: Duration) -> Result<(), Box<dyn std::error::Error>> {
    // Die with the bench even if it is killed outright.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let socket = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    socket.set_read_timeout(Some(IDLE))?;
    socket.set_write_timeout(Some(STUCK))?;
    let source = Source::new();
    match writer {
        Writer::Borrowed | Writer::Owned => {
            let ring = fdpass::recv_ring(&socket)?;
            let config = EndpointConfig::default().with_spin(spin);
            let mut tx = TupleSender::new(ring.producer(config)?);
            while let Some(n) = command(&socket)? {
                if writer == Writer::Borrowed {
                    for i in 0..n {
                        source.with_ref(shape, i, |t| tx.send_deferred(t))?;
                    }
                } else {
                    for i in 0..n {
                        tx.send_deferred(&source.owned(shape, i))?;
                    }
                }
                tx.flush();
            }
        }
        Writer::Json => {
            let mut out = BufWriter::with_capacity(64 * 1024, &socket);
            let mut frame = Vec::with_capacity(2048);
            while let Some(n) = command(&socket)? {
                for i in 0..n {
                    source.json_frame(shape, i, &mut frame);
                    out.write_all(&frame)?;
                }
                out.flush()?;
            }
        }
    }
    Ok(())
}

/// The next command: how many tuples to write. `None` once the bench closed the socket.
fn command(mut socket: &UnixStream) -> std::io::Result<Option<u64>> {
    let mut n = [0; 8];
    match socket.read_exact(&mut n) {
        Ok(()) => Ok(Some(u64::from_le_bytes(n))),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}
