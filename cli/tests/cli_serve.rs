//! `shmplug serve` as a real process on an ephemeral port, driven by a real HTTP client:
//! eKuiper's portable plugin endpoints with the mirror example plugin (this test binary runs
//! it, started by a package's script), `/metrics`, bad input answered with eKuiper's statuses
//! and error shapes, and a clean stop on SIGTERM and SIGINT.
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;

mod support;

use serde_json::Value;
use support::cli::{self, shmplug, stdout};
use support::{WAIT, gone_or_zombie, wait_for};

/// Set in the mirror package's script: this test binary then runs the mirror plugin.
const MIRROR_ENV: &str = "SHMPLUG_TEST_RUN_MIRROR";

#[test]
fn mirror_plugin_entry() {
    if std::env::var_os(MIRROR_ENV).is_some() {
        let config = mirror::plugin_config().function("refuse", || Refuse);
        shmplug_sdk::start(["mirror"], config);
    }
}

/// A function whose arguments pass the load-time check and whose every call fails (added to
/// the mirror plugin for the metrics test).
struct Refuse;

impl shmplug_sdk::Function for Refuse {
    fn exec(
        &mut self,
        _: &shmplug_sdk::FunctionContext,
        _: &[shmplug_sdk::ValueView<'_>],
    ) -> Result<shmplug_sdk::Value, shmplug_sdk::PluginError> {
        Err(shmplug_sdk::PluginError::new("refused, as every call is"))
    }
}

/// A temporary directory with the plugins directory `plugins/` and packages in `work/`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Fixture { dir }
    }

    fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// A zip `work/{file}` holding `(name, contents, mode)` entries; its `file://` URL.
    fn zip(&self, file: &str, entries: &[(&str, &str, u32)]) -> String {
        let path = self.dir.path().join("work").join(file);
        let mut writer = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for (name, contents, mode) in entries {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            writer.start_file(*name, options).unwrap();
            writer.write_all(contents.as_bytes()).unwrap();
        }
        writer.finish().unwrap();
        format!("file://{}", path.display())
    }

    /// The mirror plugin at `version`, packaged as eKuiper packages a portable plugin:
    /// `mirror.json` and the executable (a script that runs this test binary as mirror).
    fn mirror_zip(&self, file: &str, version: &str) -> String {
        let manifest = format!(
            r#"{{"version": "{version}", "language": "rust", "executable": "run.sh",
                "sources": ["random", "counter"], "sinks": ["file"], "functions": ["echo", "refuse"]}}"#
        );
        let script = format!(
            "#!/bin/sh\nexport {MIRROR_ENV}=1\nexec '{}' --exact mirror_plugin_entry --nocapture --test-threads=1\n",
            std::env::current_exe().unwrap().display()
        );
        self.zip(
            file,
            &[
                ("mirror.json", &manifest, 0o644),
                ("run.sh", &script, 0o755),
            ],
        )
    }
}

/// A running `shmplug serve`, killed and reaped on drop.
struct Server {
    child: std::process::Child,
    base: String,
    stderr: PathBuf,
    agent: ureq::Agent,
}

impl Server {
    fn start(fixture: &Fixture) -> Server {
        Server::start_with(fixture, &[])
    }

    /// A server with `args` after `serve --listen 127.0.0.1:0`.
    fn start_with(fixture: &Fixture, args: &[&str]) -> Server {
        let stderr = fixture.dir.path().join("serve.stderr");
        let mut command_line = vec!["serve", "--listen", "127.0.0.1:0"];
        command_line.extend_from_slice(args);
        let mut child = cli::command(&fixture.plugins(), &command_line)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start shmplug serve");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = Server {
            child,
            base: String::new(),
            stderr,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(WAIT))
                .build()
                .into(),
        };
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("serve printed no address; stderr: {}", server.stderr()));
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; stderr: {}",
                    server.stderr()
                )
            });
        server.base = base.to_owned();
        server
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> Reply {
        Reply::from(self.agent.get(self.url(path)).call())
    }

    fn post(&self, path: &str, body: &str) -> Reply {
        Reply::from(self.agent.post(self.url(path)).send(body))
    }

    fn put(&self, path: &str, body: &str) -> Reply {
        Reply::from(self.agent.put(self.url(path)).send(body))
    }

    fn delete(&self, path: &str) -> Reply {
        Reply::from(self.agent.delete(self.url(path)).call())
    }

    fn install(&self, name: &str, url: &str) -> Reply {
        self.post("/plugins/portables", &install_body(name, url))
    }

    /// The pid `GET .../{name}/status` reports (the plugin must be running).
    fn plugin_pid(&self, name: &str) -> i32 {
        let reply = self.get(&format!("/plugins/portables/{name}/status"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let json = reply.json();
        assert_eq!(json["status"], "running", "{json}");
        json["pid"].as_i64().expect("a pid") as i32
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits (bounded) for the server to exit; its exit status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_for("shmplug serve to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer: status, content type, body.
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn from(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut response = result.expect("the server answers");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Reply {
            status: response.status().as_u16(),
            content_type,
            body: response.body_mut().read_to_string().expect("a body"),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// Asserts an eKuiper error: `status`, `{"error": code, "message": ...}` with every needle
    /// in the message.
    fn assert_error(&self, status: u16, code: i64, needles: &[&str]) {
        assert_eq!(self.status, status, "{}", self.body);
        let json = self.json();
        assert_eq!(json["error"], code, "{json}");
        let message = json["message"].as_str().expect("a message");
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
    }
}

/// Serves one HTTP request on an ephemeral port with `status` and the file at `file://` URL
/// `body_of` as the body; the URL to ask, and the thread (joined to check it answered).
fn serve_once(status: &str, body_of: &str) -> (String, std::thread::JoinHandle<()>) {
    let body = std::fs::read(body_of.strip_prefix("file://").unwrap()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/packages/mirror.zip",
        listener.local_addr().unwrap()
    );
    let status = status.to_owned();
    let thread = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(&body).unwrap();
    });
    (url, thread)
}

fn install_body(name: &str, url: &str) -> String {
    serde_json::json!({ "name": name, "file": url }).to_string()
}

fn metric(text: &str, line_start: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .map(|l| l[line_start.len()..].trim().to_owned())
}

#[test]
fn every_portable_endpoint_with_the_mirror_plugin() {
    let f = Fixture::new();
    let mut server = Server::start(&f);
    let reply = server.get("/plugins/portables");
    assert_eq!((reply.status, reply.body.as_str()), (200, "[]"));

    let v1 = f.mirror_zip("mirror.zip", "v1.0.0");
    let reply = server.install("mirror", &v1);
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body, "portable plugin mirror is created");

    let list = server.get("/plugins/portables").json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["name"], "mirror");
    assert_eq!(list[0]["functions"], serde_json::json!(["echo", "refuse"]));
    let reply = server.get("/plugins/portables/mirror");
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("application/json"));
    let described = reply.json();
    assert_eq!(described["version"], "v1.0.0");
    assert_eq!(
        described["sources"],
        serde_json::json!(["random", "counter"])
    );
    assert_eq!(described["sinks"], serde_json::json!(["file"]));
    assert!(
        described["executable"]
            .as_str()
            .unwrap()
            .ends_with("mirror/run.sh")
    );

    // Installing started the process.
    let first = server.plugin_pid("mirror");
    let status = server.get("/plugins/portables/mirror/status").json();
    assert_eq!(status["errMsg"], "");
    assert_eq!(status["refCount"], serde_json::json!({}));
    assert!(!gone_or_zombie(first));

    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        reply.content_type
    );
    let text = reply.body;
    assert!(text.contains("# TYPE shmplug_plugin_up gauge"), "{text}");
    assert_eq!(
        metric(&text, "shmplug_plugin_up{plugin=\"mirror\"}").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        metric(&text, "shmplug_plugin_restarts_total{plugin=\"mirror\"}").as_deref(),
        Some("0"),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "shmplug_plugin_instances{plugin=\"mirror\",kind=\"source\"}"
        )
        .as_deref(),
        Some("0"),
        "{text}"
    );

    // The command line sees what the API installed: the directory is shared.
    let out = shmplug(&f.plugins(), &["plugins", "list"]);
    assert!(stdout(&out).contains("v1.0.0"), "{}", stdout(&out));

    // An update swaps the process for the new version's.
    let v2 = f.mirror_zip("mirror-v2.zip", "v2.0.0");
    let reply = server.put("/plugins/portables/mirror", &install_body("mirror", &v2));
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "portable plugin mirror is updated")
    );
    assert_eq!(
        server.get("/plugins/portables/mirror").json()["version"],
        "v2.0.0"
    );
    let second = server.plugin_pid("mirror");
    assert_ne!(first, second);
    wait_for("the old process to end", || gone_or_zombie(first));

    let reply = server.delete("/plugins/portables/mirror");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "portable plugin mirror is deleted")
    );
    // Deleting stopped the process before answering.
    wait_for("the deleted plugin's process to end", || {
        gone_or_zombie(second)
    });
    server
        .get("/plugins/portables/mirror/status")
        .assert_error(404, 1002, &["mirror"]);
    assert_eq!(server.get("/plugins/portables").body, "[]");
    assert!(!f.plugins().join("mirror").exists());
    let text = server.get("/metrics").body;
    assert!(!text.contains("plugin=\"mirror\""), "{text}");

    // SIGTERM with a plugin running: the server stops it, then exits.
    assert_eq!(server.install("mirror", &v1).status, 201);
    let third = server.plugin_pid("mirror");
    server.signal(rustix::process::Signal::TERM);
    let status = server.wait();
    assert!(status.success(), "{status:?}; stderr: {}", server.stderr());
    assert!(gone_or_zombie(third));
    assert!(
        server.stderr().contains("stopped plugin `mirror`"),
        "{}",
        server.stderr()
    );
}

#[test]
fn bad_requests_get_ekuipers_statuses_and_say_what_is_wrong() {
    let f = Fixture::new();
    let server = Server::start(&f);
    let create = "/plugins/portables";

    server.post(create, r#"{"name": "mirror"}"#).assert_error(
        400,
        1000,
        &["Invalid body", "missing field `file`"],
    );
    server.post(create, "name=mirror").assert_error(
        400,
        1000,
        &["Invalid body", "line 1 column 2"],
    );
    server
        .install("", "file:///x.zip")
        .assert_error(400, 1000, &["name", "must not be empty"]);
    server
        .install("mirror", "file:///nowhere/mirror.tar")
        .assert_error(400, 1000, &["invalid uri", ".zip"]);
    server
        .install("mirror", "file:///nowhere/mirror.zip")
        .assert_error(
            400,
            1000,
            &["fail to install plugin", "/nowhere/mirror.zip"],
        );

    // Downloads that fail.
    for scheme in ["http", "https"] {
        let url = format!("{scheme}://127.0.0.1:1/mirror.zip");
        server.install("mirror", &url).assert_error(
            400,
            1000,
            &[&format!("fail to download file {url}")],
        );
    }
    let (url, thread) = serve_once("404 Not Found", &f.mirror_zip("m.zip", "v1"));
    server.install("mirror", &url).assert_error(
        400,
        1000,
        &["fail to download file", "answered 404"],
    );
    thread.join().unwrap();

    // A zip that is not a zip.
    let bad = f.dir.path().join("work/bad.zip");
    std::fs::write(&bad, "this is not a zip").unwrap();
    server
        .install("bad", &format!("file://{}", bad.display()))
        .assert_error(400, 1000, &["fail to install plugin", "bad.zip"]);
    // A zip without the manifest the name asks for.
    let other = f.mirror_zip("other.zip", "v1.0.0");
    server.install("other", &other).assert_error(
        400,
        1000,
        &["fail to install plugin", "other.json"],
    );
    // A plugin whose process fails its start is not left installed.
    let broken = f.zip(
        "broken.zip",
        &[
            (
                "broken.json",
                r#"{"version": "v1", "language": "rust", "executable": "run.sh", "sources": ["s"]}"#,
                0o644,
            ),
            ("run.sh", "#!/bin/sh\nexit 3\n", 0o755),
        ],
    );
    server.install("broken", &broken).assert_error(
        400,
        1000,
        &["fail to install plugin", "did not start"],
    );
    assert!(!f.plugins().join("broken").exists());

    // A name clash.
    let mirror = f.mirror_zip("mirror.zip", "v1.0.0");
    assert_eq!(server.install("mirror", &mirror).status, 201);
    server.install("mirror", &mirror).assert_error(
        400,
        1000,
        &["invalid name mirror: duplicate", "PUT"],
    );
    server
        .put("/plugins/portables/mirror", &install_body("other", &mirror))
        .assert_error(400, 1000, &["`other`", "`mirror`"]);

    // A body over the limit.
    let large = format!(
        r#"{{"name": "mirror", "file": "file:///{}.zip"}}"#,
        "a".repeat(70 * 1024)
    );
    server
        .post(create, &large)
        .assert_error(413, 1000, &["too large", "65536"]);

    // Unknown plugins: eKuiper answers describe and status with 404, delete with 400.
    server.get("/plugins/portables/nosuch").assert_error(
        404,
        1002,
        &["describe portable plugin nosuch error"],
    );
    server.get("/plugins/portables/nosuch/status").assert_error(
        404,
        1002,
        &["portable plugin nosuch not found"],
    );
    server.delete("/plugins/portables/nosuch").assert_error(
        400,
        1000,
        &["portable plugin nosuch is not found"],
    );

    // Still serving, and the plugin installed in between still runs.
    let list = server.get("/plugins/portables").json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    server.plugin_pid("mirror");
}

#[test]
fn installs_from_an_http_url() {
    let f = Fixture::new();
    let server = Server::start(&f);
    let (url, thread) = serve_once("200 OK", &f.mirror_zip("mirror.zip", "v3.0.0"));
    let reply = server.install("mirror", &url);
    assert_eq!(reply.status, 201, "{}", reply.body);
    thread.join().unwrap();
    assert_eq!(
        server.get("/plugins/portables/mirror").json()["version"],
        "v3.0.0"
    );
    server.plugin_pid("mirror");
    // The download is not left in the plugins directory.
    let left: Vec<_> = std::fs::read_dir(f.plugins())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["mirror"]);
}

/// A certificate for `127.0.0.1` and its key, signed by `issuer` (or self-signed).
fn certificate(
    issuer: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (cert, key)
}

/// Serves one HTTPS request on an ephemeral port with certificate `cert` (key `key`) and the
/// file at `file://` URL `body_of` as the body; the URL to ask, and the thread (joined to
/// check it ended: a refused handshake ends it too).
fn serve_tls_once(
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    body_of: &str,
) -> (String, std::thread::JoinHandle<()>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let body = std::fs::read(body_of.strip_prefix("file://").unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://{}/packages/mirror.zip",
        listener.local_addr().unwrap()
    );
    let thread = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let connection = rustls::ServerConnection::new(std::sync::Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, stream);
        let mut reader = BufReader::new(&mut tls);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                // The client refused the certificate (or went away): nothing to answer.
                Err(_) | Ok(0) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        drop(reader);
        write!(
            tls,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        tls.write_all(&body).unwrap();
        tls.conn.send_close_notify();
        let _ = tls.flush();
    });
    (url, thread)
}

/// `https://` packages: one whose server's certificate is signed by the authority given with
/// `--tls-ca` installs; one with a certificate no trusted authority signed is refused, and the
/// message says the certificate is not trusted and how to trust it.
#[test]
fn installs_from_an_https_url_whose_certificate_it_trusts() {
    let f = Fixture::new();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "shmplug test authority");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = f.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server = Server::start_with(&f, &["--tls-ca", ca_file.to_str().unwrap()]);
    let zip = f.mirror_zip("mirror.zip", "v4.0.0");
    let (cert, key) = certificate(Some(&issuer));
    let (url, thread) = serve_tls_once(&cert, &key, &zip);
    let reply = server.install("mirror", &url);
    assert_eq!(reply.status, 201, "{}", reply.body);
    thread.join().unwrap();
    assert_eq!(
        server.get("/plugins/portables/mirror").json()["version"],
        "v4.0.0"
    );
    server.plugin_pid("mirror");

    let (cert, key) = certificate(None);
    let (url, thread) = serve_tls_once(&cert, &key, &zip);
    server.install("other", &url).assert_error(
        400,
        1000,
        &[
            &format!("fail to download file {url}"),
            "certificate is not trusted",
            "ca.pem",
            "--tls-ca",
        ],
    );
    thread.join().unwrap();
    assert!(!f.plugins().join("other").exists());

    // A --tls-ca that holds no certificate stops the server at once, naming the file.
    let empty = f.dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let out = shmplug(
        &f.plugins(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-ca",
            empty.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let stderr = cli::stderr(&out);
    assert!(
        stderr.contains("empty.pem") && stderr.contains("no certificate"),
        "{stderr}"
    );
}

#[test]
fn starts_the_installed_plugins_and_stops_them_on_sigint() {
    let f = Fixture::new();
    let zip = f.mirror_zip("mirror.zip", "v1.0.0");
    let path = zip.strip_prefix("file://").unwrap();
    let out = shmplug(&f.plugins(), &["plugins", "install", path]);
    assert!(out.status.success(), "{}", cli::stderr(&out));
    let mut server = Server::start(&f);
    let pid = server.plugin_pid("mirror");
    server.signal(rustix::process::Signal::INT);
    let status = server.wait();
    assert!(status.success(), "{status:?}; stderr: {}", server.stderr());
    assert!(gone_or_zombie(pid));
    assert!(
        server.stderr().contains("stopped plugin `mirror`"),
        "{}",
        server.stderr()
    );
}

/// A mirror pipeline: `count` random tuples (`None`: unlimited, one per millisecond), echoed
/// into field `echoed`, written to `out`.
fn mirror_pipeline(count: Option<u64>, out: &std::path::Path) -> String {
    let (interval, count) = match count {
        Some(n) => (0, format!(", count = {n}")),
        None => (1, String::new()),
    };
    format!(
        r#"
[source]
plugin = "mirror"
symbol = "random"
properties = {{ interval = {interval}, seed = 10, pattern = {{ value = 1 }}{count} }}

[[functions]]
plugin = "mirror"
symbol = "echo"
args = ["value"]
output = "echoed"

[sink]
plugin = "mirror"
symbol = "file"
properties = {{ path = "{}", interval = 0 }}
"#,
        out.display()
    )
}

#[test]
fn runs_inspects_and_stops_pipelines() {
    let f = Fixture::new();
    let mut server = Server::start(&f);
    assert_eq!(
        server
            .install("mirror", &f.mirror_zip("mirror.zip", "v1"))
            .status,
        201
    );
    assert_eq!(server.get("/pipelines").body, "[]");

    // A pipeline that ends by itself stays listed with the reason, its output complete.
    let out = f.dir.path().join("out-50.jsonl");
    let reply = server.post("/pipelines?id=fifty", &mirror_pipeline(Some(50), &out));
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["id"], "fifty");
    wait_for("pipeline fifty to end", || {
        server.get("/pipelines/fifty").json()["state"] == "ended"
    });
    let shown = server.get("/pipelines/fifty").json();
    assert_eq!(shown["ended"], "the source ended", "{shown}");
    assert_eq!(shown["tuples"], 50, "{shown}");
    assert_eq!(shown["errors"], 0, "{shown}");
    let lines = support::read_lines(&out);
    assert_eq!(lines.len(), 50);
    assert!(lines[0].contains("\"echoed\""), "{}", lines[0]);
    let text = server.get("/metrics").body;
    let fifty = |name: &str| metric(&text, &format!("{name}{{pipeline=\"fifty\"}}"));
    assert_eq!(
        fifty("shmplug_pipeline_tuples_total").as_deref(),
        Some("50"),
        "{text}"
    );
    assert_eq!(
        fifty("shmplug_pipeline_running").as_deref(),
        Some("0"),
        "{text}"
    );
    assert_eq!(
        fifty("shmplug_pipeline_latency_seconds_count").as_deref(),
        Some("50"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE shmplug_pipeline_latency_seconds histogram"),
        "{text}"
    );
    let infinite = text.lines().find(|l| {
        l.starts_with("shmplug_pipeline_latency_seconds_bucket{")
            && l.contains("fifty")
            && l.contains("+Inf")
    });
    assert!(infinite.is_some_and(|l| l.ends_with(" 50")), "{text}");

    // One that runs until stopped, from a JSON body, with an id of the server's choosing.
    let out = f.dir.path().join("out-live.jsonl");
    let toml: toml::Table = toml::from_str(&mirror_pipeline(None, &out)).unwrap();
    let reply = server.post("/pipelines", &serde_json::to_string(&toml).unwrap());
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let tuples = |server: &Server| {
        server.get(&format!("/pipelines/{id}")).json()["tuples"]
            .as_u64()
            .unwrap()
    };
    wait_for("tuples to move", || tuples(&server) > 0);
    let shown = server.get(&format!("/pipelines/{id}")).json();
    assert_eq!(shown["state"], "running", "{shown}");
    assert_eq!(shown["plugins"][0]["name"], "mirror", "{shown}");
    assert_eq!(
        shown["plugins"][0]["instances"].as_array().unwrap().len(),
        3,
        "{shown}"
    );
    let status = server.get("/plugins/portables/mirror/status").json();
    assert_eq!(status["refCount"][&id], 3, "{status}");
    assert_eq!(server.get("/pipelines").json().as_array().unwrap().len(), 2);
    let text = server.get("/metrics").body;
    // The running pipeline's sink instance has its delivery counters (nothing replayed yet).
    let sink_line = text
        .lines()
        .find(|l| {
            l.starts_with("shmplug_sink_replayed_total{")
                && l.contains(&format!("pipeline=\"{id}\""))
        })
        .unwrap_or_else(|| panic!("no replay counter for the sink of {id}: {text}"));
    assert!(
        sink_line.contains("symbol=\"file\"") && sink_line.ends_with(" 0"),
        "{sink_line}"
    );
    assert!(
        text.contains("# TYPE shmplug_sink_duplicates_total counter"),
        "{text}"
    );
    for family in [
        "# TYPE shmplug_instance_starvations_total counter",
        "# TYPE shmplug_instance_starved_seconds gauge",
    ] {
        assert!(text.contains(family), "{family}: {text}");
    }
    let counted = metric(
        &text,
        &format!("shmplug_pipeline_tuples_total{{pipeline=\"{id}\"}}"),
    );
    assert!(
        counted.is_some_and(|n| n.parse::<u64>().unwrap() > 0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("shmplug_pipeline_running{{pipeline=\"{id}\"}}")
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "shmplug_plugin_instances{plugin=\"mirror\",kind=\"function\"}"
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );

    // The pipeline survives its plugin's crash: the supervisor restarts the process and
    // replays the instances.
    let pid = server.plugin_pid("mirror");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_for("the plugin to be restarted", || {
        let status = server.get("/plugins/portables/mirror/status").json();
        status["restarts"] == 1 && status["status"] == "running"
    });
    let before = tuples(&server);
    wait_for("tuples to move after the restart", || {
        tuples(&server) > before
    });
    assert_eq!(
        server.get(&format!("/pipelines/{id}")).json()["state"],
        "running"
    );

    let reply = server.delete(&format!("/pipelines/{id}"));
    assert_eq!(
        (reply.status, reply.body.clone()),
        (200, format!("pipeline {id} is stopped"))
    );
    server
        .get(&format!("/pipelines/{id}"))
        .assert_error(404, 1002, &[&id]);
    let status = server.get("/plugins/portables/mirror/status").json();
    assert_eq!(status["refCount"], serde_json::json!({}), "{status}");

    // Bad pipelines, each refused with what is wrong; the server keeps serving.
    let good = mirror_pipeline(Some(5), &out);
    server.post("/pipelines?id=fifty", &good).assert_error(
        400,
        1000,
        &["pipeline fifty already exists"],
    );
    server
        .post(
            "/pipelines",
            &good.replace("symbol = \"echo\"", "symbol = \"nosuch\""),
        )
        .assert_error(400, 1000, &["function `nosuch`"]);
    server
        .post(
            "/pipelines",
            &good.replace("args = [\"value\"]", "args = []"),
        )
        .assert_error(
            400,
            1000,
            &[
                "pipeline function 1 (functions[0], fills `echoed`)",
                "function `echo` of plugin `mirror` refuses its arguments",
                "echo function only supports 1 parameter but got 0",
            ],
        );
    server
        .post(
            "/pipelines",
            &good.replace("plugin = \"mirror\"", "plugin = \"other\""),
        )
        .assert_error(400, 1000, &["plugin `other`", "not installed"]);
    server
        .post("/pipelines", "[source\nplugin =")
        .assert_error(400, 1000, &["invalid TOML"]);
    server
        .post("/pipelines", "{\"source\": {}}")
        .assert_error(400, 1000, &["invalid JSON"]);
    server
        .post("/pipelines?id=a/b", &good)
        .assert_error(400, 1000, &["invalid pipeline id"]);
    server
        .delete("/pipelines/nosuch")
        .assert_error(404, 1002, &["stop pipeline nosuch error"]);

    // SIGTERM with a pipeline running stops it, then the plugin.
    let out = f.dir.path().join("out-last.jsonl");
    assert_eq!(
        server
            .post("/pipelines?id=last", &mirror_pipeline(None, &out))
            .status,
        201
    );
    server.signal(rustix::process::Signal::TERM);
    let status = server.wait();
    assert!(status.success(), "{status:?}; stderr: {}", server.stderr());
    let stderr = server.stderr();
    assert!(
        stderr.contains("pipeline `last` ended: stopped"),
        "{stderr}"
    );
    assert!(stderr.contains("stopped plugin `mirror`"), "{stderr}");
}

/// The value of the one line of counter `name` for the `kind` instance of `pipeline`.
fn instance_metric(text: &str, name: &str, pipeline: &str, kind: &str) -> u64 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.contains(&format!("pipeline=\"{pipeline}\""))
                && l.contains(&format!("kind=\"{kind}\""))
        })
        .collect();
    assert_eq!(lines.len(), 1, "{name} of {kind} in {pipeline}: {text}");
    let value = lines[0].rsplit(' ').next().unwrap();
    value
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {}", lines[0]))
}

/// Per instance counters and per stage latencies: tuples out of the source, into and out of
/// the function and into the sink all equal what the sink wrote; a function that fails every
/// call counts each as an error (and the sink still gets each tuple).
#[test]
fn metrics_count_each_instance_and_stage() {
    let f = Fixture::new();
    let server = Server::start(&f);
    let zip = f.mirror_zip("mirror.zip", "v1");
    assert_eq!(server.install("mirror", &zip).status, 201);
    let good_out = f.dir.path().join("good.jsonl");
    let reply = server.post("/pipelines?id=good", &mirror_pipeline(Some(40), &good_out));
    assert_eq!(reply.status, 201, "{}", reply.body);
    // refuse fails every call.
    let failing_out = f.dir.path().join("failing.jsonl");
    let failing = mirror_pipeline(Some(30), &failing_out)
        .replace(r#"symbol = "echo""#, r#"symbol = "refuse""#);
    let reply = server.post("/pipelines?id=failing", &failing);
    assert_eq!(reply.status, 201, "{}", reply.body);
    for id in ["good", "failing"] {
        wait_for(&format!("pipeline {id} to end"), || {
            server.get(&format!("/pipelines/{id}")).json()["state"] == "ended"
        });
    }
    let text = server.get("/metrics").body;
    let count = |name: &str, pipeline: &str, kind: &str| {
        instance_metric(
            &text,
            &format!("shmplug_instance_{name}_total"),
            pipeline,
            kind,
        )
    };
    for (id, out, tuples, answers) in [
        ("good", &good_out, 40, 40),
        ("failing", &failing_out, 30, 0),
    ] {
        let written = support::read_lines(out).len() as u64;
        assert_eq!(written, tuples, "{id}");
        assert_eq!(count("tuples_out", id, "source"), written, "{id}");
        assert_eq!(count("tuples_in", id, "function"), written, "{id}");
        assert_eq!(count("tuples_out", id, "function"), answers, "{id}");
        assert_eq!(count("errors", id, "function"), written - answers, "{id}");
        assert_eq!(count("tuples_in", id, "sink"), written, "{id}");
        assert_eq!(count("errors", id, "source"), 0, "{id}");
        assert_eq!(count("errors", id, "sink"), 0, "{id}");
        for stage in ["source", "function", "sink"] {
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with("shmplug_stage_latency_seconds_count{")
                        && l.contains(&format!("pipeline=\"{id}\""))
                        && l.contains(&format!("stage=\"{stage}\""))
                })
                .unwrap_or_else(|| panic!("no {stage} latency for {id}: {text}"));
            assert!(line.ends_with(&format!(" {written}")), "{line}");
        }
    }
    assert!(
        text.contains("# TYPE shmplug_stage_latency_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        server.get("/pipelines/failing").json()["errors"],
        30,
        "the pipeline counts the failed calls too"
    );
    // Deleting an ended pipeline forgets its instances' figures.
    assert_eq!(server.delete("/pipelines/good").status, 200);
    let text = server.get("/metrics").body;
    assert!(!text.contains("pipeline=\"good\""), "{text}");
}

/// The plugins directory is shared with the command line: a plugin installed with
/// `shmplug plugins install` while the server runs gets its process without a request, one
/// updated with `shmplug plugins update` gets the new version's process, and one removed with
/// `shmplug plugins remove` is stopped.
#[test]
fn plugins_installed_updated_or_removed_from_the_command_line_start_swap_and_stop() {
    let f = Fixture::new();
    let server = Server::start(&f);
    let zip = f.mirror_zip("mirror.zip", "v5.0.0");
    let out = shmplug(
        &f.plugins(),
        &["plugins", "install", zip.strip_prefix("file://").unwrap()],
    );
    assert!(out.status.success(), "{}", cli::stderr(&out));
    wait_for("the server to start the plugin", || {
        server.get("/plugins/portables/mirror/status").json()["status"] == "running"
    });
    let pid = server.plugin_pid("mirror");
    assert!(!gone_or_zombie(pid));
    let text = server.get("/metrics").body;
    assert_eq!(
        metric(&text, "shmplug_plugin_up{plugin=\"mirror\"}").as_deref(),
        Some("1"),
        "{text}"
    );
    // It runs pipelines like any other.
    let out_file = f.dir.path().join("out.jsonl");
    let reply = server.post("/pipelines?id=p", &mirror_pipeline(Some(10), &out_file));
    assert_eq!(reply.status, 201, "{}", reply.body);
    wait_for("the pipeline to end", || {
        server.get("/pipelines/p").json()["state"] == "ended"
    });
    assert_eq!(support::read_lines(&out_file).len(), 10);

    let v6 = f.mirror_zip("mirror-v6.zip", "v6.0.0");
    let out = shmplug(
        &f.plugins(),
        &[
            "plugins",
            "update",
            "mirror",
            v6.strip_prefix("file://").unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", cli::stderr(&out));
    let first = pid;
    wait_for("the server to swap the process", || {
        let status = server.get("/plugins/portables/mirror/status").json();
        status["status"] == "running" && status["pid"].as_i64() != Some(i64::from(first))
    });
    wait_for("the old process to end", || gone_or_zombie(first));
    let pid = server.plugin_pid("mirror");
    assert!(
        server
            .stderr()
            .contains("updated from outside the server to v6.0.0"),
        "{}",
        server.stderr()
    );

    let out = shmplug(&f.plugins(), &["plugins", "remove", "mirror"]);
    assert!(out.status.success(), "{}", cli::stderr(&out));
    wait_for("the server to stop the removed plugin", || {
        server.get("/plugins/portables/mirror/status").status == 404
    });
    wait_for("its process to end", || gone_or_zombie(pid));
    assert!(
        server
            .stderr()
            .contains("plugin `mirror` was removed from outside the server"),
        "{}",
        server.stderr()
    );
    assert_eq!(server.get("/plugins/portables").body, "[]");
}

#[test]
fn an_installed_plugin_that_cannot_start_shows_its_error() {
    let f = Fixture::new();
    let zip = f.zip(
        "broken.zip",
        &[
            (
                "broken.json",
                r#"{"version": "v1", "language": "rust", "executable": "run.sh", "sources": ["s"]}"#,
                0o644,
            ),
            ("run.sh", "#!/bin/sh\nexit 3\n", 0o755),
        ],
    );
    let out = shmplug(
        &f.plugins(),
        // Installed without starting it: the point is the server meeting it.
        &[
            "plugins",
            "install",
            "--no-check",
            zip.strip_prefix("file://").unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", cli::stderr(&out));
    let server = Server::start(&f);
    let status = server.get("/plugins/portables/broken/status").json();
    assert_eq!(status["status"], "error", "{status}");
    assert!(
        status["errMsg"].as_str().unwrap().contains("broken"),
        "{status}"
    );
    let text = server.get("/metrics").body;
    assert_eq!(
        metric(&text, "shmplug_plugin_up{plugin=\"broken\"}").as_deref(),
        Some("0"),
        "{text}"
    );
    // Its package is fine to describe, and to delete.
    assert_eq!(server.get("/plugins/portables/broken").status, 200);
    assert_eq!(server.delete("/plugins/portables/broken").status, 200);
    assert_eq!(server.get("/plugins/portables/broken/status").status, 404);
}

#[test]
fn a_busy_address_fails_at_once_and_names_it() {
    let f = Fixture::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = shmplug(&f.plugins(), &["serve", "--listen", &address]);
    assert!(!out.status.success());
    let stderr = cli::stderr(&out);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
}
