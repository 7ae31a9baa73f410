//! [`start`]: a plugin's `main`. Finds the control socket the host set up, or explains itself
//! to a person who started the plugin by hand.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::net::UnixStream;

use shmplug_transport::control::{CONTROL_FD_ENV, CONTROL_SOCKET_ENV, ControlChannel};
use shmplug_transport::fdpass;

use crate::config::PluginConfig;

/// Exit code of a plugin started without a host.
pub const EXIT_NO_HOST: i32 = 2;

/// Runs the plugin: call it from `main` with `std::env::args()`, after eKuiper's
/// `sdk.Start(os.Args, &PluginConfig{...})`. Never returns.
///
/// - Started by the host (which sets `SHMPLUG_CONTROL_FD` to an inherited socket descriptor,
///   or `SHMPLUG_CONTROL_SOCKET` to a socket path to connect to): asks the kernel to send
///   `SIGTERM` if the host dies, connects, introduces the plugin and serves the host until it
///   sends `Shutdown` or closes the socket; exits with 0 then, 1 if the channel fails.
/// - Started by hand: prints what the plugin is, its symbols and how it is meant to be
///   started, and exits with 2 ([`EXIT_NO_HOST`]).
/// - `--help`: the same text on standard output, exit 0. `--describe`: the plugin's name,
///   protocol version and symbols as JSON (the `Hello`), exit 0.
///
/// `tracing` events anywhere in the plugin go to the host's log (see [`crate::StreamContext`]);
/// `SHMPLUG_LOG` (`error` ... `trace`, default `info`) sets how detailed.
///
/// # Examples
/// ```no_run
/// let config = shmplug_sdk::PluginConfig::new("mirror");
/// shmplug_sdk::start(std::env::args(), config)
/// ```
pub fn start<I, S>(args: I, config: PluginConfig) -> !
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let code = run(&args, config);
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn run(args: &[String], config: PluginConfig) -> i32 {
    match args.get(1).map(String::as_str) {
        Some("-h" | "--help") => {
            print!("{}", explain(&config));
            return 0;
        }
        Some("--describe") => {
            match serde_json::to_string_pretty(&config.hello()) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("{}: cannot describe the plugin: {e}", config.name);
                    return 1;
                }
            }
            return 0;
        }
        _ => {}
    }
    // Each instance holds three descriptors per ring in the plugin too.
    if let Err(e) = shmplug_transport::limits::raise_descriptor_limit() {
        tracing::warn!("could not raise the open-descriptor limit: {e}");
    }
    let fd = std::env::var_os(CONTROL_FD_ENV);
    let socket = std::env::var_os(CONTROL_SOCKET_ENV);
    if fd.is_none() && socket.is_none() {
        eprint!("{}", explain(&config));
        return EXIT_NO_HOST;
    }
    if fd.is_some() {
        // The host is our parent: if it dies, so do we (its end of the socket closes too, but
        // a plugin busy in a source's loop might not look at the socket for a while).
        if let Err(e) =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        {
            eprintln!("{}: cannot set the parent-death signal: {e}", config.name);
        }
    }
    let stream = match connect(fd, socket) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("{}: {e}", config.name);
            return 1;
        }
    };
    let channel = match ControlChannel::new(stream) {
        Ok(channel) => channel,
        Err(e) => {
            eprintln!("{}: cannot use the control socket: {e}", config.name);
            return 1;
        }
    };
    let name = config.name.clone();
    match super::serve_process(channel, config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {e}");
            1
        }
    }
}

/// The control socket: the inherited descriptor if `fd` is set, else a connection to `socket`.
fn connect(fd: Option<OsString>, socket: Option<OsString>) -> Result<UnixStream, String> {
    if let Some(fd) = fd {
        let text = fd.to_string_lossy();
        let number: i32 = text.trim().parse().map_err(|_| {
            format!("{CONTROL_FD_ENV}={text:?} is not a descriptor number; the host sets it")
        })?;
        return fdpass::adopt_inherited_socket(number).map_err(|e| {
            format!(
                "cannot take over the control socket {CONTROL_FD_ENV}={number}: {e}; the host \
                 passes it (or set {CONTROL_SOCKET_ENV} to a socket path the host listens on)"
            )
        });
    }
    let path = socket.unwrap_or_default();
    UnixStream::connect(&path).map_err(|e| {
        format!(
            "cannot connect to the host's control socket {CONTROL_SOCKET_ENV}={}: {e}; is the \
             host listening there?",
            path.to_string_lossy()
        )
    })
}

/// What a person who starts the plugin by hand reads.
pub(crate) fn explain(config: &PluginConfig) -> String {
    let hello = config.hello();
    let list = |symbols: &[String]| {
        if symbols.is_empty() {
            "(none)".to_owned()
        } else {
            symbols.join(", ")
        }
    };
    format!(
        "{name}: a shmplug plugin (control protocol {version})\n\
         \x20 sources:   {sources}\n\
         \x20 sinks:     {sinks}\n\
         \x20 functions: {functions}\n\
         \n\
         The shmplug host starts this program and drives it over a control socket, passed as an\n\
         inherited descriptor named by {CONTROL_FD_ENV}. To run it by hand (under a debugger,\n\
         say), have the host listen on a socket path and start the plugin with\n\
         {CONTROL_SOCKET_ENV}=<path>. Install it with its {name}.json manifest in the host's\n\
         plugins directory.\n\
         \n\
         Options: --help prints this text; --describe prints the name, protocol version and\n\
         symbols as JSON.\n",
        name = hello.plugin_name,
        version = hello.protocol_version,
        sources = list(&hello.sources),
        sinks = list(&hello.sinks),
        functions = list(&hello.functions),
    )
}
