//! The process's limit of open descriptors, which bounds how many rings it can hold (three
//! descriptors per ring end: the memfd and two eventfds).

use rustix::process::{Resource, getrlimit, setrlimit};

/// Raises this process's soft limit of open descriptors to its hard limit: the usual soft limit
/// of 1024 would cap a host or a plugin at a few hundred ring ends. Returns the limits before
/// and after when it changed anything, `Ok(None)` when the soft limit already was the hard one.
///
/// # Errors
/// The system's refusal (the process then keeps working up to its soft limit).
pub fn raise_descriptor_limit() -> std::io::Result<Option<(Option<u64>, Option<u64>)>> {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current >= limit.maximum {
        return Ok(None);
    }
    let from = limit.current;
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit)?;
    Ok(Some((from, limit.current)))
}

/// The soft limit of open descriptors (`None`: unlimited).
pub fn descriptor_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        raise_descriptor_limit().unwrap();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(limit.current, limit.maximum);
        assert_eq!(descriptor_limit(), limit.current);
        assert_eq!(
            raise_descriptor_limit().unwrap(),
            None,
            "nothing left to raise"
        );
    }
}
