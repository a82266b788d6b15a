//! The layering rules of `docs/ARCHITECTURE.md`, checked on the source
//! (a tidy test in the manner of rust-analyzer's): each layer imports only
//! the layers below it, only `mount/fuse.rs` imports fuser, `seal/` does no
//! I/O and reads no clock, `repo/` never reads key bytes, and every module
//! opens with a `//!` doc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layers from the bottom up; a module may import its own layer, lower
/// layers, and the shared root modules (rank 0). `repo` and `custody` share
/// a floor and must not import each other.
const LAYERS: &[(&str, u32)] = &[
    ("seal", 1),
    ("repo", 2),
    ("custody", 2),
    ("engine", 3),
    ("history", 4),
    ("replication", 5),
    ("mount", 6),
    ("cli", 7),
];

/// Shared modules at the root: they import nothing layered.
const ROOT: &[&str] = &[
    "cache", "config", "error", "exit", "fsutil", "hex", "sys", "time", "Error", "Result",
];

fn rank(module: &str) -> Option<u32> {
    if ROOT.contains(&module) {
        return Some(0);
    }
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments (doc links are not imports) and without
/// string literals' contents (messages may mention module names).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        for c in line.chars() {
            if !in_str && c == '/' && prev == '/' {
                out.pop();
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
                out.push(c);
            } else {
                out.push(if in_str { ' ' } else { c });
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The top-level `crate::` modules a source file names.
fn imports(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `sovseal_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

/// The layer of a file under src/: its first folder, or its stem at the root.
fn layer_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every violation of the layering rules in the tree at `src`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(src).unwrap();
        if rel.starts_with("bin") || rel == Path::new("lib.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let code = code_of(&text);
        let me = layer_of(rel);
        let Some(my_rank) = rank(&me) else {
            bad.push(format!("{}: module {me} is in no layer", rel.display()));
            continue;
        };
        for m in imports(&code) {
            if m == me {
                continue;
            }
            match rank(&m) {
                None => bad.push(format!(
                    "{}: imports unknown module crate::{m}",
                    rel.display()
                )),
                Some(r) if r >= my_rank && !(r == 0 && my_rank == 0) => bad.push(format!(
                    "{}: layer {me} imports crate::{m}, which is not below it",
                    rel.display()
                )),
                _ => {}
            }
        }
        let display = rel.display().to_string();
        if display != "mount/fuse.rs" && (code.contains("fuser::") || code.contains("use fuser")) {
            bad.push(format!("{display}: imports fuser (only mount/fuse.rs may)"));
        }
        if me == "seal" {
            for io in [
                "std::fs",
                "File::",
                "OpenOptions",
                "std::net",
                "std::process",
                "rusqlite",
                "object_store",
                "keyring",
                "SystemTime",
                "Instant::now",
                "time::now",
            ] {
                if code.contains(io) {
                    bad.push(format!(
                        "{display}: seal/ does no I/O and reads no clock, but uses {io}"
                    ));
                }
            }
        }
        if me == "repo" {
            for key in [".expose(", ".expose_version(", "custody"] {
                if code.contains(key) {
                    bad.push(format!(
                        "{display}: repo/ never reads key bytes, but uses {key}"
                    ));
                }
            }
        }
        if !text.trim_start().starts_with("//!") {
            bad.push(format!("{display}: no //! module doc at the top"));
        }
    }
    bad
}

#[test]
fn layers_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

/// The checker itself catches each kind of violation (a planted upward
/// import, a fuser import outside the adapter, I/O in seal/, a missing doc).
#[test]
fn the_checker_catches_planted_violations() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |rel: &str, text: &str| {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "engine/mod.rs",
        "//! e\nuse crate::history::verify;\nuse crate::repo::Repo;\n",
    );
    write(
        "repo/mod.rs",
        "//! r\n// crate::cli in a comment is fine\nlet s = \"crate::mount\";\n",
    );
    write("mount/fs/mod.rs", "//! f\nuse fuser::Filesystem;\n");
    write("mount/fuse.rs", "//! a\nuse fuser::Filesystem;\n");
    write("seal/aead.rs", "//! s\nfn f() { std::fs::read(\"x\"); }\n");
    write("config.rs", "//! c\nuse crate::{fsutil, repo};\n");
    write("history/verify.rs", "use crate::engine::Engine;\n");
    let bad = violations(src);
    let has = |needle: &str| bad.iter().any(|b| b.contains(needle));
    assert!(
        has("engine/mod.rs: layer engine imports crate::history"),
        "{bad:?}"
    );
    assert!(!has("engine imports crate::repo"), "{bad:?}");
    assert!(
        !has("repo/mod.rs"),
        "comments and strings are not imports: {bad:?}"
    );
    assert!(has("mount/fs/mod.rs: imports fuser"), "{bad:?}");
    assert!(!has("mount/fuse.rs:"), "{bad:?}");
    assert!(has("seal/aead.rs: seal/ does no I/O"), "{bad:?}");
    assert!(
        has("config.rs: layer config imports crate::repo"),
        "{bad:?}"
    );
    assert!(!has("crate::fsutil"), "{bad:?}");
    assert!(has("history/verify.rs: no //! module doc"), "{bad:?}");
    assert_eq!(bad.len(), 5, "{bad:?}");
}

#[test]
fn every_layer_is_a_folder_in_lib_rs() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: BTreeMap<String, ()> = lib
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .or_else(|| l.trim().strip_prefix("mod "))
        })
        .map(|m| (m.trim_end_matches(';').to_string(), ()))
        .collect();
    for (layer, _) in LAYERS {
        assert!(
            declared.contains_key(*layer),
            "lib.rs does not declare {layer}"
        );
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src")
                .join(layer)
                .is_dir(),
            "layer {layer} is not a folder"
        );
    }
    for m in declared.keys() {
        assert!(
            rank(m).is_some(),
            "lib.rs declares {m}, which is in no layer"
        );
    }
}
