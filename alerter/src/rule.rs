//! The vocabulary of alerting, parsed once at the boundary: rule kinds, channels, severities,
//! durations like `5m`, and the readable sentence a rule is shown as. The ingest API validates with
//! these and the alerter evaluates with them, so both agree on what a rule means.

use std::{fmt, str::FromStr, time::Duration};

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// More than `threshold` matching events within the window.
    Threshold,
    /// A group first seen since the rule's last evaluation (in commit order: a group whose
    /// transaction was still open then is seen by the next evaluation after it commits).
    NewError,
    /// A resolved group that saw a new event since the rule's last evaluation (in commit order).
    Regression,
}

impl RuleKind {
    pub const ALL: [RuleKind; 3] = [
        RuleKind::Threshold,
        RuleKind::NewError,
        RuleKind::Regression,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Threshold => "threshold",
            RuleKind::NewError => "new_error",
            RuleKind::Regression => "regression",
        }
    }
}

impl FromStr for RuleKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        RuleKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

/// A notification channel. The contract also lists `sms` "if configured"; no SMS provider is
/// configured in Faultline, so `sms` is refused as an unknown channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Slack,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Slack, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Slack => "slack",
            Channel::Webhook => "webhook",
        }
    }
}

impl FromStr for Channel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s).ok_or(())
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The contract's alert severities.
pub const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// The contract's incident statuses.
pub const INCIDENT_STATUSES: [&str; 3] = ["open", "investigating", "resolved"];

/// Longest accepted window or cooldown: 30 days (the rollups outlive events, but not forever).
pub const MAX_DURATION_SECS: u64 = 30 * 86_400;

/// Parses `30s`, `5m`, `1h`, `1d` (a positive integer and one unit). Anything else is refused
/// with a reason meant for the API's `details`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let Some(unit) = s.chars().last() else {
        return Err("must be a number followed by s, m, h or d, e.g. 5m".into());
    };
    let multiplier = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err("must be a number followed by s, m, h or d, e.g. 5m".into()),
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("must be a number followed by s, m, h or d, e.g. 5m".into());
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| "number is too large".to_string())?;
    let secs = n
        .checked_mul(multiplier)
        .ok_or_else(|| "number is too large".to_string())?;
    if secs > MAX_DURATION_SECS {
        return Err("must be at most 30d".into());
    }
    Ok(Duration::from_secs(secs))
}

/// The shortest form of a duration in the units `parse_duration` reads: 300 s is `5m`.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        "0s".into()
    } else if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Words for a window: `5 minutes`, `1 hour`, `30 seconds`.
pub fn describe_duration(secs: u64) -> String {
    let (n, unit) = if secs > 0 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs > 0 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs > 0 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Optional narrowing of which events a rule counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub level: Option<String>,
    pub source: Option<String>,
    pub environment: Option<String>,
}

impl Filters {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = &self.level {
            parts.push(format!("level = {l}"));
        }
        if let Some(s) = &self.source {
            parts.push(format!("source = {s}"));
        }
        if let Some(e) = &self.environment {
            parts.push(format!("environment = {e}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" where {}", parts.join(" and "))
        }
    }
}

/// The rule as a sentence, e.g. `error_count > 50 in 5 minutes where level = error`; the contract's
/// `condition` field.
pub fn condition_sentence(
    kind: RuleKind,
    threshold: i64,
    window_secs: u64,
    filters: &Filters,
) -> String {
    let f = filters.describe();
    match kind {
        RuleKind::Threshold => format!(
            "error_count > {threshold} in {}{f}",
            describe_duration(window_secs)
        ),
        RuleKind::NewError => format!("a new error is first seen{f}"),
        RuleKind::Regression => format!("a resolved error occurs again{f}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_in_four_units_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "m",
            "5",
            "5x",
            "-5m",
            "1.5h",
            "5 m",
            "99999999999999999999d",
            "31d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_print_in_their_shortest_unit() {
        assert_eq!(format_duration(300), "5m");
        assert_eq!(format_duration(90), "90s");
        assert_eq!(format_duration(7200), "2h");
        assert_eq!(describe_duration(300), "5 minutes");
        assert_eq!(describe_duration(3600), "1 hour");
    }

    #[test]
    fn a_threshold_rule_reads_as_a_sentence() {
        let f = Filters {
            level: Some("error".into()),
            source: Some("backend".into()),
            environment: None,
        };
        assert_eq!(
            condition_sentence(RuleKind::Threshold, 50, 300, &f),
            "error_count > 50 in 5 minutes where level = error and source = backend"
        );
    }
}
