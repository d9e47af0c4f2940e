//! What zring adds around serde_yaml, before and after it runs: `check_flow_depth` refuses
//! flow collections nested too deep for libyaml's scanner to stay linear, and `yaml_error`
//! turns serde_yaml's errors into `LocalConfigError::Yaml`, cut short. Pure; runs on the
//! control thread (or whichever thread calls `parse`).

use super::LocalConfigError;

/// serde_yaml's own recursion limit: nothing nested deeper can deserialize anyway.
pub(super) const MAX_FLOW_DEPTH: usize = 128;

/// Refuses flow collections (`[`, `{`) nested deeper than `MAX_FLOW_DEPTH` before serde_yaml
/// sees them: libyaml's scanner takes time quadratic in that depth inside a mapping (24 s of
/// control-thread CPU for `workloads: ` followed by 100,000 `[`), although such a document
/// fails anyway. A linear scan that skips quoted scalars and comments; brackets inside plain
/// or block scalars are counted only where a collection could start (after whitespace, `,`,
/// `:`, `[`, `{`), so the count can only run high for text no config contains.
pub(super) fn check_flow_depth(bytes: &[u8]) -> Result<(), LocalConfigError> {
    let (mut depth, mut line, mut i) = (0usize, 1usize, 0usize);
    // Whether the previous byte ends a token (whitespace, or a structural `[{,:]}`), so the
    // current one may start a collection, a quoted scalar or a comment.
    let (mut boundary, mut after_space) = (true, true);
    while let Some(&b) = bytes.get(i) {
        let was_boundary = boundary;
        boundary = false;
        match b {
            b'\n' => line += 1,
            b'#' if after_space => {
                // A comment runs to the end of the line; the newline is handled next turn.
                while bytes.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' if was_boundary => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' if b == b'"' => i += 1,
                        b'\'' if b == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        b'\n' => line += 1,
                        c if c == b => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'[' | b'{' if was_boundary => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(LocalConfigError::Yaml {
                        message: format!(
                            "'[' and '{{' nested deeper than {MAX_FLOW_DEPTH} levels at line {line}"
                        ),
                        line: Some(line),
                        column: None,
                    });
                }
                boundary = true;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                boundary = true;
            }
            b',' | b':' => boundary = true,
            _ => {}
        }
        after_space = matches!(b, b'\n' | b'\r' | b' ' | b'\t');
        boundary |= after_space;
        i += 1;
    }
    Ok(())
}

pub(super) fn yaml_error(e: serde_yaml::Error) -> LocalConfigError {
    const MAX: usize = 400;
    let (line, column) = e
        .location()
        .map_or((None, None), |l| (Some(l.line()), Some(l.column())));
    let mut message = e.to_string();
    // serde_yaml quotes offending values in full; keep the start and the position.
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("… (cut)");
        if let (Some(l), Some(c)) = (line, column) {
            message.push_str(&format!(" at line {l} column {c}"));
        }
    }
    LocalConfigError::Yaml {
        message,
        line,
        column,
    }
}
