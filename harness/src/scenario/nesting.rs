//! A pre-scan of YAML text for deep flow nesting (`[[[[…` / `{a: {a: …`), before the YAML parser sees it.
//!
//! The parser behind serde_norway (libyaml) keeps one "possible simple key" per open flow collection and
//! revisits them all at every token, so its time grows with depth × tokens: measured here, 100 000 nested
//! `{a: ` (400 KB) take over two minutes to be refused (serde_norway's recursion limit of 128 only applies
//! after the whole document is scanned). This scan is linear and refuses such text in milliseconds.
//!
//! It follows YAML's lexical rules as far as brackets are concerned: quoted scalars (which start only where a
//! token starts, and may span lines), comments, block scalars (`|`, `>`; their content lines are skipped) and
//! document markers (which YAML does not allow inside quoted scalars, so they reset the scan).

/// Flow collections nested deeper than this are refused. Kubernetes manifests written in flow style (or
/// JSON) nest a dozen levels; serde_norway refuses anything past 128 levels of any kind anyway.
pub const MAX_FLOW_DEPTH: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Quote {
    None,
    Single,
    Double,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_doc_marker(rest: &[u8]) -> bool {
    (rest.starts_with(b"---") || rest.starts_with(b"..."))
        && rest.get(3).is_none_or(|b| is_space(*b))
}

fn indent(line: &[u8]) -> usize {
    line.iter().take_while(|b| **b == b' ').count()
}

/// The column a block scalar's content must be indented past, given the text of its line before the `|` or
/// `>` (None: this `|` is not a block scalar indicator). `previous_owner` is that of the last non-blank line,
/// for an indicator alone on its line (`key:` then `  |`). -1: a document-level scalar, up to the next
/// document marker.
fn block_scalar_owner(before: &[u8], previous_owner: isize) -> Option<isize> {
    let mut col = indent(before);
    let mut rest = &before[col..];
    let mut indicator_col = None;
    // `- ` / `? ` prefixes: a block sequence entry (or complex key) holds the node.
    while let Some(r) = rest
        .strip_prefix(b"- ")
        .or_else(|| rest.strip_prefix(b"? "))
    {
        indicator_col = Some(col);
        let spaces = 1 + indent(r);
        col += 1 + spaces;
        rest = &rest[1 + spaces..];
    }
    // Properties before the indicator: `key: !!str |`, `- &anchor >`.
    let mut s = rest.trim_ascii_end();
    loop {
        let token_at = s.iter().rposition(|b| is_space(*b)).map_or(0, |p| p + 1);
        if token_at < s.len() && matches!(s[token_at], b'!' | b'&') {
            s = s[..token_at].trim_ascii_end();
        } else {
            break;
        }
    }
    if s == b"---" {
        return Some(-1);
    }
    if s.is_empty() {
        return Some(match indicator_col {
            Some(c) => c as isize,
            None => previous_owner.min(indent(before) as isize - 1),
        });
    }
    // `key: |`: the mapping's indentation is the key's column.
    if s.ends_with(b":") {
        return Some(col as isize);
    }
    None
}

/// Ok, or the 1-based line where flow collections first nest deeper than [`MAX_FLOW_DEPTH`].
pub(super) fn check_flow_depth(text: &str) -> Result<(), usize> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut quote = Quote::None;
    let mut line = 1usize;
    let mut line_start = 0usize;
    let mut previous_owner: isize = -1;
    let mut i = 0usize;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            let this_line = &b[line_start..i];
            if !this_line.trim_ascii().is_empty() && quote == Quote::None {
                previous_owner = indent(this_line) as isize;
            }
            i += 1;
            line += 1;
            line_start = i;
            if is_doc_marker(&b[i..]) {
                depth = 0;
                quote = Quote::None;
            }
            continue;
        }
        match quote {
            Quote::Single => {
                if c == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    quote = Quote::None;
                }
                i += 1;
                continue;
            }
            Quote::Double => {
                if c == b'\\' && b.get(i + 1).is_some_and(|n| *n != b'\n') {
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    quote = Quote::None;
                }
                i += 1;
                continue;
            }
            Quote::None => {}
        }
        let prev = if i == 0 { b'\n' } else { b[i - 1] };
        let token_start =
            is_space(prev) || matches!(prev, b'[' | b'{' | b',') || (depth > 0 && prev == b':');
        match c {
            b'#' if is_space(prev) => {
                i = b[i..]
                    .iter()
                    .position(|x| *x == b'\n')
                    .map_or(b.len(), |p| i + p);
                continue;
            }
            b'\'' if token_start => quote = Quote::Single,
            b'"' if token_start => quote = Quote::Double,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'|' | b'>' if depth == 0 && token_start => {
                if let Some(owner) = block_scalar_owner(&b[line_start..i], previous_owner) {
                    // Skip the rest of this line, then every blank line and every line indented past the
                    // owner: the scalar's content, where brackets and quotes are text.
                    let mut j = b[i..]
                        .iter()
                        .position(|x| *x == b'\n')
                        .map_or(b.len(), |p| i + p);
                    while j < b.len() {
                        let next = j + 1;
                        let end = b[next..]
                            .iter()
                            .position(|x| *x == b'\n')
                            .map_or(b.len(), |p| next + p);
                        let l = &b[next..end];
                        let content = l.trim_ascii().is_empty()
                            || (indent(l) as isize > owner && !is_doc_marker(l));
                        if !content {
                            break;
                        }
                        line += 1;
                        j = end;
                    }
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(n: usize) -> String {
        format!("a: {}{}\n", "{a: ".repeat(n), "}".repeat(n))
    }

    #[test]
    fn ordinary_yaml_passes() {
        for t in [
            include_str!("../../../scenarios/seed/manifests.yaml"),
            include_str!("../../../scenarios/seed/scenario.yaml"),
            "a: [1, [2, [3]]]\nb: {c: {d: e}}\n",
            "q: \"[[[[ not nesting\"\nr: '{{{{ it''s text'\n",
        ] {
            assert_eq!(check_flow_depth(t), Ok(()), "{t}");
        }
        assert_eq!(check_flow_depth(&deep(MAX_FLOW_DEPTH)), Ok(()));
    }

    #[test]
    fn deep_flow_nesting_is_found_fast_wherever_it_hides() {
        let n = 200_000;
        assert_eq!(check_flow_depth(&"[".repeat(n)), Err(1));
        assert!(check_flow_depth(&deep(n)).is_err());
        // Quotes that YAML reads as text (`it's`) do not hide what follows.
        assert!(check_flow_depth(&format!("x: it's\n{}", deep(n))).is_err());
        // Nor do closing brackets inside quoted scalars, across lines.
        let sneaky = "[ \"\n]]]]\n\" ".repeat(100);
        assert!(check_flow_depth(&sneaky).is_err());
        // A block scalar's content is text; what follows it is YAML again.
        let block = format!("s: |\n  it ' \" [[[[\n{}", deep(100));
        assert!(check_flow_depth(&block).is_err());
        let seq = format!("- |\n '\n- {}", deep(100).trim_start_matches("a: "));
        assert!(check_flow_depth(&seq).is_err());
        let compact = format!(
            "- key: |1\n    text '\n  other: {}",
            deep(100).trim_start_matches("a: ")
        );
        assert!(check_flow_depth(&compact).is_err());
        // A comment ends at the line's end.
        assert!(check_flow_depth(&format!("# '\n{}", deep(100))).is_err());
        // A document-level block scalar ends at the next document.
        assert!(check_flow_depth(&format!("--- |\n'\n---\n{}", deep(100))).is_err());
    }

    #[test]
    fn block_scalar_content_is_not_counted() {
        let json = format!(
            "data:\n  config.json: |\n    {}{}\nnext: 1\n",
            "{\"a\": ".repeat(200),
            "}".repeat(200)
        );
        assert_eq!(check_flow_depth(&json), Ok(()));
        let tagged = format!("k: !!str >-\n  {}\n", "[".repeat(500));
        assert_eq!(check_flow_depth(&tagged), Ok(()));
    }
}
