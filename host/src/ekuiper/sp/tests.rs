use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn socket_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn req_and_rep_exchange_with_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir, "rep.ipc");
    let listener = SpListener::bind(&path).unwrap();
    std::thread::scope(|s| {
        let client = s.spawn(|| {
            let mut req = Req::new(SpStream::connect(&path, proto::REQ, 1 << 20, WAIT).unwrap());
            let reply = req.request(b"handshake", WAIT).unwrap().to_vec();
            assert_eq!(reply, b"command");
            let reply = req.request(b"ok", WAIT).unwrap().to_vec();
            assert_eq!(reply, b"second");
        });
        let mut rep = Rep::new(listener.accept(proto::REP, 1 << 20, WAIT).unwrap());
        assert_eq!(rep.recv(WAIT).unwrap(), b"handshake");
        rep.reply(b"command").unwrap();
        assert_eq!(rep.recv(WAIT).unwrap(), b"ok");
        rep.reply(b"second").unwrap();
        client.join().unwrap();
    });
    drop(listener);
    assert!(!path.exists(), "the listener removes its socket file");
}

#[test]
fn push_and_pull_carry_messages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir, "pull.ipc");
    let listener = SpListener::bind(&path).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut push = SpStream::connect(&path, proto::PUSH, 1 << 20, WAIT).unwrap();
            for i in 0..1000u32 {
                push.send(&[b"n", &i.to_le_bytes()]).unwrap();
            }
            let big = vec![7u8; 200_000];
            push.send(&[&big]).unwrap();
        });
        let mut pull = listener.accept(proto::PULL, 1 << 20, WAIT).unwrap();
        let mut buf = Vec::new();
        for i in 0..1000u32 {
            pull.recv_timeout(&mut buf, WAIT).unwrap();
            assert_eq!(buf[0], b'n');
            assert_eq!(buf[1..], i.to_le_bytes());
        }
        pull.recv_timeout(&mut buf, WAIT).unwrap();
        assert_eq!(buf.len(), 200_000);
        assert!(matches!(
            pull.recv_timeout(&mut buf, WAIT),
            Err(SpError::Closed)
        ));
    });
}

#[test]
fn a_peer_of_the_wrong_protocol_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir, "wrong.ipc");
    let listener = SpListener::bind(&path).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // A PULL connecting to a PULL: it may or may not see the other side's refusal.
            let _ = SpStream::connect(&path, proto::PULL, 1 << 20, WAIT);
        });
        let err = listener.accept(proto::PULL, 1 << 20, WAIT).unwrap_err();
        assert!(err.to_string().contains("protocol 0x51"), "{err}");
    });
}

/// Raw bytes from a hostile peer after a valid header: each is refused with a clear error.
fn after_header(bytes: &[u8]) -> SpError {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut header = [0u8, b'S', b'P', 0, 0, 0, 0, 0];
    header[4..6].copy_from_slice(&proto::REQ.to_be_bytes());
    (&theirs).write_all(&header).unwrap();
    (&theirs).write_all(bytes).unwrap();
    // The end of what it sends; it still reads (our header).
    theirs.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rep = Rep::new(SpStream::handshake(ours, proto::REP, 1024).unwrap());
    let err = rep.recv(WAIT).map(<[u8]>::to_vec).unwrap_err();
    drop(theirs);
    err
}

#[test]
fn hostile_frames_are_errors() {
    let err = after_header(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert!(err.to_string().contains("type byte"), "{err}");
    let mut too_long = vec![1];
    too_long.extend_from_slice(&u64::MAX.to_be_bytes());
    let err = after_header(&too_long);
    assert!(matches!(err, SpError::TooLong { .. }), "{err}");
    // A request whose header words never set the top bit.
    let mut no_id = vec![1];
    no_id.extend_from_slice(&40u64.to_be_bytes());
    no_id.extend_from_slice(&[0u8; 40]);
    let err = after_header(&no_id);
    assert!(err.to_string().contains("request id"), "{err}");
    // A message cut short: the peer closed in its middle.
    let mut short = vec![1];
    short.extend_from_slice(&10u64.to_be_bytes());
    short.extend_from_slice(&[0x80, 0, 0, 1]);
    let err = after_header(&short);
    assert!(matches!(err, SpError::Closed), "{err}");
}

#[test]
fn a_header_that_is_not_sp_is_refused() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    (&theirs).write_all(b"GET / HT").unwrap();
    let err = SpStream::handshake(ours, proto::PULL, 1024).unwrap_err();
    assert!(err.to_string().contains("not an SP header"), "{err}");
}

#[test]
fn a_quiet_peer_times_out_without_losing_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir, "quiet.ipc");
    let listener = SpListener::bind(&path).unwrap();
    let mut push = None;
    std::thread::scope(|s| {
        let connect = s.spawn(|| SpStream::connect(&path, proto::PUSH, 1024, WAIT).unwrap());
        let mut pull = listener.accept(proto::PULL, 1024, WAIT).unwrap();
        push = Some(connect.join().unwrap());
        let mut buf = Vec::new();
        assert!(matches!(
            pull.recv_timeout(&mut buf, Duration::from_millis(20)),
            Err(SpError::TimedOut(_))
        ));
        push.as_mut().unwrap().send(&[b"late"]).unwrap();
        pull.recv_timeout(&mut buf, WAIT).unwrap();
        assert_eq!(buf, b"late");
    });
}

#[test]
fn after_a_refused_frame_the_connection_is_closed() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut header = [0u8, b'S', b'P', 0, 0, 0, 0, 0];
    header[4..6].copy_from_slice(&proto::PUSH.to_be_bytes());
    (&theirs).write_all(&header).unwrap();
    let mut too_long = vec![1];
    too_long.extend_from_slice(&2000u64.to_be_bytes());
    too_long.extend_from_slice(&[0; 64]);
    (&theirs).write_all(&too_long).unwrap();
    let mut pull = SpStream::handshake(ours, proto::PULL, 1024).unwrap();
    let mut buf = Vec::new();
    assert!(matches!(
        pull.recv_timeout(&mut buf, WAIT),
        Err(SpError::TooLong { .. })
    ));
    assert!(matches!(
        pull.recv_timeout(&mut buf, WAIT),
        Err(SpError::Closed)
    ));
    drop(theirs);
}
