//! The layering of `src/` (ARCHITECTURE.md, "What may import what"), checked on the source: a
//! module refers only to modules of lower layers (`crate::…` paths and `use super::…` never
//! leave a module upward). Comments are not code and are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use its own layer's module only if it is itself.
const LAYERS: &[&[&str]] = &[
    &["logging", "message", "secret", "shutdown", "units"],
    &["metrics"],
    &["auth"],
    &["providers"],
    &["config"],
    &["dedup", "envelope"],
    &["publisher", "spool"],
    &["delivery"],
    &["http", "send", "tools"],
    &["app"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for the crate root and the binary).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Top-level modules `text` refers to through `crate::`.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = after;
        }
        // `use crate::{a, b::{c, d}}` groups: the first name of each top-level item.
        if let Some(at) = code.find("crate::{") {
            let mut depth = 0;
            let mut item_start = true;
            let mut name = String::new();
            for c in code[at + "crate::{".len()..].chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    ':' if item_start && !name.is_empty() => {
                        found.insert(std::mem::take(&mut name));
                        item_start = false;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !name.is_empty() {
                            found.insert(std::mem::take(&mut name));
                        }
                        item_start = true;
                    }
                    c if item_start && (c.is_ascii_alphanumeric() || c == '_') => name.push(c),
                    _ if item_start && !name.is_empty() => {
                        found.insert(std::mem::take(&mut name));
                        item_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn no_module_imports_from_a_higher_layer_and_there_are_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        let refs = references(&text);
        graph
            .entry(module.clone())
            .or_default()
            .extend(refs.into_iter().filter(|r| *r != module));
    }
    let mut wrong = Vec::new();
    for (module, uses) in &graph {
        let own = layer_of(module).unwrap_or_else(|| {
            panic!("src/{module} is in no layer: add it to LAYERS and ARCHITECTURE.md")
        });
        for used in uses {
            match layer_of(used) {
                Some(l) if l < own => {}
                _ => wrong.push(format!("{module} (layer {own}) uses {used}")),
            }
        }
    }
    for (module, uses) in &graph {
        eprintln!(
            "{module:<10} → {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reference_scanner_sees_paths_and_groups_but_not_comments() {
    let text = "use crate::metrics::Metrics;\n// crate::app is mentioned here\nuse crate::{auth, secret::{Secret, resolve}};\nlet x = crate::units::de_size;\n";
    let found: Vec<String> = references(text).into_iter().collect();
    assert_eq!(found, ["auth", "metrics", "secret", "units"]);
}
