//! The `mirror` plugin executable: started by the shmplug host.
#![forbid(unsafe_code)]

fn main() {
    shmplug_sdk::start(std::env::args(), mirror::plugin_config())
}
