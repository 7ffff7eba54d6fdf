//! The direction of imports, held by a test: the store is the floor (it uses the event model
//! and the leaf types, never a layer that uses the store), the job steps and the job
//! functions see no SQL driver, and no function crate depends on another.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn shared_src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The source without comments (a doc comment may name any module).
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The top-level modules a file names with `crate::` (also inside `use crate::{a, b::c}`).
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inside = &group[..group.find('}').unwrap_or(group.len())];
            for item in inside.split(',') {
                modules.insert(identifier(item.trim()));
            }
        } else {
            modules.insert(identifier(rest));
        }
    }
    modules.retain(|module| !module.is_empty());
    modules
}

fn identifier(text: &str) -> String {
    text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// Every module of the shared crate and the modules it names.
fn module_imports() -> Vec<(String, BTreeSet<String>)> {
    let src = shared_src();
    let mut modules = Vec::new();
    for entry in fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|stem| stem.to_str()).unwrap_or_default().to_string();
        if name == "lib" {
            continue;
        }
        let files = if path.is_dir() { rust_files(&path) } else { vec![path] };
        let imports = files.iter().flat_map(|file| crate_modules(&code(file))).collect();
        modules.push((name, imports));
    }
    modules
}

#[test]
fn the_store_imports_no_layer_above_it() {
    let modules = module_imports();
    // Above the store: keys, jobs and http (the README's Layers), and every module that uses the
    // store, directly or through another.
    let mut above: BTreeSet<String> = ["keys", "jobs", "http"].map(String::from).into();
    loop {
        let before = above.len();
        for (name, imports) in &modules {
            if name != "store" && (imports.contains("store") || imports.iter().any(|import| above.contains(import))) {
                above.insert(name.clone());
            }
        }
        if above.len() == before {
            break;
        }
    }
    assert!(above.contains("keys") && above.contains("jobs"), "the layers that use the store: {above:?}");
    let mut wrong = Vec::new();
    for file in rust_files(&shared_src().join("store")) {
        for module in crate_modules(&code(&file)) {
            if above.contains(&module) {
                wrong.push(format!("{}: crate::{module}", file.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "the store imports a layer above it:\n{}", wrong.join("\n"));
}

#[test]
fn only_the_store_sees_the_sql_driver() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let store = shared_src().join("store");
    let mut files: Vec<PathBuf> =
        rust_files(&shared_src()).into_iter().filter(|file| !file.starts_with(&store)).collect();
    files.extend(rust_files(&root.join("infra/src")));
    for entry in fs::read_dir(root.join("functions")).expect("functions/") {
        let function = entry.expect("entry").path();
        files.extend(rust_files(&function.join("src")));
        let manifest = fs::read_to_string(function.join("Cargo.toml")).expect("Cargo.toml");
        assert!(!manifest.contains("mysql_async"), "{} depends on mysql_async", function.display());
    }
    let wrong: Vec<String> =
        files.iter().filter(|file| code(file).contains("mysql_async")).map(|file| file.display().to_string()).collect();
    assert!(wrong.is_empty(), "mysql_async outside the store: {wrong:?}");
}

#[test]
fn no_function_crate_depends_on_another() {
    let functions = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../functions");
    let mut checked = 0;
    for entry in fs::read_dir(&functions).expect("functions/") {
        let manifest_path = entry.expect("entry").path().join("Cargo.toml");
        let manifest = fs::read_to_string(&manifest_path).expect("Cargo.toml");
        let mut section = String::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            if section.ends_with("dependencies]") {
                let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
                assert!(
                    !name.starts_with("evtrack-") && !line.contains("path = \"../"),
                    "{}: {section} {line}",
                    manifest_path.display()
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 5, "five function crates");
}
