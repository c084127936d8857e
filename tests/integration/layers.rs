//! The README's module map is the rule of `host/src`: every top-level
//! module has a layer, and a module uses (`crate::...`) only modules of the
//! layers below its own, never one beside it or above it. A new module
//! needs a line in the map; a new upward import fails here, naming the file
//! and line.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The module map: module -> layer (1 is the top), from the README's rows
/// `| 1 | `cli` | what it owns |` under `### Module map`.
fn module_map(readme: &str) -> BTreeMap<String, u32> {
    let section = readme
        .split("\n### Module map\n")
        .nth(1)
        .expect("the README has a `### Module map` section");
    let section = section.split("\n#").next().unwrap();
    let mut map = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Ok(layer), Some(module)) = (
            cells[1].parse::<u32>(),
            cells[2].strip_prefix('`').and_then(|m| m.strip_suffix('`')),
        ) else {
            continue;
        };
        assert!(
            map.insert(module.to_owned(), layer).is_none(),
            "{module} is in the module map twice"
        );
    }
    map
}

/// The top-level modules `host/src/lib.rs` declares.
fn declared_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// `source` without comments (line comments, doc comments included),
/// keeping the line structure.
fn without_comments(source: &str) -> String {
    source
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module `source` names through `crate::`, with its line:
/// `crate::a::...`, and each path of `crate::{a::..., b}`.
fn crate_uses(source: &str) -> Vec<(usize, String)> {
    let code = without_comments(source);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `my_crate::`
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first segment of each path at the group's own depth.
            let mut depth = 1;
            let mut start_of_path = true;
            let mut ident = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start_of_path = true,
                    c if (c.is_alphanumeric() || c == '_') && start_of_path && depth == 1 => {
                        ident.push(c)
                    }
                    _ if !ident.is_empty() => {
                        found.push((line_of(at), std::mem::take(&mut ident)));
                        start_of_path = false;
                    }
                    _ => {}
                }
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push((line_of(at), ident));
        }
    }
    found.into_iter().filter(|(_, m)| m != "self").collect()
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

#[test]
fn modules_use_only_the_layers_below_their_own() {
    let root = workspace();
    let map = module_map(&fs::read_to_string(root.join("README.md")).unwrap());
    let src = root.join("host/src");
    let declared = declared_modules(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut sorted = declared.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        map.keys().cloned().collect::<Vec<_>>(),
        "the README's module map lists exactly the modules of host/src/lib.rs"
    );

    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_str().unwrap().trim_end_matches(".rs");
        let Some(&layer) = map.get(module) else {
            continue; // lib.rs, main.rs: the crate root and the binary
        };
        for (line, used) in crate_uses(&fs::read_to_string(file).unwrap()) {
            checked += 1;
            if used == module {
                continue;
            }
            match map.get(&used) {
                Some(&below) if below > layer => {}
                Some(&other) => wrong.push(format!(
                    "host/src/{}:{line}: `{module}` (layer {layer}) uses `{used}` (layer {other})",
                    relative.display()
                )),
                None => wrong.push(format!(
                    "host/src/{}:{line}: `{module}` uses `crate::{used}`, which is not a module",
                    relative.display()
                )),
            }
        }
    }
    assert!(checked > 100, "only {checked} uses of crate:: found");
    assert!(
        wrong.is_empty(),
        "imports against the module map:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn crate_uses_reads_paths_and_groups() {
    let source = "use crate::batch::{Batch, Reason};\n\
                  // crate::cli in a comment\n\
                  use crate::{\n    spec::{self, Limits},\n    window,\n};\n\
                  fn f() { crate::pipeline::now_ms(); let _ = my_crate::x; }\n";
    assert_eq!(
        crate_uses(source),
        [
            (1, "batch".to_owned()),
            (3, "spec".to_owned()),
            (3, "window".to_owned()),
            (7, "pipeline".to_owned()),
        ]
    );
}
