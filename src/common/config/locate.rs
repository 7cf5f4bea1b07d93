//! Finds the line of a key path in YAML text, so validation errors can point at it.
//!
//! serde_yaml reports positions only for syntax and type errors; semantic checks run on the parsed
//! value. This walks the text by indentation, which is enough for block-style YAML and degrades
//! to the nearest enclosing key for flow style.

/// One step of a path into the config: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(&'static str),
    /// A sequence item.
    Index(usize),
}

/// 1-based line of `path` in `text`, or of the deepest prefix of it that was found.
pub fn locate(text: &str, path: &[Segment]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    let mut end = lines.len();
    let mut parent_indent: isize = -1;
    let mut found = None;
    for seg in path {
        let hit = match seg {
            Segment::Key(key) => find_key(&lines, start, end, parent_indent, key),
            Segment::Index(n) => find_item(&lines, start, end, parent_indent, *n),
        };
        let Some((line, indent)) = hit else { break };
        let is_item = matches!(seg, Segment::Index(_));
        found = Some(line + 1);
        end = block_end(&lines, line + 1, end, indent, is_item);
        // An item's first key sits on the dash line itself.
        start = if is_item { line } else { line + 1 };
        parent_indent = indent;
    }
    found
}

fn content(line: &str) -> Option<(isize, &str)> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    Some(((line.len() - trimmed.len()) as isize, trimmed))
}

fn find_key(
    lines: &[&str],
    start: usize,
    end: usize,
    parent: isize,
    key: &str,
) -> Option<(usize, isize)> {
    for (i, line) in lines.iter().enumerate().take(end).skip(start) {
        let Some((mut indent, mut rest)) = content(line) else {
            continue;
        };
        while let Some(after) = rest.strip_prefix("- ") {
            indent += 2;
            rest = after.trim_start();
        }
        if indent <= parent {
            continue;
        }
        let bare = rest.trim_start_matches(['{', ' ']);
        if bare.starts_with(key) && bare[key.len()..].trim_start().starts_with(':') {
            return Some((i, indent));
        }
        // Flow style: `health-check: { interval: 60s }`.
        if rest.contains('{') && rest.contains(&format!("{key}:")) {
            return Some((i, indent));
        }
    }
    None
}

fn find_item(
    lines: &[&str],
    start: usize,
    end: usize,
    parent: isize,
    n: usize,
) -> Option<(usize, isize)> {
    let mut seen = 0;
    let mut item_indent = None;
    for (i, line) in lines.iter().enumerate().take(end).skip(start) {
        let Some((indent, rest)) = content(line) else {
            continue;
        };
        if !(rest.starts_with("- ") || rest == "-") || indent < parent {
            continue;
        }
        let level = *item_indent.get_or_insert(indent);
        if indent != level {
            continue;
        }
        if seen == n {
            return Some((i, indent));
        }
        seen += 1;
    }
    None
}

/// Where the block that starts under a key (or item) at `indent` ends. A key's sequence items may
/// sit at the key's own indent; an item ends at its next sibling.
fn block_end(lines: &[&str], start: usize, end: usize, indent: isize, is_item: bool) -> usize {
    for (i, line) in lines.iter().enumerate().take(end).skip(start) {
        if let Some((ind, rest)) = content(line) {
            let child_item = !is_item && rest.starts_with('-');
            if ind < indent || (ind == indent && !child_item) {
                return i;
            }
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::Segment::{Index, Key};
    use super::*;

    const TEXT: &str = "\
fleet-id: fleet-a
health-check: { interval: 1s }
runtime-configuration:
  ServerProcesses:
    - LaunchPath: /local/game/a
      ConcurrentExecutions: 1
    - LaunchPath: /local/game/b
      # comment
      ConcurrentExecutions: 99
  MaxConcurrentGameServerSessionActivations: 2
";

    #[test]
    fn finds_nested_keys_and_items() {
        assert_eq!(locate(TEXT, &[Key("fleet-id")]), Some(1));
        assert_eq!(
            locate(
                TEXT,
                &[
                    Key("runtime-configuration"),
                    Key("ServerProcesses"),
                    Index(1),
                    Key("ConcurrentExecutions")
                ]
            ),
            Some(9)
        );
        assert_eq!(
            locate(
                TEXT,
                &[
                    Key("runtime-configuration"),
                    Key("ServerProcesses"),
                    Index(0),
                    Key("LaunchPath")
                ]
            ),
            Some(5)
        );
        assert_eq!(
            locate(
                TEXT,
                &[
                    Key("runtime-configuration"),
                    Key("MaxConcurrentGameServerSessionActivations")
                ]
            ),
            Some(10)
        );
    }

    #[test]
    fn flow_style_and_missing_keys_fall_back_to_the_parent() {
        assert_eq!(
            locate(TEXT, &[Key("health-check"), Key("interval")]),
            Some(2)
        );
        assert_eq!(
            locate(TEXT, &[Key("runtime-configuration"), Key("Nope")]),
            Some(3)
        );
    }
}
