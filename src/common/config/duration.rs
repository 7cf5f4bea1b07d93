//! Human durations in config files: `300ms`, `60s`, `5m`, `1h 30m`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written the way people write it (`300ms`, `60s`, `5m`); parsed with `humantime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The wrapped duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The longest timing the agent accepts; anything longer is a typo (and would overflow clocks).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        let d = humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write e.g. 300ms, 60s or 5m"
            ))
        })?;
        if d > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "duration {text:?} is longer than the 30 days the agent accepts"
            )));
        }
        Ok(HumanDuration(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        for (text, want) in [
            ("300ms", Duration::from_millis(300)),
            ("60s", Duration::from_secs(60)),
            ("5m", Duration::from_secs(300)),
            ("1h 30m", Duration::from_secs(5400)),
        ] {
            let got: HumanDuration = serde_yaml::from_str(text).unwrap();
            assert_eq!(got.get(), want, "{text}");
        }
    }

    #[test]
    fn rejects_absurd_lengths() {
        let err = serde_yaml::from_str::<HumanDuration>("300000000000y").unwrap_err();
        assert!(err.to_string().contains("30 days"), "{err}");
    }

    #[test]
    fn rejects_bare_numbers_with_a_hint() {
        let err = serde_yaml::from_str::<HumanDuration>("\"60\"").unwrap_err();
        assert!(err.to_string().contains("write e.g."), "{err}");
    }
}
