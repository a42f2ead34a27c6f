//! The layers of ARCHITECTURE.md, checked: every `crate::` path in the
//! library's non-test code points down the layer order, so no folder of
//! `src/` imports one that imports it, and no file imports one that imports
//! it. A new import that breaks the order fails here with the file and the
//! path, instead of being found by the next engineer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module of `src/` may use (besides itself). The
/// order is the layers' (ARCHITECTURE.md, "The layers"): each may use only
/// those listed before it.
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("util", &["error"]),
    ("wire", &["error", "util"]),
    ("transport", &["error", "util", "wire"]),
    ("ops", &["error", "util", "wire", "transport"]),
    ("store", &["error", "util", "wire", "transport", "ops"]),
    ("client", &["error", "util", "wire", "transport", "ops"]),
    ("handler", &["error", "util", "wire", "transport", "ops", "store"]),
    (
        "pipeline",
        &["error", "util", "wire", "transport", "ops", "store", "handler"],
    ),
    (
        "app",
        &[
            "error",
            "util",
            "wire",
            "transport",
            "ops",
            "store",
            "client",
            "handler",
            "pipeline",
        ],
    ),
    // The test kit drives whole apps: above every layer, used by none.
    (
        "testing",
        &[
            "error",
            "util",
            "wire",
            "transport",
            "ops",
            "store",
            "client",
            "handler",
            "pipeline",
            "app",
        ],
    ),
];

/// The broker back ends: the pipeline never names one.
const BACK_ENDS: &[&str] = &["transport::amqp", "transport::nats", "transport::memory"];

struct Source {
    /// Module path of the file (`transport::nats::pull`).
    module: String,
    /// The file, for messages.
    path: PathBuf,
    /// Non-test code without comments.
    code: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            // Unit tests in files of their own, and the crate root.
            if parts.iter().any(|p| p == "tests" || p == "test_support") || parts == ["lib"] {
                return None;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            Some(Source {
                module: parts.join("::"),
                path,
                code: non_test_code(&text),
            })
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The code before the file's test modules (they come last, by the
/// project's convention), without comment lines.
fn non_test_code(text: &str) -> String {
    let end = ["#[cfg(test)]", "#[cfg(all(test"]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths named after `crate::` in `code`, as far as they go
/// (`crate::transport::nats::Shared` gives `transport::nats::Shared`).
fn crate_paths(code: &str) -> Vec<String> {
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // Not `$crate::` nor the end of a longer identifier.
            code[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '$'))
        })
        .map(|(at, _)| {
            code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect::<String>()
                .trim_end_matches(':')
                .to_owned()
        })
        .filter(|path| path.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .collect()
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

#[test]
fn every_import_points_down_the_layers() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    let sources = sources();
    assert!(sources.len() > 50, "found only {} source files", sources.len());
    for source in &sources {
        let from = top(&source.module);
        let Some(may) = allowed.get(from) else {
            wrong.push(format!(
                "{}: top-level module {from} is not in ALLOWED",
                source.path.display()
            ));
            continue;
        };
        for path in crate_paths(&source.code) {
            let to = top(&path);
            if to != from && !may.contains(&to) {
                wrong.push(format!("{}: {from} uses crate::{path}", source.path.display()));
            }
            if from == "pipeline" && BACK_ENDS.iter().any(|b| path.starts_with(b)) {
                wrong.push(format!(
                    "{}: the pipeline names a broker: crate::{path}",
                    source.path.display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other_in_a_circle() {
    let sources = sources();
    let modules: BTreeSet<&str> = sources.iter().map(|s| s.module.as_str()).collect();
    // Edges between files: the longest module named by each `crate::` path.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for source in &sources {
        for path in crate_paths(&source.code) {
            let mut target = path.as_str();
            while !modules.contains(target) {
                match target.rfind("::") {
                    Some(cut) => target = &target[..cut],
                    None => break,
                }
            }
            if let Some(&target) = modules.get(target)
                && target != source.module
                && !source.module.starts_with(&format!("{target}::"))
                && !target.starts_with(&format!("{}::", source.module))
            {
                edges.entry(source.module.as_str()).or_default().insert(target);
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        done: &mut BTreeSet<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in &modules {
        let mut path = Vec::new();
        if let Some(cycle) = visit(module, &edges, &mut done, &mut path) {
            panic!("modules import each other in a circle: {}", cycle.join(" -> "));
        }
    }
}
