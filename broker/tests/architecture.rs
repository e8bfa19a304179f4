//! Architecture invariants of the broker crate, checked on its sources:
//!
//! - No import cycle between modules, at every level of the module tree:
//!   among the top-level modules (`group`, `ops`, `service`, …) and among
//!   the children of each module (`group::coordinator`, `group::host`, …).
//!   A module may use its own ancestors (`super::Item`, a parent's
//!   re-export); that is how a parent composes its children, not a cycle.
//! - Nothing imports a composition root: the crate roots (`lib.rs`,
//!   `main.rs`) and [`COMPOSITION_ROOTS`] may use anything, and because
//!   nothing uses them back they can never be part of a cycle.
//! - The sans-IO cores ([`PURE_FILES`]) mention no runtime, file, socket
//!   or clock, and use only other pure files of the crate.
//!
//! Modules are discovered by following `mod name;` from each crate root
//! (`lib.rs`, `main.rs`), so modules added later are checked without
//! editing this file; every `.rs` file under `src/` must be reached.
//! A reference is any `crate::`/`super::` path in code (comments and
//! string literals do not count), including `use crate::{a, b::c}` trees;
//! it points at the longest module prefix of the path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules that wire the others together and that nothing may
/// import (besides the crate roots themselves).
const COMPOSITION_ROOTS: &[&str] = &["shard", "server"];

/// Edges (module, its child, the sibling it uses) tolerated in a cycle
/// while another issue-12 branch removes them. Each entry must still
/// exist: a stale one fails the test, so it is deleted once the edge goes.
/// - `dispatch -> kafka`: `dispatch.rs` uses `kafka::budget::BudgetHold`
///   (the byte budget both edges share); h-kafka moves it to `fjord_net`.
const TOLERATED_EDGES: &[(&str, &str, &str)] = &[];

/// Files (relative to `src/`) holding sans-IO state machines and pure
/// codecs. Every entry must exist: when a file moves, move its entry.
const PURE_FILES: &[&str] = &[
    "group/coordinator.rs",
    "group/coordinator/tests.rs",
    "group/offsets_log.rs",
    "group/ops.rs",
    "partition/state.rs",
    "partition/epochs.rs",
    "partition/epochs/tests.rs",
    "partition/state/tests.rs",
    "partition/producer_state.rs",
    "partition/producer_state/tests.rs",
    "partition/replicas.rs",
    "metadata/image.rs",
    "metadata/shard_table.rs",
    "topic/mod.rs",
    "topic/name.rs",
    "topic/config.rs",
    "topic/assignments.rs",
    "batches.rs",
    "metadata/catalog.rs",
    "controller/wire.rs",
    "controller/records.rs",
    "controller/records/tests.rs",
    "controller/commands.rs",
    "controller/commands/tests.rs",
    "controller/fold.rs",
    "controller/fold/tests.rs",
    "controller/placement.rs",
    "controller/state.rs",
    "controller/state/tests.rs",
    "controller/import.rs",
    "engine/cluster.rs",
    "partition/follower.rs",
    "replication/mod.rs",
    "replication/wire.rs",
    "replication/wire/tests.rs",
    "replication/fetcher.rs",
    "replication/fetcher/tests.rs",
    "replication/testing.rs",
];

/// What a pure file must not mention.
const IMPURE: &[&str] = &[
    "glommio",
    "std::fs",
    "std::net",
    "Instant::now",
    "SystemTime::now",
];

type Module = Vec<String>;

fn show(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// One source file: its module and its code with comments removed and the
/// contents of string and char literals blanked (line numbers kept).
#[derive(Debug)]
struct Source {
    file: String,
    module: Module,
    code: String,
}

/// A use of `to` in `from`, with where it was seen.
#[derive(Debug, Clone)]
struct Reference {
    from: Module,
    to: Module,
    file: String,
    line: usize,
    path: String,
}

/// Removes comments and blanks literal contents, keeping newlines.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == b'r'
            && (i == 0 || !is_ident(b[i - 1]))
            && matches!(b.get(i + 1), Some(b'#') | Some(b'"'))
        {
            // A raw string r"…" or r#"…"#, or an identifier / raw identifier.
            let mut j = i + 1;
            while b.get(j) == Some(&b'#') {
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            out.extend_from_slice(&b[i..=j]);
            i = j + 1;
            while i < b.len() {
                if b[i] == b'"'
                    && b[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == b'#')
                        .count()
                        == hashes
                {
                    out.extend_from_slice(&b[i..i + 1 + hashes]);
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'"' {
            out.push(c);
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b'"');
            i += 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}', '"') or a lifetime.
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else {
                let len = std::str::from_utf8(&b[i + 1..])
                    .ok()
                    .or_else(|| text.get(i + 1..))
                    .and_then(|s| s.chars().next())
                    .map_or(1, char::len_utf8);
                (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
            };
            match end {
                Some(end) => {
                    out.push(b'\'');
                    out.extend(std::iter::repeat_n(b' ', end - i - 1));
                    out.push(b'\'');
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn ident_at(code: &[u8], at: usize) -> Option<&str> {
    let end = code[at..]
        .iter()
        .position(|&c| !is_ident(c))
        .map_or(code.len(), |p| at + p);
    (end > at).then(|| std::str::from_utf8(&code[at..end]).expect("ascii"))
}

fn skip_space(code: &[u8], mut at: usize) -> usize {
    while at < code.len() && code[at].is_ascii_whitespace() {
        at += 1;
    }
    at
}

/// Parses a path or use tree starting at `at` (just after `prefix::`);
/// pushes every full path it names.
fn use_tree(code: &[u8], at: usize, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut at = skip_space(code, at);
    if code.get(at) == Some(&b'{') {
        at += 1;
        loop {
            at = skip_space(code, at);
            match code.get(at) {
                Some(b'}') => return at + 1,
                Some(b',') => at += 1,
                None => return at,
                Some(_) => {
                    let depth = prefix.len();
                    let next = use_tree(code, at, prefix, out);
                    prefix.truncate(depth);
                    // Not a use tree after all (e.g. a struct literal).
                    if next == at {
                        return at;
                    }
                    at = next;
                }
            }
        }
    }
    if code.get(at) == Some(&b'*') {
        out.push(prefix.clone());
        return at + 1;
    }
    let Some(ident) = ident_at(code, at) else {
        out.push(prefix.clone());
        return at;
    };
    at += ident.len();
    if ident != "self" {
        prefix.push(ident.to_owned());
    }
    let after = skip_space(code, at);
    if code[after..].starts_with(b"::") {
        return use_tree(code, after + 2, prefix, out);
    }
    out.push(prefix.clone());
    at
}

/// The modules of the crate rooted at `root_file`, found by following
/// `mod name;` declarations.
fn crate_sources(src: &Path, root_file: &str, out: &mut Vec<Source>) {
    let mut queue = vec![(PathBuf::from(root_file), Module::new())];
    while let Some((file, module)) = queue.pop() {
        let text = std::fs::read_to_string(src.join(&file))
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let code = strip(&text);
        let stem = file.file_stem().expect("stem").to_str().expect("utf-8");
        let dir = file.parent().expect("parent").to_owned();
        let children_dir = if module.is_empty() || stem == "mod" {
            dir
        } else {
            dir.join(stem)
        };
        let bytes = code.as_bytes();
        let mut at = 0;
        while let Some(pos) = code[at..].find("mod ") {
            let start = at + pos;
            at = start + 4;
            if start > 0 && is_ident(bytes[start - 1]) {
                continue;
            }
            let name_at = skip_space(bytes, at);
            let Some(name) = ident_at(bytes, name_at) else {
                continue;
            };
            if bytes.get(skip_space(bytes, name_at + name.len())) != Some(&b';') {
                continue; // an inline module: part of this file
            }
            let flat = children_dir.join(format!("{name}.rs"));
            let nested = children_dir.join(name).join("mod.rs");
            let child = if src.join(&flat).exists() {
                flat
            } else {
                assert!(
                    src.join(&nested).exists(),
                    "{}: `mod {name};` has no file",
                    file.display()
                );
                nested
            };
            let mut child_module = module.clone();
            child_module.push(name.to_owned());
            queue.push((child, child_module));
        }
        out.push(Source {
            file: file.to_str().expect("utf-8").to_owned(),
            module,
            code,
        });
    }
}

/// Every `crate::`/`super::` reference of `source`, resolved to the
/// longest known module prefix.
fn references(source: &Source, modules: &BTreeSet<Module>) -> Vec<Reference> {
    let code = source.code.as_bytes();
    let mut found = Vec::new();
    for keyword in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(pos) = source.code[at..].find(keyword) {
            let start = at + pos;
            at = start + keyword.len();
            if start > 0 && (is_ident(code[start - 1]) || code[start - 1] == b':') {
                continue; // part of a longer path (`super::super::`, `a::crate`)
            }
            let mut base = Module::new();
            let mut tree_at = at;
            if keyword == "super::" {
                let mut ups = 1;
                while source.code[tree_at..].starts_with("super::") {
                    ups += 1;
                    tree_at += "super::".len();
                }
                if ups > source.module.len() {
                    continue; // `super` of an inline module in a crate root
                }
                base = source.module[..source.module.len() - ups].to_vec();
            } else if code[start.saturating_sub(1)] == b'$' {
                continue; // `$crate` in a macro: whatever crate expands it
            }
            let mut paths = Vec::new();
            let mut prefix = base;
            use_tree(code, tree_at, &mut prefix, &mut paths);
            let line = source.code[..start].matches('\n').count() + 1;
            for path in paths {
                let to = (0..=path.len())
                    .rev()
                    .map(|n| path[..n].to_vec())
                    .find(|m| modules.contains(m))
                    .expect("the crate root is a module");
                found.push(Reference {
                    from: source.module.clone(),
                    to,
                    file: source.file.clone(),
                    line,
                    path: path.join("::"),
                });
            }
        }
    }
    found
}

fn is_ancestor_or_self(ancestor: &[String], of: &[String]) -> bool {
    of.starts_with(ancestor)
}

/// The strongly connected components with more than one node.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Reachability closure is fine at this size (tens of nodes).
    let nodes: BTreeSet<&String> = edges
        .iter()
        .flat_map(|(from, to)| std::iter::once(from).chain(to))
        .collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            for next in edges.get(n).into_iter().flatten() {
                if seen.insert(next) {
                    stack.push(next);
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<&String>> =
        nodes.iter().map(|&n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut components = Vec::new();
    for &n in &nodes {
        if done.contains(n) || !reachable[n].contains(n) {
            continue;
        }
        let component: Vec<String> = nodes
            .iter()
            .filter(|&&m| reachable[n].contains(m) && reachable[m].contains(n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(component.iter().cloned());
        components.push(component);
    }
    components
}

/// A shortest cycle through the nodes of `component` (first node repeated
/// at the end).
fn shortest_cycle(edges: &BTreeMap<String, BTreeSet<String>>, component: &[String]) -> Vec<String> {
    let mut best: Option<Vec<String>> = None;
    for start in component {
        // Breadth-first from `start` back to itself, inside the component.
        let mut previous: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        while let Some(n) = queue.pop_front() {
            for next in edges.get(n).into_iter().flatten() {
                if !component.contains(next) {
                    continue;
                }
                if next == start {
                    closing = Some(n);
                    break;
                }
                if !previous.contains_key(next) {
                    previous.insert(next, n);
                    queue.push_back(next);
                }
            }
            if closing.is_some() {
                break;
            }
        }
        let Some(mut n) = closing else { continue };
        let mut path = vec![start.clone(), n.clone()];
        while n != start {
            n = previous[n];
            path.push(n.clone());
        }
        path.reverse();
        if best.as_ref().is_none_or(|b| path.len() < b.len()) {
            best = Some(path);
        }
    }
    best.expect("a strongly connected component has a cycle")
}

struct Crate {
    root: &'static str,
    sources: Vec<Source>,
    references: Vec<Reference>,
}

fn load(root: &'static str) -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    crate_sources(&src, root, &mut sources);
    let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
    let references = sources
        .iter()
        .flat_map(|s| references(s, &modules))
        .collect();
    Crate {
        root,
        sources,
        references,
    }
}

fn crates() -> Vec<Crate> {
    vec![load("lib.rs"), load("main.rs")]
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_is_a_module_of_a_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let on_disk: BTreeSet<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(&src)
                .expect("under src")
                .to_str()
                .expect("utf-8")
                .to_owned()
        })
        .collect();
    let reached: BTreeSet<String> = crates()
        .into_iter()
        .flat_map(|c| c.sources.into_iter().map(|s| s.file))
        .collect();
    assert!(reached.len() > 20, "found the sources: {reached:?}");
    let unreached: Vec<&String> = on_disk.difference(&reached).collect();
    assert!(
        unreached.is_empty(),
        "not reached by `mod` from lib.rs or main.rs (unchecked): {unreached:?}"
    );
}

#[test]
fn no_import_cycle_between_modules() {
    let mut failures = Vec::new();
    let mut tolerated_seen = BTreeSet::new();
    for krate in crates() {
        // For each module, the use graph among its children: a reference
        // from `a::b::x` to `a::c::y` is an edge b → c among `a`'s children.
        let mut levels: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        let mut witness: BTreeMap<(Module, String, String), &Reference> = BTreeMap::new();
        for r in &krate.references {
            if is_ancestor_or_self(&r.to, &r.from) || is_ancestor_or_self(&r.from, &r.to) {
                continue;
            }
            let common = r.from.iter().zip(&r.to).take_while(|(a, b)| a == b).count();
            let parent = r.from[..common].to_vec();
            let (a, b) = (r.from[common].clone(), r.to[common].clone());
            let key = (show(&parent), a.clone(), b.clone());
            if let Some(&edge) = TOLERATED_EDGES
                .iter()
                .find(|&&(p, x, y)| (p, x, y) == (key.0.as_str(), key.1.as_str(), key.2.as_str()))
            {
                tolerated_seen.insert(edge);
                continue;
            }
            witness
                .entry((parent.clone(), a.clone(), b.clone()))
                .or_insert(r);
            levels
                .entry(parent)
                .or_default()
                .entry(a)
                .or_default()
                .insert(b);
        }
        for (parent, edges) in &levels {
            for component in cycles(edges) {
                let mut lines = vec![format!(
                    "{}: import cycle among the children of `{}`: {}\n  \
                     (the modules {} depend on each other; every edge among them:)",
                    krate.root,
                    show(parent),
                    shortest_cycle(edges, &component).join(" -> "),
                    component.join(", ")
                )];
                for a in &component {
                    for b in edges[a].iter().filter(|b| component.contains(b)) {
                        let r = witness[&(parent.clone(), a.clone(), b.clone())];
                        lines.push(format!(
                            "    {a} -> {b}: src/{}:{} uses crate::{}",
                            r.file, r.line, r.path
                        ));
                    }
                }
                failures.push(lines.join("\n"));
            }
        }
    }
    for edge in TOLERATED_EDGES {
        if !tolerated_seen.contains(edge) {
            failures.push(format!(
                "TOLERATED_EDGES lists {edge:?}, which no longer exists: delete the entry"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}

#[test]
fn nothing_imports_a_composition_root() {
    let mut failures = Vec::new();
    for krate in crates() {
        for r in &krate.references {
            let root = if r.to.is_empty() {
                Some(Module::new())
            } else {
                COMPOSITION_ROOTS
                    .iter()
                    .map(|m| vec![(*m).to_owned()])
                    .find(|m| is_ancestor_or_self(m, &r.to))
            };
            let Some(root) = root else { continue };
            // A root may use its own children and the other roots.
            let from_a_root = COMPOSITION_ROOTS
                .iter()
                .any(|m| r.from.first().is_some_and(|first| first == m));
            if is_ancestor_or_self(&root, &r.from) || from_a_root {
                continue;
            }
            failures.push(format!(
                "{}: src/{}:{} ({}) uses crate::{} of the composition root `{}`",
                krate.root,
                r.file,
                r.line,
                show(&r.from),
                r.path,
                show(&root)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}

#[test]
fn sans_io_cores_stay_pure() {
    let krate = load("lib.rs");
    let pure: BTreeMap<&str, &Source> = PURE_FILES
        .iter()
        .map(|&file| {
            let source = krate.sources.iter().find(|s| s.file == file);
            (file, source.unwrap_or_else(|| panic!("PURE_FILES lists {file}, which is not a module of the crate: update the list")))
        })
        .collect();
    let pure_modules: BTreeSet<&Module> = pure.values().map(|s| &s.module).collect();
    let mut failures = Vec::new();
    for (file, source) in &pure {
        for (n, line) in source.code.lines().enumerate() {
            for word in IMPURE.iter().filter(|w| line.contains(*w)) {
                failures.push(format!("src/{file}:{}: mentions {word}", n + 1));
            }
        }
    }
    for r in &krate.references {
        if !pure_modules.contains(&r.from) || pure_modules.contains(&r.to) {
            continue;
        }
        // Ancestors are `mod.rs`-style parents: declarations and re-exports.
        if is_ancestor_or_self(&r.to, &r.from) {
            continue;
        }
        failures.push(format!(
            "src/{}:{}: uses crate::{}, which is not in PURE_FILES",
            r.file, r.line, r.path
        ));
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}

#[test]
fn the_checker_sees_references_cycles_and_impurity() {
    let code = strip(
        "use crate::{a::{b, c::D}, e};\n// crate::commented\nlet s = \"crate::quoted\";\nlet c = '\"'; x = crate::f::g();\nuse super::super::h;\nlet t = std::time::Instant::now();\n",
    );
    let source = Source {
        file: "x/y/z.rs".to_owned(),
        module: vec!["x".into(), "y".into(), "z".into()],
        code,
    };
    let modules: BTreeSet<Module> = [
        vec![],
        vec!["a"],
        vec!["a", "c"],
        vec!["f"],
        vec!["x"],
        vec!["x", "h"],
    ]
    .into_iter()
    .map(|m| m.into_iter().map(String::from).collect())
    .collect();
    let found: Vec<(String, String, usize)> = references(&source, &modules)
        .into_iter()
        .map(|r| (r.path, show(&r.to), r.line))
        .collect();
    let expected = [
        ("a::b", "a", 1),
        ("a::c::D", "a::c", 1),
        ("e", "crate", 1),
        ("f::g", "f", 4),
        ("x::h", "x::h", 5),
    ];
    let expected: Vec<(String, String, usize)> = expected
        .iter()
        .map(|(p, m, l)| ((*p).to_owned(), (*m).to_owned(), *l))
        .collect();
    assert_eq!(found, expected);
    assert!(source.code.contains("Instant::now"));

    let edges = |pairs: &[(&str, &str)]| {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            map.entry((*a).to_owned())
                .or_default()
                .insert((*b).to_owned());
        }
        map
    };
    let graph = edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("b", "a")]);
    let abc = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    assert_eq!(cycles(&graph), vec![abc.clone()]);
    assert_eq!(shortest_cycle(&graph, &abc), ["a", "b", "a"]);
    assert!(cycles(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
}
