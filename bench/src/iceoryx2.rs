//! iceoryx2 between two processes: the tuples' bytes through publish-subscribe (the sources and
//! the sink) and request-response (the echo call).
//!
//! # What moves
//! The writer encodes each tuple with shmplug's own [`Encoder`] straight into a loaned iceoryx2
//! sample (a `[u8]` slice), puts the encoded length in the sample's user header, and sends it;
//! the reader validates the bytes in place with [`TupleView::from_bytes`] and checks every field
//! against the workload, exactly as shmplug's host does with a ring record. So iceoryx2 is
//! measured as the zero-copy transport under the same tuple format, and the difference to
//! shmplug is the transport (and the zero-fill below). The echo server validates the request
//! and answers with a copy of its bytes; the bench checks the answer.
//!
//! # Start and end
//! The bench creates the service and its own port, then starts the peer, which opens the
//! service, creates its port and says so over the [`Rendezvous`] socket; the bench connects its
//! port and says go. Both ends are then attached before the first sample moves (iceoryx2 drops
//! a sample into a full buffer that has no reader attached yet). At the end the peer keeps its
//! port until the bench says it has everything; the sink first sends its count on the socket.
//! Every wait is bounded by [`STUCK`], a blocked send too.
//!
//! # Fairness
//! iceoryx2's defaults drop data under load (a publish-subscribe service overwrites the oldest
//! sample of a full subscriber buffer), which no other implementation here may do. So every
//! service is created with safe overflow off (`enable_safe_overflow(false)`, and for requests
//! and responses), and every sending port with [`BackpressureStrategy::RetryUntilDelivered`]:
//! a writer facing a full buffer waits (iceoryx2's adaptive wait: spin, yield, then short
//! sleeps) until the reader has taken a sample. Subscriber buffers hold 256 small samples or 4
//! large ones; the publisher may loan 2 samples at once and the subscriber borrow 2. The
//! per-index checks prove nothing was lost. The readers poll without sleeping
//! (`receive` in a loop with [`std::hint::spin_loop`]), on both sides of a call too.
//!
//! Timing follows [`super::json_uds`]: throughput from the first tuple the reader sees to the
//! last (for the sink, from the first send to the sink's count arriving); each call from the
//! encoding of its request to its answer validated (the field check is not timed), after
//! [`WARM_UP`] untimed calls.
//!
//! # Costs accepted
//! The host forbids `unsafe`, so a loaned sample is taken with `loan_slice`, which zero-fills
//! it before the encoder writes it: 256 bytes per small tuple, about 1 MiB per large one (a
//! `memset` of the field on top of the copy the encoder makes). The echo answer is written with
//! `write_from_slice` (one copy, no fill). A writer that trusted `assume_init` would save the
//! fill. The fill is already the cheapest way the safe API offers: an uninitialised loan
//! becomes a sample only through `write_from_slice` (a copy of bytes encoded elsewhere first:
//! the encoder's copy plus a second one) or `write_from_fn` (one call per byte), and a 1 MiB
//! zero-fill runs at about three times memcpy's speed here (174 vs 60 GB/s, `cargo run
//! --release -p shmplug-bench --example large_ceiling`), about 6 µs per large sample.
//!
//! # Files
//! Each measurement gives iceoryx2 its own root directory (inside the [`Rendezvous`]'s private
//! temporary directory, removed afterwards) instead of the shared `/tmp/iceoryx2`, with the file
//! prefix `shmplug_bench_` for its shared memory, and names its services after that directory:
//! nothing is read from a user's iceoryx2 config, nothing is shared with another run or user,
//! and a crashed run leaves nothing a later one trips on. Both sides drop their ports, services
//! and nodes before exiting, which removes the services; if the peer was killed, the bench's
//! node removes the dead peer's resources when it is dropped. What stays is iceoryx2's one
//! global management segment per prefix and version, a 16-byte
//! `/dev/shm/shmplug_bench_<hash>_node.0_10_0.global_mgmt` (readable and writable by all users)
//! that every later run reuses; iceoryx2 keeps it by design and removing it is unsafe while
//! another run may use it. Signal handling is left to the program (iceoryx2's is disabled).

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::port::{BackpressureAction, BackpressureInfo};
use iceoryx2::prelude::{
    Alignment, BackpressureStrategy, Config, FileName, Node, NodeBuilder, SemanticString,
    ServiceName, SignalHandlingMode, ipc,
};
use iceoryx2::service::port_factory::{publish_subscribe, request_response};
use shmplug_transport::tuple::{Encoder, TupleView};

use super::peer::{self, Peer, Rendezvous};
use super::workload::{LARGE_BYTES, Workload};
use super::{BenchError, Case, Launcher, Measurement, STUCK};

/// Calls before timing starts.
const WARM_UP: u64 = 2_000;
/// The payload alignment every service asks for: [`TupleView::from_bytes`] reads in place
/// from a 16-byte-aligned start.
const ALIGN: usize = 16;
/// Bytes loaned for a small tuple (it encodes to about 160).
const SMALL_CAP: usize = 256;
/// Bytes loaned for a large tuple: the 1 MiB field and the archive around it.
const LARGE_CAP: usize = LARGE_BYTES + 256;
/// Subscriber buffer, in samples, for small tuples.
const SMALL_BUFFER: usize = 256;
/// Subscriber buffer, in samples, for large tuples.
const LARGE_BUFFER: usize = 4;
/// Samples a publisher may loan, and a subscriber borrow, at once.
const IN_HAND: usize = 2;
/// The prefix of every file iceoryx2 makes for the bench.
const PREFIX: &[u8] = b"shmplug_bench_";

/// The peer has its ports and is connected.
const READY: u8 = b'r';
/// The bench is connected too: go.
const GO: u8 = b'g';
/// The bench has everything: the peer may drop its ports and exit.
const DONE: u8 = b'd';

type PubSub = publish_subscribe::PortFactory<ipc::Service, [u8], u64>;
type ReqRes = request_response::PortFactory<ipc::Service, [u8], u64, [u8], u64>;

pub(super) fn measure(case: Case, n: u64, launcher: &Launcher) -> Result<Measurement, BenchError> {
    if case == Case::Pipeline {
        return Err(BenchError::Protocol("iceoryx2 has no pipeline".into()));
    }
    let workload = Workload::new();
    let rendezvous = Rendezvous::new()?;
    // Declared before the peer, so dropped after it: a killed peer's resources are removed
    // when this node goes.
    let (node, name) = open_node(&rendezvous.path())?;
    // A short run (a test) warms up as long as it measures.
    let warm_up = WARM_UP.min(n);
    let total = if case == Case::FunctionRtt {
        n + warm_up
    } else {
        n
    };
    let start_peer = || -> Result<(Peer, UnixStream), BenchError> {
        let mut child = Peer::spawn(
            launcher,
            "iceoryx2",
            &[
                case.name().into(),
                rendezvous.path(),
                total.to_string().into(),
            ],
        )?;
        let stream = rendezvous.accept(&mut child)?;
        Ok((child, stream))
    };
    let (child, stream, measurement) = match case {
        Case::SourceSmall | Case::Large1Mib => {
            let large = case == Case::Large1Mib;
            let service = pub_sub(&node, &name, case, true)?;
            let subscriber = service
                .subscriber_builder()
                .buffer_size(buffer(case))
                .create()
                .map_err(ice("creating a subscriber"))?;
            let (child, stream) = start_peer()?;
            handshake(&stream, || subscriber.update_connections())?;
            let mut start = None;
            for i in 0..n {
                let sample = spin_until("a tuple from the iceoryx2 peer", || {
                    subscriber.receive().map_err(ice("receiving a sample"))
                })?;
                start.get_or_insert_with(Instant::now);
                let view = view(sample.payload(), *sample.user_header())?;
                if large {
                    workload.check_large_view(&view.fields(), i)?;
                } else {
                    workload.check_small_view(&view.fields(), i)?;
                }
            }
            let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
            let bytes = if large { LARGE_BYTES as u64 } else { 0 };
            let m = Measurement::throughput(n.saturating_sub(1), elapsed, bytes);
            (child, stream, m)
        }
        Case::SinkSmall => {
            let service = pub_sub(&node, &name, case, true)?;
            let publisher = publisher(&service, case)?;
            let (child, stream) = start_peer()?;
            handshake(&stream, || publisher.update_connections())?;
            let mut encoder = Encoder::new();
            let start = Instant::now();
            for i in 0..n {
                publish(&publisher, SMALL_CAP, |buf| {
                    workload.with_small(i, |t| encoder.encode_into(t, buf))
                })?;
            }
            let mut count = [0u8; 8];
            (&stream)
                .read_exact(&mut count)
                .map_err(BenchError::io("reading the iceoryx2 peer's count"))?;
            let elapsed = start.elapsed();
            let count = u64::from_le_bytes(count);
            if count != n {
                return Err(BenchError::Protocol(format!(
                    "the iceoryx2 sink counted {count} tuples of {n}"
                )));
            }
            (child, stream, Measurement::throughput(n, elapsed, 0))
        }
        Case::Pipeline => unreachable!("refused above"),
        Case::FunctionRtt => {
            let service = req_res(&node, &name, true)?;
            let client = service
                .client_builder()
                .initial_max_slice_len(SMALL_CAP)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .set_backpressure_handler(give_up_when_stuck)
                .create()
                .map_err(ice("creating a client"))?;
            let (child, stream) = start_peer()?;
            handshake(&stream, || client.update_connections())?;
            let mut encoder = Encoder::new();
            let mut samples = Vec::with_capacity(n as usize);
            for i in 0..total {
                let start = Instant::now();
                let mut request = client
                    .loan_slice(SMALL_CAP)
                    .map_err(ice("loaning a request"))?;
                let len =
                    workload.with_small(i, |t| encoder.encode_into(t, request.payload_mut()))?;
                *request.user_header_mut() = len as u64;
                let pending = request.send().map_err(ice("sending a request"))?;
                let response = spin_until("an answer from the iceoryx2 echo server", || {
                    pending.receive().map_err(ice("receiving a response"))
                })?;
                let view = view(response.payload(), *response.user_header())?;
                // The clock stops once the answer is validated, as for the other calls.
                let took = start.elapsed();
                workload.check_small_view(&view.fields(), i)?;
                if i >= warm_up {
                    samples.push(took.as_nanos() as u64);
                }
            }
            (child, stream, Measurement::round_trips(&mut samples))
        }
    };
    send_byte(&stream, DONE)?;
    child.wait()?;
    Ok(measurement)
}

/// The peer: the source publishing tuples, the sink subscribing and checking them, or the echo
/// server.
pub(super) fn peer(args: &[String]) -> Result<(), BenchError> {
    let (case, path, n) = peer::case_args(args)?;
    let stream = peer::connect(path)?;
    if case == Case::Pipeline {
        return Err(BenchError::Protocol("iceoryx2 has no pipeline".into()));
    }
    let (node, name) = open_node(path.as_ref())?;
    let workload = Workload::new();
    match case {
        Case::SourceSmall | Case::Large1Mib => {
            let service = pub_sub(&node, &name, case, false)?;
            let publisher = publisher(&service, case)?;
            ready(&stream)?;
            let mut encoder = Encoder::new();
            for i in 0..n {
                if case == Case::SourceSmall {
                    publish(&publisher, SMALL_CAP, |buf| {
                        workload.with_small(i, |t| encoder.encode_into(t, buf))
                    })?;
                } else {
                    publish(&publisher, LARGE_CAP, |buf| {
                        workload.with_large(i, |t| encoder.encode_into(t, buf))
                    })?;
                }
            }
            // Keep the publisher until the bench has taken every sample.
            await_byte(&stream, DONE, "the bench's end")?;
        }
        Case::SinkSmall => {
            let service = pub_sub(&node, &name, case, false)?;
            let subscriber = service
                .subscriber_builder()
                .buffer_size(buffer(case))
                .create()
                .map_err(ice("creating a subscriber"))?;
            ready(&stream)?;
            for i in 0..n {
                let sample = spin_until("a tuple from the bench", || {
                    subscriber.receive().map_err(ice("receiving a sample"))
                })?;
                let view = view(sample.payload(), *sample.user_header())?;
                workload.check_small_view(&view.fields(), i)?;
            }
            (&stream)
                .write_all(&n.to_le_bytes())
                .map_err(BenchError::io("writing the count"))?;
            await_byte(&stream, DONE, "the bench's end")?;
        }
        Case::Pipeline => unreachable!("refused above"),
        Case::FunctionRtt => {
            let service = req_res(&node, &name, false)?;
            let server = service
                .server_builder()
                .initial_max_slice_len(SMALL_CAP)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .set_backpressure_handler(give_up_when_stuck)
                .create()
                .map_err(ice("creating a server"))?;
            ready(&stream)?;
            for _ in 0..n {
                let request = spin_until("a call from the bench", || {
                    server.receive().map_err(ice("receiving a request"))
                })?;
                let bytes = exact(request.payload(), *request.user_header())?;
                // The function reads its arguments, then answers them.
                TupleView::from_bytes(bytes)?;
                let mut response = request
                    .loan_slice_uninit(bytes.len())
                    .map_err(ice("loaning a response"))?
                    .write_from_slice(bytes);
                *response.user_header_mut() = bytes.len() as u64;
                response.send().map_err(ice("sending a response"))?;
            }
            // Keep the server until the bench has its last answer.
            await_byte(&stream, DONE, "the bench's end")?;
        }
    }
    Ok(())
}

/// This measurement's node, with its own root directory and file prefix (see the module docs),
/// and its services' name; both sides derive them from the rendezvous socket's path.
fn open_node(socket: &std::ffi::OsStr) -> Result<(Node<ipc::Service>, ServiceName), BenchError> {
    let dir = std::path::Path::new(socket)
        .parent()
        .filter(|d| d.file_name().is_some())
        .ok_or_else(|| {
            BenchError::Protocol(format!(
                "the rendezvous socket {} is not in a directory of its own",
                std::path::Path::new(socket).display()
            ))
        })?;
    let mut root = dir.join("iceoryx2").into_os_string();
    root.push("/");
    let mut config = Config::default();
    config.global.set_root_path(
        &iceoryx2::prelude::Path::new(root.as_bytes()).map_err(ice("setting the root path"))?,
    );
    config.global.prefix = FileName::new(PREFIX).map_err(ice("setting the file prefix"))?;
    let node = NodeBuilder::new()
        .config(&config)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(ice("creating a node"))?;
    let dir_name = dir.file_name().unwrap_or_default().to_string_lossy();
    let name = ServiceName::new(&format!("shmplug-bench/{dir_name}"))
        .map_err(ice("naming the service"))?;
    Ok((node, name))
}

fn buffer(case: Case) -> usize {
    if case == Case::Large1Mib {
        LARGE_BUFFER
    } else {
        SMALL_BUFFER
    }
}

fn alignment() -> Alignment {
    Alignment::new(ALIGN).expect("16 is a power of two")
}

/// The publish-subscribe service of `case`, created by the bench or opened by the peer (which
/// then requires the same settings).
fn pub_sub(
    node: &Node<ipc::Service>,
    name: &ServiceName,
    case: Case,
    create: bool,
) -> Result<PubSub, BenchError> {
    let builder = node
        .service_builder(name)
        .publish_subscribe::<[u8]>()
        .user_header::<u64>()
        .payload_alignment(alignment())
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(buffer(case))
        .subscriber_max_borrowed_samples(IN_HAND)
        .history_size(0)
        .max_publishers(1)
        .max_subscribers(1)
        .max_nodes(2);
    if create {
        builder
            .create()
            .map_err(ice("creating the publish-subscribe service"))
    } else {
        builder
            .open()
            .map_err(ice("opening the publish-subscribe service"))
    }
}

/// The echo's request-response service, created by the bench or opened by the peer.
fn req_res(
    node: &Node<ipc::Service>,
    name: &ServiceName,
    create: bool,
) -> Result<ReqRes, BenchError> {
    let builder = node
        .service_builder(name)
        .request_response::<[u8], [u8]>()
        .request_user_header::<u64>()
        .response_user_header::<u64>()
        .request_payload_alignment(alignment())
        .response_payload_alignment(alignment())
        .enable_safe_overflow_for_requests(false)
        .enable_safe_overflow_for_responses(false)
        .max_clients(1)
        .max_servers(1)
        .max_nodes(2);
    if create {
        builder
            .create()
            .map_err(ice("creating the request-response service"))
    } else {
        builder
            .open()
            .map_err(ice("opening the request-response service"))
    }
}

/// A publisher that waits for room rather than dropping (at most [`STUCK`]).
fn publisher(
    service: &PubSub,
    case: Case,
) -> Result<Publisher<ipc::Service, [u8], u64>, BenchError> {
    let cap = if case == Case::Large1Mib {
        LARGE_CAP
    } else {
        SMALL_CAP
    };
    service
        .publisher_builder()
        .initial_max_slice_len(cap)
        .max_loaned_samples(IN_HAND)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .set_backpressure_handler(give_up_when_stuck)
        .create()
        .map_err(ice("creating a publisher"))
}

/// Retries delivery into a full buffer, for at most [`STUCK`]; then the send fails.
fn give_up_when_stuck(info: &BackpressureInfo) -> BackpressureAction {
    if info.elapsed_time < STUCK {
        BackpressureAction::Retry
    } else {
        BackpressureAction::DiscardDataAndFail
    }
}

/// Loans `cap` bytes (zero-filled), lets `encode` write a tuple into them, and sends them with
/// the tuple's length in the user header.
fn publish(
    publisher: &Publisher<ipc::Service, [u8], u64>,
    cap: usize,
    encode: impl FnOnce(&mut [u8]) -> Result<usize, shmplug_transport::Error>,
) -> Result<(), BenchError> {
    let mut sample = publisher.loan_slice(cap).map_err(ice("loaning a sample"))?;
    let len = encode(sample.payload_mut())?;
    *sample.user_header_mut() = len as u64;
    sample.send().map_err(ice(
        "sending a sample (if the peer failed, its error is above)",
    ))?;
    Ok(())
}

/// The first `len` bytes of a payload: the encoded tuple.
fn exact(payload: &[u8], len: u64) -> Result<&[u8], BenchError> {
    usize::try_from(len)
        .ok()
        .and_then(|len| payload.get(..len))
        .ok_or_else(|| {
            BenchError::Protocol(format!(
                "a sample of {} bytes claims a tuple of {len}",
                payload.len()
            ))
        })
}

/// The tuple in a payload, validated.
fn view(payload: &[u8], len: u64) -> Result<TupleView<'_>, BenchError> {
    Ok(TupleView::from_bytes(exact(payload, len)?)?)
}

/// Polls `poll` until it yields, spinning, for at most [`STUCK`].
fn spin_until<T>(
    what: &str,
    mut poll: impl FnMut() -> Result<Option<T>, BenchError>,
) -> Result<T, BenchError> {
    let deadline = Instant::now() + STUCK;
    let mut spins = 0u32;
    loop {
        if let Some(value) = poll()? {
            return Ok(value);
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) && Instant::now() >= deadline {
            return Err(BenchError::Protocol(format!(
                "{what} did not come within {STUCK:?}"
            )));
        }
        std::hint::spin_loop();
    }
}

/// The bench's side of the start: waits for the peer's [`READY`], connects its own port with
/// `connect` (the peer's port exists now), and says [`GO`]. Both ports are then attached to
/// the connection, so a writer's first samples cannot be dropped for want of a reader.
fn handshake<E: std::fmt::Debug>(
    stream: &UnixStream,
    connect: impl FnOnce() -> Result<(), E>,
) -> Result<(), BenchError> {
    await_byte(stream, READY, "the iceoryx2 peer's ready")?;
    connect().map_err(ice("connecting to the peer's port"))?;
    send_byte(stream, GO)
}

/// The peer's side of the start: says [`READY`] and waits for [`GO`].
fn ready(stream: &UnixStream) -> Result<(), BenchError> {
    send_byte(stream, READY)?;
    await_byte(stream, GO, "the bench's go")
}

fn send_byte(stream: &UnixStream, byte: u8) -> Result<(), BenchError> {
    let mut stream = stream;
    stream
        .write_all(&[byte])
        .map_err(BenchError::io("writing to the other process"))
}

/// Reads one byte (the socket's time-out is [`STUCK`]) and checks it is `byte`.
fn await_byte(stream: &UnixStream, byte: u8, what: &str) -> Result<(), BenchError> {
    let mut got = [0u8; 1];
    let mut stream = stream;
    stream.read_exact(&mut got).map_err(BenchError::io(format!(
        "waiting for {what} (if the other process failed, its error is above)"
    )))?;
    if got[0] == byte {
        Ok(())
    } else {
        Err(BenchError::Protocol(format!(
            "expected {what}, got byte {}",
            got[0]
        )))
    }
}

/// An iceoryx2 failure while doing `what`.
fn ice<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> BenchError {
    move |e| BenchError::Protocol(format!("iceoryx2: {what}: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loans_hold_the_tuples() {
        let w = Workload::new();
        let mut encoder = Encoder::new();
        let mut small = vec![0u8; SMALL_CAP];
        for i in [0, 1, 17, 1 << 40, u64::MAX] {
            w.with_small(i, |t| encoder.encode_into(t, &mut small))
                .unwrap();
        }
        let mut large = vec![0u8; LARGE_CAP];
        w.with_large(1 << 40, |t| encoder.encode_into(t, &mut large))
            .unwrap();
    }

    #[test]
    fn a_length_beyond_the_payload_is_refused() {
        assert_eq!(exact(&[1, 2, 3], 2).unwrap(), &[1, 2]);
        assert!(exact(&[1, 2, 3], 4).is_err());
        assert!(exact(&[1, 2, 3], u64::MAX).is_err());
    }
}
