//! The Prometheus text exposition format (version 0.0.4), as `promtool check metrics` and
//! every Prometheus server read it. Pure: builds a `String`.
//!
//! Each family is written as `# HELP`, `# TYPE`, then its samples, never interleaved with
//! another family; label values escape `\`, `"` and newlines, help text escapes `\` and
//! newlines. A family with no samples is not written at all.

use std::fmt::{Display, Write};

/// The content type of a scrape answer in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        }
    }
}

/// Writes families into a string.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// Starts family `name`. Call only when at least one sample follows.
    pub fn family(&mut self, name: &str, kind: Type, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(help, &mut self.out);
        self.out.push('\n');
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample line: `name{labels} value`.
    pub fn sample<'k, 'v>(
        &mut self,
        name: &str,
        labels: impl IntoIterator<Item = (&'k str, &'v str)>,
        value: impl Display,
    ) {
        self.out.push_str(name);
        let mut first = true;
        for (k, v) in labels {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label_value(v, &mut self.out);
            self.out.push('"');
        }
        if !first {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes help text: backslash and line feed.
pub fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(v: &str) -> String {
        let mut s = String::new();
        escape_label_value(v, &mut s);
        s
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escaped("plain-value_1.2"), "plain-value_1.2");
        assert_eq!(escaped(r#"a"b"#), r#"a\"b"#);
        assert_eq!(escaped(r"a\b"), r"a\\b");
        assert_eq!(escaped("a\nb"), r"a\nb");
        assert_eq!(escaped("\\\"\n"), r#"\\\"\n"#);
        // Tabs, carriage returns and non-ASCII pass through: the format allows them.
        assert_eq!(escaped("é\t\r"), "é\t\r");
    }

    #[test]
    fn families_and_samples() {
        let mut e = Encoder::new();
        e.family("demo_total", Type::Counter, "Things\nwith a \\ in the help");
        e.sample("demo_total", [("a", "x"), ("b", "y\"z")], 3u64);
        e.sample("demo_total", [], 0u64);
        e.family("demo_seconds", Type::Histogram, "h");
        e.sample("demo_seconds_sum", [("le", "+Inf")], 0.25f64);
        assert_eq!(
            e.finish(),
            "# HELP demo_total Things\\nwith a \\\\ in the help\n\
             # TYPE demo_total counter\n\
             demo_total{a=\"x\",b=\"y\\\"z\"} 3\n\
             demo_total 0\n\
             # HELP demo_seconds h\n\
             # TYPE demo_seconds histogram\n\
             demo_seconds_sum{le=\"+Inf\"} 0.25\n"
        );
    }
}
