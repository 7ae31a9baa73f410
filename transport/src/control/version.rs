//! The control protocol's version and the rule for accepting a peer's version.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The control protocol version this build speaks, sent in [`Hello`](super::Hello).
///
/// Bump the minor version for compatible additions (a new optional field, a new message a peer
/// may ignore); bump the major version for anything an older peer would misread.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::new(1, 4);

/// A control protocol version, `major.minor`, compared semver-style: two peers can talk when
/// their major versions are equal.
///
/// On the wire it is the string `"major.minor"` (for example `"1.0"`), a format that every
/// protocol version keeps, so that a peer can always read it and explain a mismatch.
///
/// # Examples
/// ```
/// use shmplug_transport::control::{PROTOCOL_VERSION, ProtocolVersion};
///
/// let theirs: ProtocolVersion = "1.7".parse()?;
/// assert!(PROTOCOL_VERSION.is_compatible_with(theirs));
/// assert!(!PROTOCOL_VERSION.is_compatible_with(ProtocolVersion::new(2, 0)));
/// # Ok::<(), shmplug_transport::control::InvalidProtocolVersion>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ProtocolVersion {
    /// Incremented for changes an older peer would misread.
    pub major: u16,
    /// Incremented for compatible additions.
    pub minor: u16,
}

impl ProtocolVersion {
    /// The version `major.minor`.
    pub const fn new(major: u16, minor: u16) -> ProtocolVersion {
        ProtocolVersion { major, minor }
    }

    /// True when a peer speaking `other` can talk to one speaking `self`: the major versions
    /// are equal (the minor versions may differ).
    pub const fn is_compatible_with(self, other: ProtocolVersion) -> bool {
        self.major == other.major
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Text that is not a protocol version (`major.minor`, two decimal numbers up to 65535).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a control protocol version (expected `major.minor`, e.g. `1.0`)")]
pub struct InvalidProtocolVersion {
    /// The offending text, shortened if it was long.
    pub text: String,
}

impl FromStr for ProtocolVersion {
    type Err = InvalidProtocolVersion;

    /// Parses `major.minor`: exactly two runs of ASCII digits separated by one dot, nothing else.
    ///
    /// # Errors
    /// [`InvalidProtocolVersion`] for anything else, including signs, spaces and numbers above
    /// 65535.
    fn from_str(text: &str) -> Result<ProtocolVersion, InvalidProtocolVersion> {
        let number = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse::<u16>().ok()
        };
        text.split_once('.')
            .and_then(|(major, minor)| Some(ProtocolVersion::new(number(major)?, number(minor)?)))
            .ok_or_else(|| InvalidProtocolVersion {
                text: super::error::shorten(text),
            })
    }
}

impl TryFrom<String> for ProtocolVersion {
    type Error = InvalidProtocolVersion;

    fn try_from(text: String) -> Result<ProtocolVersion, InvalidProtocolVersion> {
        text.parse()
    }
}

impl From<ProtocolVersion> for String {
    fn from(version: ProtocolVersion) -> String {
        version.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_major_dot_minor() {
        let v: ProtocolVersion = "12.345".parse().unwrap();
        assert_eq!(v, ProtocolVersion::new(12, 345));
        assert_eq!(v.to_string(), "12.345");
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"12.345\"");
        assert_eq!(
            serde_json::from_str::<ProtocolVersion>("\"1.4\"").unwrap(),
            PROTOCOL_VERSION
        );
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "", "1", "1.", ".1", "1.0.0", "+1.0", "1.-0", " 1.0", "1.0 ", "70000.0", "a.b",
        ] {
            let err = bad.parse::<ProtocolVersion>().unwrap_err();
            assert_eq!(err.text, bad);
        }
        assert!(serde_json::from_str::<ProtocolVersion>("1").is_err());
    }

    #[test]
    fn major_must_match() {
        let v1_0 = ProtocolVersion::new(1, 0);
        assert!(v1_0.is_compatible_with(ProtocolVersion::new(1, 9)));
        assert!(!v1_0.is_compatible_with(ProtocolVersion::new(0, 9)));
        assert!(!v1_0.is_compatible_with(ProtocolVersion::new(2, 0)));
    }
}
