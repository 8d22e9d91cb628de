//! Typed values of the `WITH (...)` options users write on models and sources. The catalog
//! keeps options as the text the user wrote; each is parsed here, once at CREATE (an invalid
//! value is 22023 there, never a silent default) and again wherever it is read.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};

/// A model's `refresh` option: how its refreshes may compute new content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefreshMode {
    /// Incremental whenever the result is identical to a full recompute, full otherwise.
    #[default]
    Auto,
    /// Always recompute in full.
    Full,
    /// A contract: inputs only gain rows and the query is linear; a refresh fails otherwise.
    Append,
    /// A contract: new rows are merged by `unique_key`; a refresh fails without a usable key.
    Merge,
}

impl RefreshMode {
    pub const OPTION: &'static str = "refresh";

    /// The model's mode: its `refresh` option, `auto` when it has none.
    pub fn of(options: &BTreeMap<String, String>) -> Result<Self> {
        options
            .get(Self::OPTION)
            .map_or(Ok(Self::Auto), |value| value.parse())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshMode::Auto => "auto",
            RefreshMode::Full => "full",
            RefreshMode::Append => "append",
            RefreshMode::Merge => "merge",
        }
    }
}

impl std::str::FromStr for RefreshMode {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(RefreshMode::Auto),
            "full" => Ok(RefreshMode::Full),
            "append" => Ok(RefreshMode::Append),
            "merge" => Ok(RefreshMode::Merge),
            "view" => Err(Error::NotSupported(
                "refresh = 'view' (a model that is never stored; use CREATE VIEW)".into(),
            )),
            _ => Err(invalid(
                Self::OPTION,
                &format!(
                    "\"{value}\" is not a refresh mode (expected auto, full, append or merge)"
                ),
            )),
        }
    }
}

impl std::fmt::Display for RefreshMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `'30 seconds'`, `'10 minutes'`, `'90s'`, `'1h 30m'`; a bare `0` is zero. `option` names
/// the option in the error.
pub fn parse_duration(option: &str, text: &str) -> Result<Duration> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| {
        invalid(
            option,
            &format!("\"{text}\" is not a duration: {e} (write e.g. '30 seconds' or '10 minutes')"),
        )
    })
}

/// The `max_staleness` freshness objective of a model or source.
pub fn max_staleness(options: &BTreeMap<String, String>) -> Result<Option<Duration>> {
    options
        .get("max_staleness")
        .map(|text| parse_duration("max_staleness", text))
        .transpose()
}

fn invalid(option: &str, message: &str) -> Error {
    Error::InvalidOption {
        option: option.into(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqlState;

    fn options(refresh: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("refresh".to_string(), refresh.to_string())])
    }

    #[test]
    fn refresh_modes_parse_and_a_misspelt_one_is_22023() {
        assert_eq!(
            RefreshMode::of(&BTreeMap::new()).unwrap(),
            RefreshMode::Auto
        );
        assert_eq!(
            RefreshMode::of(&options("Append")).unwrap(),
            RefreshMode::Append
        );
        assert_eq!(
            RefreshMode::of(&options("merge")).unwrap(),
            RefreshMode::Merge
        );
        assert_eq!(
            RefreshMode::of(&options("full")).unwrap().to_string(),
            "full"
        );
        let e = RefreshMode::of(&options("apend")).unwrap_err();
        assert_eq!(e.sqlstate(), SqlState::InvalidParameterValue);
        assert!(
            e.to_string().contains("\"apend\" is not a refresh mode"),
            "{e}"
        );
        let e = RefreshMode::of(&options("view")).unwrap_err();
        assert_eq!(e.sqlstate(), SqlState::FeatureNotSupported);
    }

    #[test]
    fn durations_parse_and_bad_ones_name_the_option() {
        assert_eq!(parse_duration("poll", "0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration("poll", " 10 minutes ").unwrap(),
            Duration::from_secs(600)
        );
        let e = parse_duration("poll", "soon").unwrap_err();
        assert_eq!(e.sqlstate(), SqlState::InvalidParameterValue);
        assert!(e.to_string().contains("\"poll\""), "{e}");
        let staleness = BTreeMap::from([("max_staleness".to_string(), "1 hour".to_string())]);
        assert_eq!(
            max_staleness(&staleness).unwrap(),
            Some(Duration::from_secs(3600))
        );
    }
}
