//! Config errors a person can act on: where in the file ([`line_col`],
//! [`locate_key`]) and what to do, in a plain sentence ([`plain_problem`])
//! instead of serde's `invalid type: string "65536", expected usize`.
//!
//! Pure text functions over the file text and serde's messages; no I/O.

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// The table path a header line opens (`[a.b]` -> `a.b`, the k-th
/// `[[a.b]]` -> `a.b[k]`), given the count of array headers seen so far.
fn header_path(
    line: &str,
    arrays: &mut std::collections::BTreeMap<String, usize>,
) -> Option<String> {
    let t = line.trim();
    if let Some(inner) = t.strip_prefix("[[") {
        let name = inner.split("]]").next()?.trim().replace(' ', "");
        let n = arrays.entry(name.clone()).or_insert(0);
        let path = format!("{name}[{n}]");
        *n += 1;
        return Some(path);
    }
    let inner = t.strip_prefix('[')?;
    Some(inner.split(']').next()?.trim().replace(' ', ""))
}

fn leaf_of(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('#') && !k.starts_with('[')).then_some(k)
}

/// Where a dotted key path (`buffer.max_bytes`, `devices[2].public_key`,
/// `site`) is written: the line of `leaf = ...` inside its table, else the
/// header of the table itself, else of its parent. `None` when nothing
/// matches (the key is not in the text, e.g. a default).
pub fn locate_key(text: &str, key: &str) -> Option<(usize, usize)> {
    if key.is_empty() {
        return None;
    }
    let (table, leaf) = match key.rsplit_once('.') {
        Some((t, l)) => (t.to_string(), l.to_string()),
        None => (String::new(), key.to_string()),
    };
    let mut arrays = std::collections::BTreeMap::new();
    let mut current = String::new();
    let mut leaf_at = None;
    let mut header_at: Option<(usize, usize)> = None;
    let mut parent_at: Option<(usize, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let col = line.len() - line.trim_start().len() + 1;
        if let Some(p) = header_path(line, &mut arrays) {
            current = p;
            if current == key && header_at.is_none() {
                header_at = Some((i + 1, col));
            }
            if current == table && parent_at.is_none() {
                parent_at = Some((i + 1, col));
            }
            continue;
        }
        if current == table && leaf_of(line) == Some(leaf.as_str()) && leaf_at.is_none() {
            leaf_at = Some((i + 1, col));
        }
    }
    leaf_at.or(header_at).or(parent_at)
}

/// Edit distance (Levenshtein), for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `options` to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    options
        .iter()
        .map(|o| (distance(&word.to_lowercase(), &o.to_lowercase()), *o))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

/// The backticked names in `s`: "`a`, `b`" -> ["a", "b"].
fn ticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

fn unknown(what: &str, word: &str, rest: &str) -> String {
    let options = ticked(rest);
    let list = options.join(", ");
    match did_you_mean(word, &options) {
        Some(m) => format!("unknown {what} `{word}`; did you mean `{m}`? (allowed here: {list})"),
        None if options.is_empty() => format!("unknown {what} `{word}`: nothing is allowed here"),
        None => format!("unknown {what} `{word}` (allowed here: {list})"),
    }
}

fn expected_text(expected: &str) -> (String, Option<(i128, i128)>) {
    let e = expected.trim();
    let range = |lo: i128, hi: i128| Some((lo, hi));
    match e {
        "u8" => ("a whole number from 0 to 255".into(), range(0, 255)),
        "u16" => ("a whole number from 0 to 65535".into(), range(0, 65_535)),
        "u32" => (
            "a whole number from 0 to 4294967295".into(),
            range(0, 4_294_967_295),
        ),
        "u64" | "usize" => ("a whole number of 0 or more".into(), range(0, i128::MAX)),
        "i8" | "i16" | "i32" | "i64" | "isize" => ("a whole number".into(), None),
        "f32" | "f64" => ("a number".into(), None),
        "a string" | "string" => ("text in quotes".into(), None),
        "a boolean" | "bool" => ("true or false".into(), None),
        "a sequence" => ("a list in [ ]".into(), None),
        "a map" => ("a table".into(), None),
        s if s.starts_with("struct ") || s.starts_with("a map") => ("a table".into(), None),
        s => (s.to_string(), None),
    }
}

fn found_text(found: &str) -> (String, Option<String>) {
    let f = found.trim();
    if let Some(v) = f.strip_prefix("string ") {
        return (
            format!("text in quotes ({v})"),
            Some(v.trim_matches('"').to_string()),
        );
    }
    for (p, what) in [
        ("integer ", "the number"),
        ("floating point ", "the number"),
        ("boolean ", ""),
    ] {
        if let Some(v) = f.strip_prefix(p) {
            let v = v.trim_matches('`');
            return (
                if what.is_empty() {
                    v.to_string()
                } else {
                    format!("{what} {v}")
                },
                None,
            );
        }
    }
    match f {
        "sequence" => ("a list".into(), None),
        "map" => ("a table".into(), None),
        other => (other.to_string(), None),
    }
}

/// serde's message about `key` as a plain sentence (see the module doc);
/// messages it does not know are returned as they are.
pub fn plain_problem(_key: &str, message: &str) -> String {
    let m = message.trim();
    if let Some(rest) = m.strip_prefix("unknown field `") {
        let (word, rest) = rest.split_once('`').unwrap_or((rest, ""));
        return unknown("key", word, rest);
    }
    if let Some(rest) = m.strip_prefix("unknown variant `") {
        let (word, rest) = rest.split_once('`').unwrap_or((rest, ""));
        return unknown("value", word, rest);
    }
    if let Some(rest) = m.strip_prefix("missing field `") {
        let word = rest.split('`').next().unwrap_or(rest);
        return format!("the required key `{word}` is missing");
    }
    if let Some(rest) = m.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let (exp, _) = expected_text(expected);
        let (fnd, quoted) = found_text(found);
        let hint = match quoted {
            Some(q) if q.trim().parse::<f64>().is_ok() && exp.contains("number") => {
                format!(": write {} without the quotes", q.trim())
            }
            Some(q) if matches!(q.trim(), "true" | "false") && exp == "true or false" => {
                format!(": write {} without the quotes", q.trim())
            }
            None if exp == "text in quotes" => ": put the value in quotes".to_string(),
            _ => String::new(),
        };
        return format!("must be {exp}, but it is {fnd}{hint}");
    }
    if let Some(rest) = m.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let (exp, _) = expected_text(expected);
        let (fnd, _) = found_text(found);
        let fnd = fnd.trim_start_matches("the number ").to_string();
        return format!("must be {exp}, but it is {fnd}");
    }
    m.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 11), (2, 6));
    }

    #[test]
    fn keys_are_found_in_tables_and_arrays_of_tables() {
        let t = "[site]\nid = \"s\"\n[[devices]]\nid = \"a\"\n[[devices]]\n  id = \"b\"\n  public_key = \"x\"\n[report.parameters.ef]\nvalue = \"1\"\n";
        assert_eq!(locate_key(t, "site.id"), Some((2, 1)));
        assert_eq!(locate_key(t, "devices[1].public_key"), Some((7, 3)));
        assert_eq!(
            locate_key(t, "devices[1].serial"),
            Some((5, 1)),
            "the table's header"
        );
        assert_eq!(locate_key(t, "report.parameters.ef.value"), Some((9, 1)));
        assert_eq!(locate_key(t, "site"), Some((1, 1)));
        assert_eq!(locate_key(t, "upload.url"), None);
    }

    #[test]
    fn serde_messages_become_sentences() {
        assert_eq!(
            plain_problem(
                "x",
                "unknown field `perod_minutes`, expected one of `period_minutes`, `grace_seconds`"
            ),
            "unknown key `perod_minutes`; did you mean `period_minutes`? (allowed here: period_minutes, grace_seconds)"
        );
        assert_eq!(
            plain_problem(
                "x",
                "unknown variant `solarpv`, expected one of `solar_pv`, `rice_awd`"
            ),
            "unknown value `solarpv`; did you mean `solar_pv`? (allowed here: solar_pv, rice_awd)"
        );
        assert!(
            plain_problem("x", "unknown field `zzz`, expected `id`")
                .starts_with("unknown key `zzz` (allowed")
        );
        assert_eq!(
            plain_problem("x", "invalid type: integer `5`, expected a string"),
            "must be text in quotes, but it is the number 5: put the value in quotes"
        );
        assert_eq!(
            plain_problem("x", "invalid type: string \"yes\", expected a boolean"),
            "must be true or false, but it is text in quotes (\"yes\")"
        );
        assert_eq!(
            plain_problem("x", "invalid value: integer `70000`, expected u16"),
            "must be a whole number from 0 to 65535, but it is 70000"
        );
        assert_eq!(plain_problem("x", "something else"), "something else");
    }
}
