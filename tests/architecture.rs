//! The layering of `src/` (ARCHITECTURE.md, "What may import what"), checked on the source: a
//! module refers only to modules of lower layers (`crate::…` paths and `use super::…` never
//! leave a module upward). Comments are not code and are skipped.
//! Also: the fuzz crate's manifest stays in step with the bridge's, so its build reuses the suite's.

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

/// The providers: the files of `src/providers/` that export a `PROVIDER`, by file name.
fn provider_files(src: &Path) -> Vec<(String, PathBuf)> {
    let dir = src.join("providers");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read src/providers") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("pub static PROVIDER: Provider") {
            let name = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            found.push((name, path));
        }
    }
    found.sort();
    found
}

/// `text` without comments and without `#[cfg(test)]` items (test modules, test helpers):
/// what the crate compiles into the bridge. Strings are kept (a name in a string is a name).
fn shipped_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            _ => out.push(c),
        }
    }
    // Drop every `#[cfg(test)]` item: up to the `;` or the brace that closes its first block.
    let mut code = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        code.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, c) in item.char_indices() {
            match c {
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    code.push_str(rest);
    code
}

/// Files of `src/` compiled for tests only: `#[cfg(test)] mod name;` declares `name.rs`.
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read");
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            if line != "#[cfg(test)]" {
                continue;
            }
            let Some(next) = lines.next() else { break };
            if let Some(name) = next
                .trim_start_matches("pub ")
                .strip_prefix("mod ")
                .and_then(|n| n.strip_suffix(';'))
            {
                let dir = if file.ends_with("mod.rs") || file.ends_with("lib.rs") {
                    file.parent().expect("dir").to_path_buf()
                } else {
                    file.with_extension("")
                };
                out.insert(dir.join(format!("{name}.rs")));
            }
        }
    }
    out
}

/// Where `line` names provider `name`: a brand name anywhere (`generic` is also an English word,
/// so for it only a path into its module, `generic::`, counts).
fn names_provider(line: &str, name: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let path = format!("{name}::");
    let as_path = lower.match_indices(&path).any(|(at, _)| {
        !lower[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    as_path || (name != "generic" && lower.contains(name))
}

#[test]
fn code_shared_by_all_providers_names_none_of_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let providers = provider_files(&src);
    assert!(providers.len() >= 6, "providers found: {providers:?}");
    let own: BTreeSet<&PathBuf> = providers.iter().map(|(_, path)| path).collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let tests_only = test_only_files(&files);
    let mut found = Vec::new();
    for file in &files {
        if own.contains(file) || tests_only.contains(file) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        for (i, line) in shipped_code(&text).lines().enumerate() {
            // The registry's one line per provider is the one place that names them all.
            if line.trim_start().starts_with("registry!(") {
                continue;
            }
            for (name, _) in &providers {
                if names_provider(line, name) {
                    let rel = file.strip_prefix(&src).unwrap_or(file).display();
                    found.push(format!("src/{rel}:{}: {name}: {}", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "shared code names a provider (move it into the provider's module, ARCHITECTURE.md \
         \"Adding a provider\"):\n{}",
        found.join("\n")
    );
}

#[test]
fn shipped_code_drops_comments_and_test_items_but_keeps_strings() {
    let text = "let a = \"x // y\"; // gone\n/* gone */ let b = 1;\n#[cfg(test)]\nmod t { fn f() { g() } }\nlet c = 2;\n#[cfg(test)]\nuse gone;\n";
    let code = shipped_code(text);
    assert!(code.contains("\"x // y\""), "{code}");
    assert!(
        code.contains("let b = 1") && code.contains("let c = 2"),
        "{code}"
    );
    assert!(!code.contains("gone") && !code.contains("fn f"), "{code}");
    assert!(names_provider(
        "use crate::providers::generic::Cfg;",
        "generic"
    ));
    assert!(names_provider("if p == \"Isendu\" {", "isendu"));
    assert!(!names_provider(
        "a generic endpoint; my_generic::x",
        "generic"
    ));
}

/// The fuzz crate (a workspace of its own) lists the bridge's dev-dependencies as its own and
/// copies its dev profile, so that its smoke test, built right after the bridge's tests into
/// the same target directory, resolves every shared dependency with the same features and
/// flags and reuses it (fuzz/Cargo.toml). A dev-dependency or profile setting changed in one
/// manifest and not the other costs the suite minutes, silently.
#[test]
fn the_fuzz_crate_shares_the_bridges_dev_dependencies_and_dev_profile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = |path: &str| -> toml::Table {
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        toml::from_str(&text).unwrap()
    };
    let (bridge, fuzz) = (manifest("Cargo.toml"), manifest("fuzz/Cargo.toml"));
    let dev_profile = |m: &toml::Table| m.get("profile").and_then(|p| p.get("dev")).cloned();
    assert!(bridge.get("dev-dependencies").is_some());
    assert_eq!(
        bridge.get("dev-dependencies"),
        fuzz.get("dev-dependencies"),
        "Cargo.toml and fuzz/Cargo.toml must list the same [dev-dependencies]"
    );
    assert!(dev_profile(&bridge).is_some());
    assert_eq!(
        dev_profile(&bridge),
        dev_profile(&fuzz),
        "Cargo.toml and fuzz/Cargo.toml must have the same [profile.dev]"
    );
}
