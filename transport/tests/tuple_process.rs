//! Tuple channels across mappings and processes: the archive holds only relative positions, so
//! a tuple written through one mapping of a ring reads the same through another, and a child
//! process echoes tuples back through a pair of rings it received over a Unix socket.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use shmplug_transport::tuple::{Tuple, TupleReceiver, TupleSender, Value};
use shmplug_transport::{EndpointConfig, Error, Ring, RingFds, fdpass};

const WAIT: Duration = Duration::from_secs(30);
const CHILD_ENV: &str = "SHMPLUG_TUPLE_ECHO_SOCKET";

fn cfg() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(5))
}

fn samples(n: i64) -> Vec<Tuple> {
    (0..n)
        .map(|i| {
            Tuple::new(i * 1_000_000_007)
                .with_field("i", i)
                .with_field("f", if i % 7 == 0 { f64::NAN } else { i as f64 / 3.0 })
                .with_field("s", "\u{1f980}".repeat(i as usize % 5))
                .with_field("b", vec![i as u8; (i as usize * 37) % 600])
                .with_field("l", vec![Value::Int(i), Value::Timestamp(-i), Value::Null])
                .with_meta("seq", i)
        })
        .collect()
}

#[test]
fn a_second_mapping_reads_what_the_first_wrote() {
    let ring = Ring::create(1 << 14).expect("ring");
    let [memory, data_ready, space_ready] = ring.fds()[..] else {
        panic!("a new ring has three descriptors")
    };
    let fds = RingFds {
        memory: memory.try_clone_to_owned().expect("dup"),
        data_ready: data_ready.try_clone_to_owned().expect("dup"),
        space_ready: space_ready.try_clone_to_owned().expect("dup"),
    };
    let other = Ring::from_fds(fds).expect("second mapping");
    let mut tx = TupleSender::new(ring.producer(cfg()).expect("producer"));
    let mut rx = TupleReceiver::new(other.consumer(cfg()).expect("consumer"));
    let tuples = samples(100);
    std::thread::scope(|s| {
        s.spawn(|| {
            for t in &tuples {
                tx.send_timeout(t, WAIT).expect("send");
            }
            drop(tx);
        });
        for t in &tuples {
            assert_eq!(&rx.recv_timeout(WAIT).expect("recv").to_owned(), t);
        }
        assert!(matches!(rx.recv_timeout(WAIT), Err(Error::Closed)));
    });
}

/// The child's half of `a_child_process_echoes_tuples`; does nothing in a normal test run.
#[test]
fn child_echoes_tuples() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
    let socket = UnixStream::connect_addr(&addr).expect("connect");
    let inbound = fdpass::recv_ring(&socket).expect("inbound ring");
    let outbound = fdpass::recv_ring(&socket).expect("outbound ring");
    let mut rx = TupleReceiver::new(inbound.consumer(cfg()).expect("consumer"));
    let mut tx = TupleSender::new(outbound.producer(cfg()).expect("producer"));
    loop {
        let mut tuple = match rx.recv_timeout(WAIT) {
            Ok(view) => view.to_owned(),
            Err(Error::Closed) => break,
            Err(e) => panic!("child: {e}"),
        };
        tuple.meta.insert(
            "echoed_by".to_owned(),
            Value::Int(i64::from(std::process::id())),
        );
        tx.send_timeout(&tuple, WAIT).expect("echo");
    }
}

#[test]
fn a_child_process_echoes_tuples() {
    let name = format!("shmplug-tuple-echo-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
    let listener = UnixListener::bind_addr(&addr).expect("listen");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_echoes_tuples", "--test-threads=1"])
        .env(CHILD_ENV, &name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let child_pid = i64::from(child.id());
    // If the child dies before connecting, unblock `accept` so the test fails instead of hanging.
    let watchdog = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = UnixStream::connect_addr(&addr);
        output
    });
    let (socket, _) = listener.accept().expect("accept");
    let to_child = Ring::create(1 << 14).expect("ring");
    let from_child = Ring::create(1 << 14).expect("ring");
    fdpass::send_ring(&socket, &to_child).expect("send ring");
    fdpass::send_ring(&socket, &from_child).expect("send ring");
    let mut tx = TupleSender::new(to_child.producer(cfg()).expect("producer"));
    let mut rx = TupleReceiver::new(from_child.consumer(cfg()).expect("consumer"));

    let tuples = samples(300);
    std::thread::scope(|s| {
        s.spawn(|| {
            for t in &tuples {
                tx.send_timeout(t, WAIT).expect("send");
            }
            drop(tx); // end of stream: the child stops echoing and exits
        });
        for t in &tuples {
            let mut echoed = rx.recv_timeout(WAIT).expect("echo").to_owned();
            assert_eq!(echoed.meta.remove("echoed_by"), Some(Value::Int(child_pid)));
            assert_eq!(&echoed, t);
        }
        assert!(matches!(rx.recv_timeout(WAIT), Err(Error::Closed)));
    });
    let output = watchdog.join().expect("watchdog").expect("wait");
    assert!(
        output.status.success(),
        "child failed: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
