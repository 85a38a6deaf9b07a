//! The engine's folders form layers: every `crate::` path in `engine/src` points from a folder
//! to one below it, never back (no folder cycle), and the files inside a folder import each
//! other without a cycle either. A cycle fails this test, named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A source file: its folder (or root file's name) and its module name within the folder.
struct Source {
    folder: String,
    module: String,
    code: String,
}

/// The code of `text` without comments (line, doc and block comments) and string literals, so
/// a path named in prose or a message is no import.
fn strip(text: &str) -> String {
    let (b, mut out, mut i) = (text.as_bytes(), String::new(), 0);
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The identifiers that follow each occurrence of `prefix` in `code`.
fn after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before_ok = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        rest = &rest[at + prefix.len()..];
        let name_len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if before_ok && name_len > 0 {
            found.push(&rest[..name_len]);
        }
    }
    found
}

/// Folder edges (`crate::other`) and, per folder, file edges (`crate::folder::file`,
/// `super::file`).
type Graph = BTreeMap<String, BTreeSet<String>>;

fn graphs(sources: &[Source]) -> (Graph, BTreeMap<String, Graph>) {
    let mut folders = Graph::new();
    let mut files: BTreeMap<String, Graph> = BTreeMap::new();
    let modules: BTreeMap<&str, BTreeSet<&str>> =
        sources.iter().fold(BTreeMap::new(), |mut m, s| {
            m.entry(s.folder.as_str())
                .or_default()
                .insert(s.module.as_str());
            m
        });
    for s in sources {
        folders.entry(s.folder.clone()).or_default();
        let own = &modules[s.folder.as_str()];
        let file_graph = files.entry(s.folder.clone()).or_default();
        file_graph.entry(s.module.clone()).or_default();
        for target in after(&s.code, "crate::") {
            if target != s.folder && modules.contains_key(target) {
                folders
                    .get_mut(&s.folder)
                    .unwrap()
                    .insert(target.to_string());
            }
        }
        let inner = format!("crate::{}::", s.folder);
        let siblings = after(&s.code, &inner)
            .into_iter()
            .chain(after(&s.code, "super::"));
        for target in siblings {
            if target != s.module && own.contains(target) && s.module != "mod" {
                file_graph
                    .get_mut(&s.module)
                    .unwrap()
                    .insert(target.to_string());
            }
        }
    }
    (folders, files)
}

/// Every cycle of `g` (strongly connected components of more than one node), each named as
/// `a -> b -> … -> a` along its edges.
fn cycles(g: &Graph) -> Vec<String> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for m in g.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let mut named = Vec::new();
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if done.contains(n) || !reach(n).contains(n) {
            continue;
        }
        let component: BTreeSet<String> = reach(n)
            .into_iter()
            .filter(|m| reach(m).contains(n))
            .collect();
        // Walk the cycle through n within its component.
        let mut path = vec![n.clone()];
        let mut at = n.clone();
        loop {
            let next = g[&at]
                .iter()
                .find(|m| component.contains(*m) && (*m == n || !path.contains(m)))
                .cloned()
                .unwrap_or_else(|| n.clone());
            path.push(next.clone());
            if next == *n || path.len() > component.len() + 1 {
                break;
            }
            at = next;
        }
        named.push(path.join(" -> "));
        done.extend(component);
    }
    named
}

fn engine_sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src");
    let mut sources = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path == root.join("lib.rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap();
            let parts: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let (folder, module) = match parts.as_slice() {
                [file] => (file.clone(), file.clone()),
                [folder, module, ..] => (folder.clone(), module.clone()),
                [] => unreachable!(),
            };
            let code = strip(&std::fs::read_to_string(&path).unwrap());
            sources.push(Source {
                folder,
                module,
                code,
            });
        }
    }
    sources
}

#[test]
fn the_engine_folders_form_layers_without_cycles() {
    let sources = engine_sources();
    let (folders, files) = graphs(&sources);
    // The reader sees the imports it must see (a parser that finds nothing passes nothing).
    assert!(folders["model"].contains("io"), "{folders:?}");
    assert!(folders["jobs"].contains("train"), "{folders:?}");
    assert!(
        files["train"]["training_loop"].contains("trainer"),
        "{files:?}"
    );
    let folder_cycles = cycles(&folders);
    assert!(
        folder_cycles.is_empty(),
        "folders that import each other: {folder_cycles:?}"
    );
    let file_cycles: Vec<String> = files
        .iter()
        .flat_map(|(folder, g)| {
            cycles(g)
                .into_iter()
                .map(move |c| format!("{folder}/: {c}"))
        })
        .collect();
    assert!(
        file_cycles.is_empty(),
        "files that import each other: {file_cycles:?}"
    );
    // The layers, bottom first, for a reader.
    let mut order: Vec<&String> = Vec::new();
    let mut left: BTreeSet<&String> = folders.keys().collect();
    while !left.is_empty() {
        let ready: Vec<&String> = left
            .iter()
            .copied()
            .filter(|f| folders[*f].iter().all(|d| !left.contains(d)))
            .collect();
        for f in &ready {
            left.remove(f);
        }
        order.extend(ready);
    }
    eprintln!("layers, bottom first: {order:?}");
}

#[test]
fn a_cycle_is_found_and_named() {
    let source = |folder: &str, module: &str, code: &str| Source {
        folder: folder.into(),
        module: module.into(),
        code: strip(code),
    };
    let sources = [
        source("model", "dit", "use crate::io::weights::TensorFile;"),
        source("io", "weights", "use crate::model::config::ModelMeta;"),
        source(
            "io",
            "writer",
            "use super::host::HostTensor; // crate::train::x",
        ),
        source("io", "host", "use crate::io::writer::Storage;"),
        source("train", "jobs", "let s = \"crate::model\"; /* crate::io */"),
    ];
    let (folders, files) = graphs(&sources);
    assert_eq!(cycles(&folders), vec!["io -> model -> io".to_string()]);
    assert_eq!(
        cycles(&files["io"]),
        vec!["host -> writer -> host".to_string()]
    );
    assert!(
        folders["train"].is_empty(),
        "comments and strings are no imports"
    );
}
