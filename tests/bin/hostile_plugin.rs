//! Child for `host_hostile`: an SDK plugin that attacks its host, one source symbol per attack.
//!
//! The SDK speaks the control protocol and writes valid tuples; the attacks go around it, with
//! `pread` / `pwrite` / `ftruncate` / `fcntl` / `fallocate` on the source ring's memfd, which
//! the plugin finds in `/proc/self/fd` (one source instance per process, so one ring).
//!
//! Every valid tuple is [`good`]: fields `n` (int), `blob` ([`BLOB_LEN`] bytes of [`BLOB_BYTE`])
//! and `s` ([`STR_LEN`] times [`STR_CHAR`]); the host checks each tuple it accepts against it.
//!
//! | symbol | attack |
//! | --- | --- |
//! | `rewrite` | flips the `blob` and `s` lengths between their true value and a huge one in a tight loop, record after record, while the host reads |
//! | `toctou` | rewrites the lengths to a huge value at stepped delays (89 µs down to 0) after the host wakes for each record, 300 attempts |
//! | `write-huge`, `write-unaligned`, `write-backwards`, `write-past-capacity` | scribbles the published write position |
//! | `header-garbage` | publishes a record header with a garbage length and kind |
//! | `tuple-garbage` | publishes a record of valid length and kind whose bytes are garbage |
//! | `punch-hole` | punches a hole over the whole memfd (zeroes it, positions included) |
//! | `truncate-shrink`, `truncate-grow`, `add-seals` | tries what the seals forbid, then emits one tuple `{refused: bool}` and ends |
//! | `sigstop` | a few good records, then stops its own process (never answers a ping again) |
//! | `control-garbage`, `control-oversized`, `control-wrong-version` | a few good records, then writes 4 KiB of garbage, a frame header announcing 4 GiB, or a frame of another header version into the control socket |
//! | `control-fds` | a few good records, then sends 2000 pings, each carrying an eventfd, then emits `{sent: frames}` and ends |
//!
//! Function `bad-reply` answers once, then publishes a garbage record in its reply ring.
//!
//! The modes that end with a corrupt ring leave a final garbage header behind their attack
//! (see [`poison_tail`]), so the host always meets an invalid record in the end, then wait for
//! the host to close the ring.

#![forbid(unsafe_code)]

#[path = "../support/memfd.rs"]
mod memfd;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use memfd::{Shm, header};
use rustix::fs::{FallocateFlags, SealFlags};
use rustix::process::{PidfdFlags, PidfdGetfdFlags};
use shmplug_sdk::transport::fdpass;
use shmplug_sdk::transport::layout::{
    HEADER_SIZE, KIND_PADDING, READ_POSITION_OFFSET, WRITE_POSITION_OFFSET, record_span,
};
use shmplug_sdk::transport::tuple::call::ReplyBatch;
use shmplug_sdk::transport::tuple::{FieldValue, RECORD_KIND};
use shmplug_sdk::{
    Emitter, Function, FunctionContext, PluginConfig, PluginError, Props, Source, SourceContext,
    Tuple, Value, ValueRef, ValueView,
};

/// Length of the `blob` field.
const BLOB_LEN: usize = 700;
/// Every byte of `blob`.
const BLOB_BYTE: u8 = 0x5a;
/// Length of the `s` field.
const STR_LEN: usize = 300;
/// Every character of `s`.
const STR_CHAR: char = 'q';
/// The length the attacks write over a field's true length.
const HUGE: u32 = 0x7fff_fff0;
/// Bound on every wait for the host.
const WAIT: Duration = Duration::from_secs(30);

const SOURCES: &[&str] = &[
    "rewrite",
    "toctou",
    "write-huge",
    "write-unaligned",
    "write-backwards",
    "write-past-capacity",
    "header-garbage",
    "tuple-garbage",
    "punch-hole",
    "truncate-shrink",
    "truncate-grow",
    "add-seals",
    "sigstop",
    "control-garbage",
    "control-oversized",
    "control-wrong-version",
    "control-fds",
];

fn main() {
    let mut config = PluginConfig::new("hostile");
    for &symbol in SOURCES {
        config = config.source(symbol, move || Hostile { mode: symbol });
    }
    config = config.function("bad-reply", || BadReply {
        calls: 0,
        over_answer: false,
    });
    config = config.function("over-answer", || BadReply {
        calls: 0,
        over_answer: true,
    });
    config = config.function("late", || Late { calls: 0 });
    shmplug_sdk::start(std::env::args(), config)
}

/// Function `bad-reply`: answers its first call with `good(0)`'s blob; during the second call
/// it publishes a garbage record in its reply ring and waits for the host to close the ring
/// (the SDK's answer would overwrite it), so the host must refuse the reply ring from then on.
///
/// Function `over-answer`: the same, but the record it slips in is a valid batch of replies
/// answering five calls from the second on, while only the second was made.
struct BadReply {
    calls: u64,
    over_answer: bool,
}

impl Function for BadReply {
    fn exec(
        &mut self,
        _ctx: &FunctionContext,
        _args: &[ValueView<'_>],
    ) -> Result<Value, PluginError> {
        self.calls += 1;
        if self.calls == 2 {
            let reply = Shm::find_all()
                .into_iter()
                .find(|shm| !shm.first_record_has("args"))
                .ok_or_else(|| PluginError::new("no reply ring"))?;
            let write = reply.u64_at(WRITE_POSITION_OFFSET);
            let at = reply.data_offset(write);
            assert!(
                at + 64 <= HEADER_SIZE as u64 + reply.capacity,
                "no wrap here"
            );
            let record = if self.over_answer {
                over_answer()
            } else {
                vec![0xa5; 48]
            };
            let len = record.len();
            assert!(
                at + record_span(len as u64) <= HEADER_SIZE as u64 + reply.capacity,
                "no wrap here"
            );
            reply.write(at + 16, &record);
            reply.write(at, &header(len as u32, RECORD_KIND));
            reply.set_u64(WRITE_POSITION_OFFSET, write + record_span(len as u64));
            wake_everything()?;
            // Let the host meet it before the SDK writes the answer over it.
            let deadline = Instant::now() + WAIT;
            while !reply.consumer_closed() && Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
        Ok(Value::Bytes(vec![BLOB_BYTE; BLOB_LEN]))
    }
}

/// Function `late`: answers each call with its first argument, but holds its first answer
/// until the host has written the next call (which it does only once the first timed out), so
/// that the late answer and the next one travel in one batch of replies.
struct Late {
    calls: u64,
}

impl Function for Late {
    fn exec(
        &mut self,
        _ctx: &FunctionContext,
        args: &[ValueView<'_>],
    ) -> Result<Value, PluginError> {
        self.calls += 1;
        if self.calls == 1 {
            let requests = Shm::find_all()
                .into_iter()
                .find(|shm| shm.first_record_has("args"))
                .ok_or_else(|| PluginError::new("no request ring"))?;
            let first = requests.u64_at(WRITE_POSITION_OFFSET);
            let deadline = Instant::now() + WAIT;
            while requests.u64_at(WRITE_POSITION_OFFSET) == first {
                if Instant::now() > deadline {
                    return Err(PluginError::new("the host never made a second call"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(args.first().map_or(Value::Null, ValueView::to_owned))
    }
}

/// A valid batch of replies to calls 2 to 6 (the host numbers calls from 1).
fn over_answer() -> Vec<u8> {
    let mut batch = ReplyBatch::new();
    for seq in 2..7 {
        assert!(batch.push(seq, FieldValue::Ref(ValueRef::Int(seq as i64))));
    }
    let mut record = vec![0; batch.record_len()];
    batch.write_into(&mut record);
    record
}

/// The valid tuple number `n`.
fn good(n: i64) -> Tuple {
    Tuple::new(n)
        .with_field("n", n)
        .with_field("blob", Value::Bytes(vec![BLOB_BYTE; BLOB_LEN]))
        .with_field("s", STR_CHAR.to_string().repeat(STR_LEN))
}

struct Hostile {
    mode: &'static str,
}

impl Source for Hostile {
    fn configure(&mut self, _data_source: &str, _props: &Props) -> Result<(), PluginError> {
        Ok(())
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        let shm = Shm::find();
        match self.mode {
            "rewrite" => rewrite(&shm, emitter)?,
            "toctou" => toctou(&shm, emitter)?,
            "truncate-shrink" | "truncate-grow" | "add-seals" => {
                return refused(&shm, emitter, self.mode);
            }
            "control-fds" => {
                // Nothing to notice in the ring: end the stream after the flood.
                return scribble(&shm, emitter, self.mode);
            }
            mode => scribble(&shm, emitter, mode)?,
        }
        // Wait (bounded) for the host to notice and close the ring, or for a stop.
        let deadline = Instant::now() + WAIT;
        while !shm.consumer_closed() && !ctx.is_cancelled() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        Ok(())
    }
}

/// Attack (a): rewrites each record's length fields in a tight loop while the host reads it.
fn rewrite(shm: &Shm, emitter: &mut Emitter) -> Result<(), PluginError> {
    const RECORDS: i64 = 200;
    const FLIPS: usize = 200;
    for n in 0..RECORDS {
        let fields = emit_and_find(shm, emitter, n)?;
        for _ in 0..FLIPS {
            for &(at, true_len) in &fields {
                shm.write(at, &HUGE.to_le_bytes());
                shm.write(at, &true_len.to_le_bytes());
            }
        }
        if shm.consumer_closed() {
            return Ok(());
        }
    }
    poison_tail(shm);
    Ok(())
}

/// Attack (a): time-of-check sweep. Waits for the host to park, publishes a record (which
/// wakes the host), waits for the host to be awake, waits a stepped delay, then makes the
/// record's lengths huge and leaves them so; then waits for the host to take the record.
fn toctou(shm: &Shm, emitter: &mut Emitter) -> Result<(), PluginError> {
    const ATTEMPTS: i64 = 300;
    for n in 0..ATTEMPTS {
        // The host parks between receives; if it does not within a moment, go anyway.
        let parked = Instant::now() + Duration::from_millis(50);
        while !shm.consumer_waiting() && Instant::now() < parked {
            std::thread::yield_now();
        }
        let fields = emit_and_find(shm, emitter, n)?;
        let awake = Instant::now() + Duration::from_millis(50);
        while shm.consumer_waiting() && Instant::now() < awake {
            std::hint::spin_loop();
        }
        let woke = Instant::now();
        // From 89 µs after the host woke down to none, in steps that shrink quadratically
        // (600 ns at first, 20 ns near the end): the early attempts land after the host is done
        // with the record, the late ones, finely spaced, while it checks and reads it, the last
        // ones before it looks.
        let k = (ATTEMPTS - 1 - n) as u64;
        let delay = Duration::from_nanos(k * k);
        while woke.elapsed() < delay {
            std::hint::spin_loop();
        }
        for &(at, _) in &fields {
            shm.write(at, &HUGE.to_le_bytes());
        }
        let write = shm.u64_at(WRITE_POSITION_OFFSET);
        let deadline = Instant::now() + WAIT;
        while shm.u64_at(READ_POSITION_OFFSET) < write && !shm.consumer_closed() {
            if Instant::now() > deadline {
                return Err(PluginError::new("the host never took the record"));
            }
            std::thread::yield_now();
        }
        if shm.consumer_closed() {
            return Ok(());
        }
    }
    poison_tail(shm);
    Ok(())
}

/// Attacks (b), (c), (d: punch-hole): a few good records, read by the host, then the scribble.
fn scribble(shm: &Shm, emitter: &mut Emitter, mode: &str) -> Result<(), PluginError> {
    for n in 0..5 {
        emitter.emit_owned(&good(n))?;
    }
    let write = shm.u64_at(WRITE_POSITION_OFFSET);
    let deadline = Instant::now() + WAIT;
    while shm.u64_at(READ_POSITION_OFFSET) < write {
        if Instant::now() > deadline {
            return Err(PluginError::new("the host never read the good records"));
        }
        std::thread::yield_now();
    }
    let read = shm.u64_at(READ_POSITION_OFFSET);
    match mode {
        "write-huge" => shm.set_u64(WRITE_POSITION_OFFSET, u64::MAX - 15),
        "write-unaligned" => shm.set_u64(WRITE_POSITION_OFFSET, write + 3),
        "write-backwards" => shm.set_u64(WRITE_POSITION_OFFSET, write - 16),
        "write-past-capacity" => {
            shm.set_u64(WRITE_POSITION_OFFSET, read + shm.capacity + 16);
        }
        "header-garbage" => {
            shm.write(shm.data_offset(write), &header(0xffff_ff00, 0xdead_beef));
            shm.set_u64(WRITE_POSITION_OFFSET, write + 64);
        }
        "tuple-garbage" => {
            let at = shm.data_offset(write);
            assert!(at + 64 <= HEADER_SIZE as u64 + shm.capacity, "no wrap here");
            shm.write(at + 16, &[0xa5; 48]);
            shm.write(at, &header(48, RECORD_KIND));
            shm.set_u64(WRITE_POSITION_OFFSET, write + record_span(48));
        }
        "sigstop" => {
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP)
                .map_err(|e| PluginError::new(format!("stopping myself: {e}")))?;
        }
        "control-garbage" | "control-oversized" | "control-wrong-version" => {
            control_attack(mode)?;
        }
        "control-fds" => {
            let sent = control_attack(mode)?;
            emitter.emit_owned(&good(5).with_field("sent", sent))?;
        }
        "punch-hole" => {
            rustix::fs::fallocate(
                &shm.file,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                0,
                HEADER_SIZE as u64 + shm.capacity,
            )
            .map_err(|e| PluginError::new(format!("punching a hole: {e}")))?;
        }
        other => return Err(PluginError::new(format!("no such attack {other}"))),
    }
    Ok(())
}

/// Attack (f): writes what `mode` says into a copy of the SDK's control socket (taken with
/// `pidfd_getfd`, since safe code cannot adopt a descriptor by number).
/// Returns how many frames went out.
fn control_attack(mode: &str) -> Result<i64, PluginError> {
    use shmplug_sdk::transport::control::{
        CONTROL_FD_ENV, FRAME_MAGIC, FRAME_VERSION, Message, encode_frame,
    };
    let number: i32 = std::env::var(CONTROL_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PluginError::new("no control descriptor number"))?;
    let me = rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty())
        .map_err(|e| PluginError::new(format!("pidfd_open: {e}")))?;
    let socket: UnixStream = rustix::process::pidfd_getfd(&me, number, PidfdGetfdFlags::empty())
        .map_err(|e| PluginError::new(format!("pidfd_getfd: {e}")))?
        .into();
    let mut frame = Vec::new();
    frame.extend_from_slice(&FRAME_MAGIC);
    match mode {
        "control-garbage" => frame = vec![0xa5; 4096],
        "control-oversized" => {
            frame.extend_from_slice(&FRAME_VERSION.to_le_bytes());
            frame.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        "control-wrong-version" => {
            frame.extend_from_slice(&99u32.to_le_bytes());
            frame.extend_from_slice(&2u32.to_le_bytes());
            frame.extend_from_slice(b"{}");
        }
        _ => {
            let ping = encode_frame(&Message::Ping { nonce: 7 })
                .map_err(|e| PluginError::new(e.to_string()))?;
            let mut sent = 0;
            while sent < 2000 {
                let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
                    .map_err(|e| PluginError::new(format!("eventfd: {e}")))?;
                if fdpass::send_with_fds(&socket, &ping, &[eventfd.as_fd()]).is_err() {
                    // The host hung up on us: the attack was noticed.
                    break;
                }
                sent += 1;
            }
            return Ok(sent);
        }
    }
    // The host may hang up on the first bytes: a failed write is fine.
    let _ = (&socket).write_all(&frame);
    Ok(1)
}

/// Signals every eventfd of this process, so a host parked on a ring's eventfd looks at what
/// was written behind the SDK's back.
fn wake_everything() -> Result<(), PluginError> {
    let me = rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty())
        .map_err(|e| PluginError::new(format!("pidfd_open: {e}")))?;
    for entry in std::fs::read_dir("/proc/self/fd").expect("listing descriptors") {
        let entry = entry.expect("descriptor entry");
        let is_eventfd = std::fs::read_link(entry.path())
            .is_ok_and(|link| link.as_os_str() == "anon_inode:[eventfd]");
        let number = entry.file_name().to_str().and_then(|n| n.parse().ok());
        if let (true, Some(number)) = (is_eventfd, number) {
            let fd = rustix::process::pidfd_getfd(&me, number, PidfdGetfdFlags::empty())
                .map_err(|e| PluginError::new(format!("pidfd_getfd: {e}")))?;
            // A full counter refuses the write: the other side is awake anyway.
            let _ = rustix::io::write(&fd, &1u64.to_ne_bytes());
        }
    }
    Ok(())
}

/// Attack (d): what the seals forbid. Emits `{refused: true}` if the kernel refused it.
fn refused(shm: &Shm, emitter: &mut Emitter, mode: &str) -> Result<(), PluginError> {
    let size = HEADER_SIZE as u64 + shm.capacity;
    let outcome = match mode {
        "truncate-shrink" => rustix::fs::ftruncate(&shm.file, 4096),
        "truncate-grow" => rustix::fs::ftruncate(&shm.file, size * 4),
        _ => rustix::fs::fcntl_add_seals(&shm.file, SealFlags::WRITE),
    };
    let refused = outcome.is_err();
    emitter.emit_owned(&good(0).with_field("refused", refused))
}

/// Emits `good(n)` and returns the segment offsets of its length fields with their values.
fn emit_and_find(shm: &Shm, emitter: &mut Emitter, n: i64) -> Result<Vec<(u64, u32)>, PluginError> {
    let before = shm.u64_at(WRITE_POSITION_OFFSET);
    emitter.emit_owned(&good(n))?;
    let after = shm.u64_at(WRITE_POSITION_OFFSET);
    let mut pos = before;
    while pos < after {
        let at = shm.data_offset(pos);
        let mut raw = [0u8; 16];
        shm.read(at, &mut raw);
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let kind = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        if kind == KIND_PADDING {
            pos += record_span(u64::from(len));
            continue;
        }
        let mut payload = vec![0u8; len as usize];
        shm.read(at + 16, &mut payload);
        let fields: Vec<(u64, u32)> = payload
            .chunks_exact(4)
            .enumerate()
            .filter_map(|(i, w)| {
                let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                (v == BLOB_LEN as u32 || v == STR_LEN as u32).then_some((at + 16 + 4 * i as u64, v))
            })
            .collect();
        if fields.is_empty() {
            return Err(PluginError::new("no length field found in the record"));
        }
        return Ok(fields);
    }
    Err(PluginError::new("the emitted record is not in the ring"))
}

/// Publishes a record header whose length runs far past anything written, behind whatever
/// the attack left, so the host meets an invalid record for certain.
fn poison_tail(shm: &Shm) {
    let write = shm.u64_at(WRITE_POSITION_OFFSET);
    shm.write(shm.data_offset(write), &header(0xffff_fff0, RECORD_KIND));
    shm.set_u64(WRITE_POSITION_OFFSET, write + 16);
}
