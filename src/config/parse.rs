//! The value parsers behind [`Config::from_lookup`](super::Config::from_lookup): numbers in a
//! range, booleans, durations, CPU quantities, each failure a [`ConfigError`] (or `None` for
//! the caller to name) saying what was expected. Run at start-up on the main thread.

use std::time::Duration;

use super::ConfigError;

/// A Kubernetes CPU quantity (`2`, `1.5`, `500m`) as whole CPUs, rounded up (ztunnel's reading).
pub(super) fn parse_cpu_quantity(var: &'static str, v: &str) -> Result<usize, ConfigError> {
    let t = v.trim();
    let cores = match t.strip_suffix('m') {
        Some(millis) => millis.parse::<f64>().map(|m| m / 1000.0),
        None => t.parse::<f64>(),
    };
    match cores {
        Ok(c) if c.is_finite() && c > 0.0 && c <= (1u64 << 20) as f64 => Ok(c.ceil() as usize),
        _ => Err(err(
            var,
            v,
            "expected a positive CPU quantity such as 2, 1.5 or 500m",
        )),
    }
}

/// `ZTUNNEL_WORKER_THREADS`: `N` threads (0: the CPU count) or `P%` of the CPU count, rounded
/// up, at least one.
pub(super) fn worker_threads(v: &str, cpu_count: usize) -> Option<usize> {
    let v = v.trim();
    match v.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.trim().parse().ok()?;
            (p > 0.0 && p <= 100.0).then(|| ((cpu_count as f64 * p / 100.0).ceil() as usize).max(1))
        }
        None => match v.parse::<usize>().ok()? {
            0 => Some(cpu_count),
            n => Some(n),
        },
    }
}

pub(super) fn err(var: &'static str, value: &str, expected: &str) -> ConfigError {
    ConfigError {
        var,
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

pub(super) fn parse_range(
    var: &'static str,
    v: &str,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(err(
            var,
            v,
            &format!("expected a whole number from {min} to {max}"),
        )),
    }
}

pub(super) fn parse_bool(
    var: &'static str,
    v: Option<String>,
    default: bool,
) -> Result<bool, ConfigError> {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(err(
            var,
            v.as_deref().unwrap_or_default(),
            "expected true or false",
        )),
    }
}

/// A duration as ztunnel's environment spells them: a whole number with a unit (`ms`, `s`, `m`,
/// `h`), at least 10 ms and at most a day.
pub(super) fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (Duration::from_millis(10)..=Duration::from_secs(86_400))
        .contains(&d)
        .then_some(d)
}

/// `SECRET_TTL`: `90` (seconds), `90s`, `15m`, `24h`, `7d`.
pub(super) fn parse_secret_ttl(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(scale).map(Duration::from_secs)
}

pub(super) fn parse_u32_any_radix(v: &str) -> Option<u32> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        for (text, d) in [
            ("1500ms", Duration::from_millis(1500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse_duration(text), Some(d), "{text}");
        }
        for bad in [
            "",
            "s",
            "10",
            "1.5s",
            "-1s",
            "9ms",
            "25h",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
