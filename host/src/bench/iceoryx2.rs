//! iceoryx2 between two processes (to be written: see the helper's task).

use super::{BenchError, Case, Launcher, Measurement};

pub(super) fn measure(case: Case, n: u64, launcher: &Launcher) -> Result<Measurement, BenchError> {
    let _ = (case, n, launcher);
    Err(BenchError::Unavailable(super::Impl::Iceoryx2))
}

pub(super) fn peer(args: &[String]) -> Result<(), BenchError> {
    let _ = args;
    Err(BenchError::Unavailable(super::Impl::Iceoryx2))
}
