//! The eKuiper portable-plugin way: each tuple a JSON message, framed by a little-endian `u32`
//! length, over a Unix socket between two processes. The reader decodes each message into a
//! generic JSON value (Go's `map[string]interface{}`) and checks its fields.
//!
//! The pipeline as eKuiper runs portable plugins: the peer process is the plugin, with its
//! source, function and sink each on a socket of its own (eKuiper gives each symbol its own
//! channel) and a thread each; this process is the engine. Per tuple it decodes the source's
//! message into a generic map, calls the function with the two fields as a JSON array and
//! waits for its JSON answer (a call is a request and its reply, as eKuiper's function calls
//! are), adds the answer to the map, and encodes it for the sink, which decodes and checks
//! every field. Writes to the sink are buffered; the calls cannot be.

use std::io::{BufReader, BufWriter, Read, Write};
use std::time::Instant;

use super::peer::{self, Peer, Rendezvous};
use super::pipeline::{self, ANSWER, ARGS, WIDE_FIELDS, WideJson};
use super::workload::{LARGE_BYTES, Workload};
use super::{BenchError, Case, Launcher, Measurement};

/// Calls before timing starts.
const WARM_UP: u64 = 500;
/// The largest frame either side accepts: a 1 MiB field in base64 with room to spare.
const MAX_FRAME: usize = 4 << 20;

pub(super) fn measure(case: Case, n: u64, launcher: &Launcher) -> Result<Measurement, BenchError> {
    if case == Case::Pipeline {
        return measure_pipeline(n, launcher);
    }
    let workload = Workload::new();
    let rendezvous = Rendezvous::new()?;
    // A short run (a test) warms up as long as it measures.
    let warm_up = WARM_UP.min(n);
    let total = if case == Case::FunctionRtt {
        n + warm_up
    } else {
        n
    };
    let mut child = Peer::spawn(
        launcher,
        "json-uds",
        &[
            case.name().into(),
            rendezvous.path(),
            total.to_string().into(),
        ],
    )?;
    let stream = rendezvous.accept(&mut child)?;
    let measurement = match case {
        Case::SourceSmall | Case::Large1Mib => {
            let mut reader = BufReader::with_capacity(1 << 16, &stream);
            let mut frame = Vec::new();
            let mut start = None;
            for i in 0..n {
                read_frame(&mut reader, &mut frame)?;
                start.get_or_insert_with(Instant::now);
                let json = decode(&frame)?;
                if case == Case::SourceSmall {
                    workload.check_small_json(&json, i)?;
                } else {
                    workload.check_large_json(&json, i)?;
                }
            }
            let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
            let bytes = if case == Case::Large1Mib {
                LARGE_BYTES as u64
            } else {
                0
            };
            Measurement::throughput(n.saturating_sub(1), elapsed, bytes)
        }
        Case::SinkSmall => {
            let start = Instant::now();
            let mut writer = BufWriter::with_capacity(1 << 16, &stream);
            let mut frame = Vec::new();
            for i in 0..n {
                encode(&workload.small_json(i), &mut frame)?;
                writer
                    .write_all(&frame)
                    .map_err(BenchError::io("writing to the peer"))?;
            }
            writer
                .flush()
                .map_err(BenchError::io("writing to the peer"))?;
            drop(writer);
            let mut ack = [0u8; 8];
            (&stream)
                .read_exact(&mut ack)
                .map_err(BenchError::io("reading the peer's count"))?;
            let elapsed = start.elapsed();
            if u64::from_le_bytes(ack) != n {
                return Err(BenchError::Protocol(format!(
                    "the JSON sink counted {} tuples of {n}",
                    u64::from_le_bytes(ack)
                )));
            }
            Measurement::throughput(n, elapsed, 0)
        }
        Case::Pipeline => unreachable!("measured above"),
        Case::FunctionRtt => {
            let mut reader = BufReader::with_capacity(1 << 16, &stream);
            let mut frame = Vec::new();
            let mut reply = Vec::new();
            let mut samples = Vec::with_capacity(n as usize);
            for i in 0..total {
                let start = Instant::now();
                encode(&workload.small_json_args(i), &mut frame)?;
                (&stream)
                    .write_all(&frame)
                    .map_err(BenchError::io("writing a call"))?;
                read_frame(&mut reader, &mut reply)?;
                let answer = decode(&reply)?;
                // The clock stops once the answer is decoded, as for the other calls.
                let took = start.elapsed();
                workload.check_small_json(&answer, i)?;
                if i >= warm_up {
                    samples.push(took.as_nanos() as u64);
                }
            }
            Measurement::round_trips(&mut samples)
        }
    };
    drop(stream);
    child.wait()?;
    Ok(measurement)
}

/// The peer: the source writing messages, the sink reading them, or the echo function.
pub(super) fn peer(args: &[String]) -> Result<(), BenchError> {
    let (case, path, n) = peer::case_args(args)?;
    if case == Case::Pipeline {
        return pipeline_peer(path, n);
    }
    let stream = peer::connect(path)?;
    let workload = Workload::new();
    let mut frame = Vec::new();
    match case {
        Case::SourceSmall | Case::Large1Mib => {
            let mut writer = BufWriter::with_capacity(1 << 16, &stream);
            for i in 0..n {
                if case == Case::SourceSmall {
                    encode(&workload.small_json(i), &mut frame)?;
                } else {
                    encode(&workload.large_json(i), &mut frame)?;
                }
                writer
                    .write_all(&frame)
                    .map_err(BenchError::io("writing to the bench"))?;
            }
            writer
                .flush()
                .map_err(BenchError::io("writing to the bench"))?;
        }
        Case::SinkSmall => {
            let mut reader = BufReader::with_capacity(1 << 16, &stream);
            for i in 0..n {
                read_frame(&mut reader, &mut frame)?;
                workload.check_small_json(&decode(&frame)?, i)?;
            }
            (&stream)
                .write_all(&n.to_le_bytes())
                .map_err(BenchError::io("writing the count"))?;
        }
        Case::Pipeline => unreachable!("run above"),
        Case::FunctionRtt => {
            let mut reader = BufReader::with_capacity(1 << 16, &stream);
            let mut reply = Vec::new();
            for _ in 0..n {
                read_frame(&mut reader, &mut frame)?;
                let args = decode(&frame)?;
                encode(&args, &mut reply)?;
                (&stream)
                    .write_all(&reply)
                    .map_err(BenchError::io("writing a reply"))?;
            }
        }
    }
    Ok(())
}

/// The engine's side of the pipeline: source, function and sink sockets, in that order.
fn measure_pipeline(n: u64, launcher: &Launcher) -> Result<Measurement, BenchError> {
    let rendezvous = Rendezvous::new()?;
    let mut child = Peer::spawn(
        launcher,
        "json-uds",
        &[
            Case::Pipeline.name().into(),
            rendezvous.path(),
            n.to_string().into(),
        ],
    )?;
    let source = rendezvous.accept(&mut child)?;
    let function = rendezvous.accept(&mut child)?;
    let sink = rendezvous.accept(&mut child)?;
    let mut source_reader = BufReader::with_capacity(1 << 16, &source);
    let mut function_reader = BufReader::with_capacity(1 << 16, &function);
    let mut sink_writer = BufWriter::with_capacity(1 << 16, &sink);
    let (mut frame, mut call, mut reply, mut out) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut start = None;
    for _ in 0..n {
        read_frame(&mut source_reader, &mut frame)?;
        start.get_or_insert_with(Instant::now);
        let mut tuple = decode(&frame)?;
        let arg = |k: usize| tuple.get(WIDE_FIELDS[ARGS[k]]);
        encode(&(arg(0), arg(1)), &mut call)?;
        (&function)
            .write_all(&call)
            .map_err(BenchError::io("writing a call"))?;
        read_frame(&mut function_reader, &mut reply)?;
        let answer = decode(&reply)?;
        tuple
            .as_object_mut()
            .ok_or_else(|| BenchError::Protocol("the source sent a non-object".into()))?
            .insert(ANSWER.to_owned(), answer);
        encode(&tuple, &mut out)?;
        sink_writer
            .write_all(&out)
            .map_err(BenchError::io("writing to the sink"))?;
    }
    sink_writer
        .flush()
        .map_err(BenchError::io("writing to the sink"))?;
    drop(sink_writer);
    let mut ack = [0u8; 8];
    (&sink)
        .read_exact(&mut ack)
        .map_err(BenchError::io("reading the sink's count"))?;
    let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
    if u64::from_le_bytes(ack) != n {
        return Err(BenchError::Protocol(format!(
            "the JSON sink counted {} tuples of {n}",
            u64::from_le_bytes(ack)
        )));
    }
    drop((source_reader, function_reader));
    drop((source, function, sink));
    child.wait()?;
    Ok(Measurement::throughput(n, elapsed, 0))
}

/// The plugin's side of the pipeline: the source, the function and the sink, each on its own
/// socket and thread.
fn pipeline_peer(path: &str, n: u64) -> Result<(), BenchError> {
    let source = peer::connect(path)?;
    let function = peer::connect(path)?;
    let sink = peer::connect(path)?;
    let workload = Workload::new();
    let workload = &workload;
    std::thread::scope(|s| {
        let source = s.spawn(move || -> Result<(), BenchError> {
            let mut writer = BufWriter::with_capacity(1 << 16, &source);
            let mut frame = Vec::new();
            for i in 0..n {
                encode(&WideJson { workload, i }, &mut frame)?;
                writer
                    .write_all(&frame)
                    .map_err(BenchError::io("writing to the engine"))?;
            }
            writer
                .flush()
                .map_err(BenchError::io("writing to the engine"))
        });
        let function = s.spawn(move || -> Result<(), BenchError> {
            let mut reader = BufReader::with_capacity(1 << 16, &function);
            let (mut frame, mut reply) = (Vec::new(), Vec::new());
            for _ in 0..n {
                read_frame(&mut reader, &mut frame)?;
                let args = decode(&frame)?;
                let arg = |k: usize| args.get(k).and_then(|a| a.as_f64());
                let answer = pipeline::function(arg(0), arg(1))
                    .ok_or_else(|| BenchError::Protocol("add takes two numbers".into()))?;
                encode(&answer, &mut reply)?;
                (&function)
                    .write_all(&reply)
                    .map_err(BenchError::io("writing a reply"))?;
            }
            Ok(())
        });
        let mut reader = BufReader::with_capacity(1 << 16, &sink);
        let mut frame = Vec::new();
        for i in 0..n {
            read_frame(&mut reader, &mut frame)?;
            pipeline::check_json(workload, &decode(&frame)?, i)?;
        }
        (&sink)
            .write_all(&n.to_le_bytes())
            .map_err(BenchError::io("writing the count"))?;
        for (what, thread) in [("source", source), ("function", function)] {
            thread
                .join()
                .map_err(|_| BenchError::Protocol(format!("the JSON {what} thread panicked")))??;
        }
        Ok(())
    })
}

/// Replaces `out` with the frame of `message`.
fn encode(message: &impl serde::Serialize, out: &mut Vec<u8>) -> Result<(), BenchError> {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *out, message)
        .map_err(|e| BenchError::Protocol(format!("encoding JSON: {e}")))?;
    let len = u32::try_from(out.len() - 4)
        .map_err(|_| BenchError::Protocol("a JSON message over 4 GiB".into()))?;
    out[..4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Reads one frame's message into `out`.
fn read_frame(reader: &mut impl Read, out: &mut Vec<u8>) -> Result<(), BenchError> {
    let mut len = [0u8; 4];
    reader
        .read_exact(&mut len)
        .map_err(BenchError::io("reading a frame length"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(BenchError::Protocol(format!(
            "a frame of {len} bytes, more than the {MAX_FRAME} allowed"
        )));
    }
    out.resize(len, 0);
    reader
        .read_exact(out)
        .map_err(BenchError::io("reading a frame"))
}

fn decode(frame: &[u8]) -> Result<serde_json::Value, BenchError> {
    serde_json::from_slice(frame).map_err(|e| BenchError::Protocol(format!("decoding JSON: {e}")))
}
