//! The process's descriptor limit: raised once to the hard limit, and named in the error when
//! new rings cannot be made because it is reached.

use rustix::io::Errno;
use shmplug_transport::limits;

use crate::error::Error;

/// Raises the soft limit of open descriptors to the hard limit (see
/// [`limits::raise_descriptor_limit`]), logging what happened.
pub(crate) fn raise_descriptor_limit() {
    match limits::raise_descriptor_limit() {
        Ok(Some((from, to))) => {
            tracing::debug!("raised the open-descriptor limit from {from:?} to {to:?}")
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("could not raise the open-descriptor limit: {e}"),
    }
}

/// The error for rings that could not be made for an instance of `plugin`: one that names the
/// descriptor limit when that is what was reached.
pub(crate) fn ring_error(plugin: &str, source: shmplug_transport::Error) -> Error {
    let errno = match &source {
        shmplug_transport::Error::Io { source, .. } => {
            source.raw_os_error().map(Errno::from_raw_os_error)
        }
        _ => None,
    };
    match errno {
        Some(e) if e == Errno::MFILE || e == Errno::NFILE => Error::DescriptorLimit {
            plugin: plugin.to_owned(),
            limit: limits::descriptor_limit(),
            system: e == Errno::NFILE,
            source,
        },
        _ => Error::Transport {
            plugin: plugin.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_names_the_limit() {
        let source = shmplug_transport::Error::Io {
            context: "creating a memfd",
            source: std::io::Error::from_raw_os_error(Errno::MFILE.raw_os_error()),
        };
        let e = ring_error("mirror", source);
        let text = e.to_string();
        assert!(matches!(e, Error::DescriptorLimit { .. }), "{text}");
        assert!(
            text.contains("open-descriptor limit") && text.contains("ulimit -n"),
            "{text}"
        );
        let other = shmplug_transport::Error::Io {
            context: "creating a memfd",
            source: std::io::Error::from_raw_os_error(Errno::NOMEM.raw_os_error()),
        };
        assert!(matches!(
            ring_error("mirror", other),
            Error::Transport { .. }
        ));
    }
}
