//! The tree is the architecture: `src/api` and `src/common` import neither half, `src/control`
//! does not import `src/agent`, and no cycle joins the modules of `src/agent`, `src/api` and
//! `src/common` (but for the cycles still to be broken, listed below, which may only shrink).
//! And the code reads on a screen: no file in `src/` over [`MAX_FILE_LINES`] lines and no
//! function over [`MAX_FN_LINES`], tests apart.
//!
//! A module here is a folder or file one level under `src/agent`, `src/api` or `src/common`
//! (`agent::fleet`, `api::tc3`), or `control`; an import is a `crate::…` path in code (comments
//! apart) or a `super::…` path that leaves its module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// A file's lines at most, its tests apart (a `tests.rs`, a `tests/` folder, or what follows
/// `#[cfg(test)] mod tests {`).
const MAX_FILE_LINES: usize = 600;
/// A function's lines at most, its signature and closing brace included.
const MAX_FN_LINES: usize = 120;

/// Cycles among the agent's modules still to be broken (issue 20), each as the set of modules
/// it joins. A cycle found must lie within one of these.
const CYCLES_TO_BREAK: &[&[&str]] = &[&[
    "agent::capi",
    "agent::config",
    "agent::metrics",
    "agent::package",
    "agent::process",
    "agent::upstream",
]];

/// The module `file` belongs to, and its path within the crate (`["agent", "fleet", "actor"]`).
fn module_of(file: &Path) -> Option<(String, Vec<String>)> {
    let rel = file.strip_prefix(SRC).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    let unit = match parts.first().map(String::as_str) {
        Some("agent" | "api" | "common") if parts.len() >= 2 => {
            format!("{}::{}", parts[0], parts[1])
        }
        Some("control") => "control".to_string(),
        _ => return None,
    };
    Some((unit, parts))
}

/// The module a path `crate::a::b::…` names (as [`module_of`] counts modules).
fn unit_of(path: &[&str]) -> Option<String> {
    match path {
        ["agent" | "api" | "common", second, ..] => Some(format!("{}::{second}", path[0])),
        ["control", ..] => Some("control".into()),
        _ => None,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every module's imports of other modules, with the file and line of one of each.
fn imports() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let Some((unit, parts)) = module_of(&file) else {
            continue;
        };
        // A module's tests may use what they like.
        if file.file_stem().is_some_and(|s| s == "tests")
            || file.components().any(|c| c.as_os_str() == "tests")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            // An inline test module ends the file's code.
            if line.trim() == "#[cfg(test)]"
                && lines
                    .get(n + 1)
                    .is_some_and(|l| l.starts_with("mod ") && l.ends_with('{'))
            {
                break;
            }
            let code = line.split("//").next().unwrap_or_default();
            let mut found: Vec<Vec<String>> = Vec::new();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                found.push(path_words(rest));
            }
            for (i, _) in code.match_indices("super::") {
                if i >= 2 && &code[i - 2..i] == "::" {
                    continue;
                }
                let mut base = parts.clone();
                let mut rest = &code[i..];
                // `super` of a file `a/b.rs` is `a`; of `a/b/mod.rs`, also `a`.
                while let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                }
                base.extend(path_words(rest));
                found.push(base);
            }
            for path in found {
                let words: Vec<&str> = path.iter().map(String::as_str).collect();
                if let Some(to) = unit_of(&words)
                    && to != unit
                {
                    let at = format!("{}:{}", file.strip_prefix(SRC).unwrap().display(), n + 1);
                    graph
                        .entry(unit.clone())
                        .or_default()
                        .entry(to)
                        .or_insert(at);
                }
            }
        }
        graph.entry(unit).or_default();
    }
    graph
}

/// The identifiers of a path: `a::b::{c, d}` gives `[a, b]`.
fn path_words(rest: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = rest;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        words.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    words
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|e| e.keys()) {
                let w = w.as_str();
                if !self.graph.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// What breaks the rules in `graph`, one line each.
fn violations(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, to) in graph {
        for (target, at) in to {
            let half = |m: &str| m.split("::").next().unwrap_or_default().to_string();
            let (from_half, to_half) = (half(from), half(target));
            let refused = match from_half.as_str() {
                "api" | "common" => to_half == "agent" || to_half == "control",
                "control" => to_half == "agent",
                "agent" => to_half == "control",
                _ => false,
            };
            if refused {
                bad.push(format!("{from} imports {target} ({at})"));
            }
        }
    }
    for cycle in cycles(graph) {
        let known = CYCLES_TO_BREAK
            .iter()
            .any(|k| cycle.iter().all(|m| k.contains(&m.as_str())));
        if !known {
            let members: Vec<&str> = cycle.iter().map(String::as_str).collect();
            let edges: Vec<String> = cycle
                .iter()
                .flat_map(|m| {
                    graph[m]
                        .iter()
                        .filter(|(t, _)| cycle.contains(*t))
                        .map(move |(t, at)| format!("{m} → {t} ({at})"))
                })
                .collect();
            bad.push(format!(
                "a new cycle joins {}: {}",
                members.join(", "),
                edges.join("; ")
            ));
        }
    }
    bad
}

#[test]
fn the_halves_import_only_what_the_layout_allows_and_no_new_cycle_returns() {
    let graph = imports();
    assert!(
        graph.contains_key("agent::fleet") && graph.contains_key("api::tc3"),
        "the modules were found: {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    let bad = violations(&graph);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // The list may only shrink: a module in no cycle any more must go.
    let found = cycles(&graph);
    for known in CYCLES_TO_BREAK {
        for m in *known {
            assert!(
                found.iter().any(|c| c.contains(*m)),
                "{m} is in no cycle any more: take it off CYCLES_TO_BREAK"
            );
        }
    }
}

#[test]
fn a_deliberate_violation_is_found() {
    let mut graph = imports();
    graph
        .entry("api::tc3".into())
        .or_default()
        .insert("agent::fleet".into(), "api/tc3/mod.rs:1".into());
    graph
        .entry("common::listen".into())
        .or_default()
        .insert("common::telemetry".into(), "common/listen.rs:1".into());
    graph
        .entry("common::telemetry".into())
        .or_default()
        .insert("common::listen".into(), "common/telemetry.rs:1".into());
    graph
        .entry("control".into())
        .or_default()
        .insert("agent::upstream".into(), "control/mod.rs:1".into());
    let bad = violations(&graph);
    for want in [
        "api::tc3 imports agent::fleet (api/tc3/mod.rs:1)",
        "control imports agent::upstream (control/mod.rs:1)",
        "a new cycle joins common::listen, common::telemetry",
    ] {
        assert!(
            bad.iter().any(|b| b.starts_with(want)),
            "{want:?} not in {bad:#?}"
        );
    }
}

/// What of `text` (the file `name`) is over the bounds: the file's length without its tests,
/// and each function longer than [`MAX_FN_LINES`]. Functions are found as rustfmt lays them
/// out: a line `fn name` at some indent, ended by the first `}` alone at that indent.
fn oversized(name: &str, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let code = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod tests {"))
        .unwrap_or(lines.len());
    let mut bad = Vec::new();
    if code > MAX_FILE_LINES {
        bad.push(format!(
            "{name} has {code} lines (tests apart); the bound is {MAX_FILE_LINES}"
        ));
    }
    for (i, line) in lines[..code].iter().enumerate() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let words: Vec<&str> = body.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let before_ok = words[..at].iter().all(|w| {
            matches!(*w, "pub" | "async" | "const" | "unsafe" | "extern") || w.starts_with("pub(")
        });
        if !before_ok || body.ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        let Some(end) = lines[i + 1..code].iter().position(|l| *l == close) else {
            continue;
        };
        let length = end + 2;
        if length > MAX_FN_LINES {
            let fn_name: String = words
                .get(at + 1)
                .unwrap_or(&"")
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            bad.push(format!(
                "{name}:{} fn {fn_name} has {length} lines; the bound is {MAX_FN_LINES}",
                i + 1
            ));
        }
    }
    bad
}

#[test]
fn every_file_and_function_in_src_fits_its_bound() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(SRC).unwrap().to_string_lossy().to_string();
        if rel.ends_with("tests.rs") || rel.split('/').any(|p| p == "tests") {
            continue;
        }
        bad.extend(oversized(&rel, &std::fs::read_to_string(&f).unwrap()));
    }
    assert!(bad.is_empty(), "split these by step:\n{}", bad.join("\n"));
}

#[test]
fn a_long_file_and_a_long_function_are_found() {
    let long_fn = format!(
        "impl X {{\n    pub(crate) async fn step(&self) {{\n{}    }}\n}}\n",
        "        call();\n".repeat(MAX_FN_LINES)
    );
    let bad = oversized("x.rs", &long_fn);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].starts_with("x.rs:2 fn step has"), "{bad:?}");
    let short = format!(
        "fn f() {{\n{}}}\n",
        "    call();\n".repeat(MAX_FN_LINES - 2)
    );
    assert!(oversized("y.rs", &short).is_empty());
    let long_file = "// a line\n".repeat(MAX_FILE_LINES + 1);
    assert_eq!(oversized("z.rs", &long_file).len(), 1);
    let with_tests = format!(
        "fn f() {{}}\n#[cfg(test)]\nmod tests {{\n{}}}\n",
        "    // a test\n".repeat(MAX_FILE_LINES)
    );
    assert!(oversized("w.rs", &with_tests).is_empty());
}
