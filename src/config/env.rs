//! `${VAR}` expansion in the raw config text, before YAML parsing.
//!
//! Rules: `${NAME}` (NAME = `[A-Za-z_][A-Za-z0-9_]*`) is replaced by the environment variable;
//! `$${` is a literal `${`; anything else starting with `${` is an error, as is an unset
//! variable or a value with a line break (it would move the rest of the file). Comments (a `#`
//! at the start of a line or after a blank, outside quotes) are copied unchanged, so a
//! commented-out `${SECRET}` needs no variable. Values are inserted verbatim: quote the
//! reference in YAML (`"${KEY}"`) when the value may contain YAML syntax. Error messages name
//! the variable and never its value. Lines never move; columns of errors found after expansion
//! are mapped back to the original text with [`ColumnMap`].

use rustc_hash::FxHashMap;

use super::FieldError;

/// The expanded text and how to map its columns back to the original text.
#[derive(Debug)]
pub(super) struct Expanded {
    pub text: String,
    pub columns: ColumnMap,
}

/// One replacement on a line, in 1-based character columns.
#[derive(Debug, Clone, Copy)]
struct Replacement {
    expanded_start: usize,
    expanded_end: usize,
    original_start: usize,
    original_end: usize,
}

/// Maps (line, column) in the expanded text to the column in the original text.
#[derive(Debug, Default)]
pub(super) struct ColumnMap {
    lines: FxHashMap<usize, Vec<Replacement>>,
}

impl ColumnMap {
    /// The original column for `column` (1-based, characters) on 1-based `line`. A column
    /// inside an inserted value maps to the start of its `${NAME}` reference.
    pub(super) fn original(&self, line: usize, column: usize) -> usize {
        let Some(replacements) = self.lines.get(&line) else {
            return column;
        };
        let mut shifted = column;
        for r in replacements {
            if column < r.expanded_start {
                break;
            }
            if column < r.expanded_end {
                return r.original_start;
            }
            shifted = (column + r.original_end).saturating_sub(r.expanded_end);
        }
        shifted
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Expands `${NAME}` references in `text` using `lookup`. All problems are reported at once.
pub(super) fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, Vec<FieldError>> {
    let mut out = String::with_capacity(text.len());
    let mut columns = ColumnMap::default();
    let mut errors = Vec::new();
    let mut quote = Quote::None;

    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        // 1-based column in the expanded line of the next char written.
        let mut out_col = 1;
        let mut prev: Option<char> = None;
        while let Some(&c) = chars.get(i) {
            match quote {
                Quote::None => {
                    if c == '#' && matches!(prev, None | Some(' ' | '\t')) {
                        // A comment: copy the rest of the line unchanged.
                        out.extend(chars.get(i..).unwrap_or_default());
                        break;
                    }
                    let token_start = matches!(prev, None | Some(' ' | '\t' | '[' | '{' | ','));
                    if token_start && c == '"' {
                        quote = Quote::Double;
                    } else if token_start && c == '\'' {
                        quote = Quote::Single;
                    }
                }
                Quote::Double => {
                    if c == '\\' {
                        // Copy the escape and the escaped char together.
                        out.push(c);
                        out_col += 1;
                        i += 1;
                        if let Some(&next) = chars.get(i) {
                            out.push(next);
                            out_col += 1;
                            i += 1;
                        }
                        prev = Some('x');
                        continue;
                    }
                    if c == '"' {
                        quote = Quote::None;
                    }
                }
                Quote::Single => {
                    if c == '\'' {
                        if chars.get(i + 1) == Some(&'\'') {
                            out.push_str("''");
                            out_col += 2;
                            i += 2;
                            prev = Some('x');
                            continue;
                        }
                        quote = Quote::None;
                    }
                }
            }

            if c == '$' && chars.get(i + 1) == Some(&'$') && chars.get(i + 2) == Some(&'{') {
                // `$${` is a literal `${`.
                out.push_str("${");
                record(&mut columns, line_no, out_col, out_col + 2, i + 1, i + 4);
                out_col += 2;
                i += 3;
                prev = Some('{');
                continue;
            }
            if c == '$' && chars.get(i + 1) == Some(&'{') {
                match reference(&chars, i) {
                    Some((name, end)) => {
                        let replaced = value(name.as_str(), line_no, i + 1, lookup, &mut errors);
                        let len = replaced.chars().count();
                        out.push_str(&replaced);
                        record(
                            &mut columns,
                            line_no,
                            out_col,
                            out_col + len,
                            i + 1,
                            end + 1,
                        );
                        out_col += len;
                        i = end;
                        prev = Some('}');
                    }
                    None => {
                        errors.push(FieldError {
                            path: String::new(),
                            line: Some(line_no),
                            column: Some(i + 1),
                            message: "malformed `${` reference: write `${NAME}` with NAME made \
                                      of letters, digits and `_`, or `$${` for a literal `${`"
                                .to_owned(),
                        });
                        out.push_str("${");
                        out_col += 2;
                        i += 2;
                        prev = Some('{');
                    }
                }
                continue;
            }

            out.push(c);
            out_col += 1;
            prev = Some(c);
            i += 1;
        }
    }

    if errors.is_empty() {
        Ok(Expanded { text: out, columns })
    } else {
        Err(errors)
    }
}

/// Records a replacement; columns are 1-based, ends exclusive.
fn record(
    columns: &mut ColumnMap,
    line: usize,
    expanded_start: usize,
    expanded_end: usize,
    original_start: usize,
    original_end: usize,
) {
    columns.lines.entry(line).or_default().push(Replacement {
        expanded_start,
        expanded_end,
        original_start,
        original_end,
    });
}

/// Parses `${NAME}` starting at `chars[start] == '$'`; returns the name and the index just
/// past the closing brace.
fn reference(chars: &[char], start: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut i = start + 2;
    loop {
        let c = *chars.get(i)?;
        if c == '}' {
            break;
        }
        let ok = c == '_' || c.is_ascii_alphabetic() || (!name.is_empty() && c.is_ascii_digit());
        if !ok {
            return None;
        }
        name.push(c);
        i += 1;
    }
    if name.is_empty() {
        return None;
    }
    Some((name, i + 1))
}

/// Looks up a variable, recording an error (without the value) when it cannot be used.
fn value(
    name: &str,
    line: usize,
    column: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<FieldError>,
) -> String {
    let problem = match lookup(name) {
        Some(v) if v.contains(['\n', '\r']) => {
            "environment variable contains a line break, which is not supported"
        }
        Some(v) => return v,
        None => "environment variable is not set (or not valid UTF-8)",
    };
    errors.push(FieldError {
        path: format!("${{{name}}}"),
        line: Some(line),
        column: Some(column),
        message: problem.to_owned(),
    });
    String::new()
}

/// The process environment as a lookup function.
pub(super) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk_live_1".to_owned()),
            "LONG" => Some("abcdefghij".to_owned()),
            "EMPTY" => Some(String::new()),
            "NL" => Some("a\nb".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn expands_table() {
        let cases: &[(&str, &str)] = &[
            ("a: ${KEY}\n", "a: sk_live_1\n"),
            ("a: \"${KEY}\"\n", "a: \"sk_live_1\"\n"),
            ("a: '${KEY}'\n", "a: 'sk_live_1'\n"),
            ("a: x${KEY}y\n", "a: xsk_live_1y\n"),
            ("a: $${KEY}\n", "a: ${KEY}\n"),
            ("a: $${\n", "a: ${\n"),
            ("a: $KEY $ {x}\n", "a: $KEY $ {x}\n"),
            ("a: ${EMPTY}\n", "a: \n"),
            ("# ${UNSET} in a comment\n", "# ${UNSET} in a comment\n"),
            ("a: 1 # ${UNSET}\n", "a: 1 # ${UNSET}\n"),
            ("a: \"x # ${KEY}\"\n", "a: \"x # sk_live_1\"\n"),
            ("a: 'it''s # ${KEY}'\n", "a: 'it''s # sk_live_1'\n"),
            ("a: \"q\\\" # ${KEY}\"\n", "a: \"q\\\" # sk_live_1\"\n"),
            ("a: b#${KEY}\n", "a: b#sk_live_1\n"),
            ("a: [${KEY}, ${LONG}]\n", "a: [sk_live_1, abcdefghij]\n"),
            ("a: ${KEY}", "a: sk_live_1"),
        ];
        for (input, want) in cases {
            let got = expand(input, &env).map(|e| e.text);
            assert_eq!(got.as_deref().ok(), Some(*want), "input {input:?}: {got:?}");
        }
    }

    #[test]
    fn errors_table() {
        // (input, expected path, line, column, message fragment)
        let cases: &[(&str, &str, usize, usize, &str)] = &[
            ("a: 1\nb: ${UNSET}\n", "${UNSET}", 2, 4, "not set"),
            ("a: \"${NL}\"\n", "${NL}", 1, 5, "line break"),
            ("a: ${}\n", "", 1, 4, "malformed"),
            ("a: ${1A}\n", "", 1, 4, "malformed"),
            ("a: ${A-B}\n", "", 1, 4, "malformed"),
            ("a: ${KEY\n", "", 1, 4, "malformed"),
            ("é: ${UNSET}\n", "${UNSET}", 1, 4, "not set"),
        ];
        for (input, path, line, column, fragment) in cases {
            let errors = match expand(input, &env) {
                Ok(e) => panic!("input {input:?} expanded to {:?}", e.text),
                Err(errors) => errors,
            };
            assert_eq!(errors.len(), 1, "input {input:?}: {errors:?}");
            let e = &errors[0];
            assert_eq!(e.path, *path, "input {input:?}");
            assert_eq!(
                (e.line, e.column),
                (Some(*line), Some(*column)),
                "{input:?}"
            );
            assert!(
                e.message.contains(fragment),
                "input {input:?}: {}",
                e.message
            );
        }
    }

    #[test]
    fn reports_every_unset_variable_and_never_values() {
        let errors = expand("a: ${A1}\nb: ${NL}\nc: ${B2}\n", &env)
            .err()
            .unwrap_or_default();
        let paths: Vec<_> = errors.iter().map(|e| (e.path.as_str(), e.line)).collect();
        assert_eq!(
            paths,
            [("${A1}", Some(1)), ("${NL}", Some(2)), ("${B2}", Some(3))]
        );
        assert!(errors.iter().all(|e| !e.message.contains("a\nb")));
    }

    #[test]
    fn maps_columns_back() {
        // "a: ${KEY} x: ${LONG} z" -> "a: sk_live_1 x: abcdefghij z"
        let expanded = expand("a: ${KEY} x: ${LONG} z\n", &env).ok();
        let expanded = expanded.as_ref().map(|e| (&e.text, &e.columns));
        let Some((text, map)) = expanded else {
            panic!("expansion failed")
        };
        assert_eq!(text, "a: sk_live_1 x: abcdefghij z\n");
        let cases = [
            (1, 1),   // before any replacement
            (4, 4),   // start of the first value -> start of `${KEY}`
            (10, 4),  // inside the first value
            (13, 10), // the blank after the first value
            (14, 11), // 'x'
            (17, 14), // start of the second value -> start of `${LONG}`
            (20, 14), // inside the second value
            (28, 22), // 'z'
        ];
        for (expanded_col, original_col) in cases {
            assert_eq!(
                map.original(1, expanded_col),
                original_col,
                "col {expanded_col}"
            );
        }
        assert_eq!(map.original(2, 7), 7);
    }
}
