//! The `meter` plugin executable, started by the shmplug host.

fn main() {
    shmplug_sdk::start(std::env::args(), meter::plugin_config())
}
