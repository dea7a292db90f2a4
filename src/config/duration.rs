//! Durations in the config file are strings with units ("30s", "10m", "250ms"), parsed by
//! `humantime`. Used through `#[serde(with = "duration")]` so that a bad value is reported by toml
//! with the key's line and column.
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    parse(&text).map_err(serde::de::Error::custom)
}

fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| {
        format!("invalid duration {text:?}: {err} (use a number with a unit, e.g. \"30s\", \"10m\", \"250ms\")")
    })
}

/// The same for optional durations.
pub mod option {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(de)?;
        parse(&text).map(Some).map_err(serde::de::Error::custom)
    }
}
