//! Reading a Prometheus text-format scrape back into samples, for tests and the demo: every
//! `name{labels} value` line with its label values unescaped, and small queries over them.
//!
//! Pure: parses a `String`. Strict enough to catch broken output (a malformed sample line is an
//! error, not skipped); not a full implementation of the format (no timestamps, no exemplars).

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A whole scrape: the text and its samples.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: String) -> Result<Scrape, String> {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_line(l).ok_or_else(|| format!("malformed sample line: {l:?}")))
            .collect::<Result<_, _>>()?;
        Ok(Scrape { text, samples })
    }

    /// Samples of `name` whose labels include every pair of `filter`.
    pub fn matching(
        &self,
        name: &str,
        filter: &BTreeMap<String, String>,
    ) -> Vec<&BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| &s.labels)
            .collect()
    }

    /// The sum of `name` over samples whose labels include every pair of `filter`.
    pub fn sum_matching(&self, name: &str, filter: &BTreeMap<String, String>) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| s.value)
            .sum()
    }

    /// [`Scrape::sum_matching`] with the filter as pairs.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        let filter = filter
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.sum_matching(name, &filter)
    }

    /// The value of the one sample of `name` with exactly `labels`, if there is one.
    pub fn exact(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == *labels)
            .map(|s| s.value)
    }

    /// How many samples `name` has.
    pub fn count(&self, name: &str) -> usize {
        self.samples.iter().filter(|s| s.name == name).count()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find("=\"")?;
            let key = rest[..eq].to_owned();
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break eq + 2 + i + 1,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    c => value.push(c),
                }
            };
            labels.insert(key, value);
            rest = &rest[end..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.strip_prefix(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_encoder_writes() {
        let text = "# HELP x_total help\n# TYPE x_total counter\n\
                    x_total{a=\"1\",b=\"q\\\"u\\\\o\\nte\"} 3\nup 1\nh_sum{l=\"}{,\"} 0.25\n";
        let s = Scrape::parse(text.into()).unwrap();
        assert_eq!(s.samples.len(), 3);
        assert_eq!(s.samples[0].labels["b"], "q\"u\\o\nte");
        assert_eq!(s.samples[2].labels["l"], "}{,");
        assert_eq!(s.sum("x_total", &[("a", "1")]), 3.0);
        assert_eq!(s.sum("x_total", &[("a", "2")]), 0.0);
        assert_eq!(s.sum("up", &[]), 1.0);
        assert!(Scrape::parse("x{a=\"1\" 3\n".into()).is_err());
        assert!(Scrape::parse("x 3 4\n".into()).is_err());
    }
}
