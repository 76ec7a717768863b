//! The shape of the code, checked: inside each crate, the modules' imports
//! (`use crate::…`, `super::…`, paths through a child module) form no circle,
//! so every module can be read after the ones it depends on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The crates' source roots, from the workspace root.
const CRATES: [&str; 8] =
    ["proto/src", "imageservice/src", "runtime/src", "shim/src", "gantryd/src", "cli/src", "bench/src", "tests/src"];

/// This workspace, or another checkout named by `GANTRY_SOURCE_ROOT`.
fn workspace() -> PathBuf {
    match std::env::var_os("GANTRY_SOURCE_ROOT") {
        Some(root) => PathBuf::from(root),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf(),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` are module `a::b`; `lib.rs`/`main.rs` the root (empty).
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).expect("file below its crate root").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().to_string()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// Collects the module paths a file names, resolved to absolute paths.
struct Refs<'a> {
    /// The module the code being visited is in (the file's, plus inline `mod`s).
    here: Vec<String>,
    modules: &'a BTreeSet<Vec<String>>,
    found: Vec<Vec<String>>,
}

impl Refs<'_> {
    fn resolve(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else { return };
        let mut base = match first.as_str() {
            "crate" => vec![],
            "self" => self.here.clone(),
            "super" => {
                let mut b = self.here.clone();
                b.pop();
                b
            }
            name => {
                // A path through a child module declared here (`mod x;` then `x::f`).
                let mut child = self.here.clone();
                child.push(name.to_string());
                if !self.modules.contains(&child) {
                    return;
                }
                self.found.push(child);
                return;
            }
        };
        for s in &segments[1..] {
            if s == "super" {
                base.pop();
            } else {
                base.push(s.clone());
            }
        }
        self.found.push(base);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.resolve(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.resolve(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.resolve(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut vec![], &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.resolve(&segments);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if item.content.is_some() {
            self.here.push(item.ident.to_string());
            syn::visit::visit_item_mod(self, item);
            self.here.pop();
        }
    }
}

/// The longest known module that `path` starts with.
fn owning_module(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Vec<String> {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p)).unwrap_or_default()
}

/// Module → the modules it refers to, for one crate.
fn import_graph(root: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = vec![];
    rust_files(root, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(root, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let here = module_of(root, file);
        let text = std::fs::read_to_string(file).expect("readable source");
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut refs = Refs { here: here.clone(), modules: &modules, found: vec![] };
        refs.visit_file(&ast);
        let targets: BTreeSet<Vec<String>> = refs
            .found
            .iter()
            .map(|p| owning_module(&modules, p))
            // A module's own items, and a parent's `mod child;` line, are not imports.
            .filter(|t| t != &here)
            .collect();
        graph.insert(here, targets);
    }
    graph
}

/// The import circles: strongly connected components of more than one module.
fn circles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    let reaches = |from: &Vec<String>| -> BTreeSet<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> = graph.keys().map(|m| (m, reaches(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = vec![];
    for m in graph.keys() {
        if done.contains(m) || !reach[m].contains(m) {
            continue;
        }
        let circle: Vec<String> = graph
            .keys()
            .filter(|o| reach[m].contains(*o) && reach[*o].contains(m))
            .inspect(|o| {
                done.insert((*o).clone());
            })
            .map(|o| if o.is_empty() { "crate".to_string() } else { o.join("::") })
            .collect();
        out.push(circle);
    }
    out
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut failures = vec![];
    for krate in CRATES {
        for circle in circles(&import_graph(&workspace().join(krate))) {
            failures.push(format!("{krate}: {}", circle.join(" <-> ")));
        }
    }
    assert!(failures.is_empty(), "modules that import each other in a circle:\n{}", failures.join("\n"));
}

#[test]
fn the_checker_sees_a_circle() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("lib.rs"), "mod a;\nmod b;\n").expect("write");
    std::fs::write(dir.path().join("a.rs"), "use crate::b::B;\npub struct A;\n").expect("write");
    std::fs::write(dir.path().join("b.rs"), "pub struct B(super::a::A);\n").expect("write");
    assert_eq!(circles(&import_graph(dir.path())), vec![vec!["a".to_string(), "b".to_string()]]);
    std::fs::write(dir.path().join("b.rs"), "pub struct B;\n").expect("write");
    assert!(circles(&import_graph(dir.path())).is_empty());
}
