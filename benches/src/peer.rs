//! The other process of the cross-process benches: how the bench starts it, hands it two rings,
//! and talks to it.
//!
//! The bench creates a *data* ring (bench → peer, [`RING_BYTES`]) and a *back* ring (peer →
//! bench, 64 KiB), starts `ring_peer <mode> <spin-µs>` with one end of a `UnixStream::pair()` as
//! its standard input, and sends both rings over it with [`fdpass::send_ring`]. Using standard
//! input keeps both sides free of `unsafe`: the child gets the socket as descriptor 0 (which
//! `Command` installs without close-on-exec) and wraps a duplicate of it, where a descriptor
//! number passed in an environment variable would need `OwnedFd::from_raw_fd`.
//!
//! Modes ([`Mode`]):
//! - `sink` reads [`KIND_DATA`] records and folds each into a count and a
//!   [`checksum`](crate::checksum) sum; on a [`KIND_MARK`] record it hands all space back to the
//!   bench and answers on the back ring with a 16-byte ack (count, sum; little-endian `u64`s).
//! - `echo` copies every record onto the back ring and commits it at once (ping-pong).
//!
//! Both end when the bench closes the data ring. The peer also asks the kernel to kill it if the
//! bench dies (`PR_SET_PDEATHSIG`), and [`Peer`]'s `Drop` kills and reaps it, so no helper outlives
//! a bench, even one that panicked.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shmplug_transport::{Consumer, EndpointConfig, Producer, Ring, fdpass};

use crate::audit::Parks;
use crate::payload::RING_BYTES;

/// Record kind of payload records.
pub const KIND_DATA: u32 = 1;
/// Record kind asking a `sink` peer to acknowledge what it has read so far.
pub const KIND_MARK: u32 = 2;
/// Capacity of the back ring.
pub const BACK_RING_BYTES: usize = 64 * 1024;

/// What the peer process does with the records it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Checksum records, acknowledge each mark.
    Sink,
    /// Send every record straight back.
    Echo,
}

impl Mode {
    /// The mode's command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sink => "sink",
            Mode::Echo => "echo",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "sink" => Some(Mode::Sink),
            "echo" => Some(Mode::Echo),
            _ => None,
        }
    }
}

/// Kills and reaps the child when dropped.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running peer process and this side's endpoints: the data ring's producer and the back
/// ring's consumer.
pub struct Peer {
    /// Producer of the data ring (bench → peer).
    pub tx: Producer,
    /// Consumer of the back ring (peer → bench).
    pub rx: Consumer,
    /// Parks of our producer and the peer's consumer, counted by
    /// [`run_to_peer`](crate::rings::run_to_peer).
    pub parks: Parks,
    // Dropped after the endpoints, whose close lets the peer exit on its own first.
    child: Reaper,
}

impl Peer {
    /// Starts `exe` (the `ring_peer` binary) in `mode`. Our producer uses `tx_config` and our
    /// consumer `rx_config`; the peer's endpoints spin for `peer_spin` before parking.
    ///
    /// # Errors
    /// If the process cannot be started or the rings cannot be created or handed over.
    pub fn spawn(
        exe: &str,
        mode: Mode,
        tx_config: EndpointConfig,
        rx_config: EndpointConfig,
        peer_spin: Duration,
    ) -> Result<Peer, Box<dyn std::error::Error>> {
        let data = Ring::create(RING_BYTES)?;
        let back = Ring::create(BACK_RING_BYTES)?;
        let (ours, theirs) = UnixStream::pair()?;
        let child = Command::new(exe)
            .arg(mode.as_str())
            .arg(peer_spin.as_micros().to_string())
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .map_err(|e| format!("starting {exe}: {e}"))?;
        let child = Reaper(child);
        fdpass::send_ring(&ours, &data)?;
        fdpass::send_ring(&ours, &back)?;
        Ok(Peer {
            tx: data.producer(tx_config)?,
            rx: back.consumer(rx_config)?,
            parks: Parks::default(),
            child,
        })
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}
