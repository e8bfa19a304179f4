//! Architecture invariant: only the driver module imports glommio; the
//! log core, indexes, cache and recovery scan stay runtime-free.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
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
fn only_the_driver_imports_glommio() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "found the sources");
    let mut importers = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        if text.contains("glommio::") {
            importers.push(file.strip_prefix(&src).expect("under src").to_owned());
        }
    }
    assert_eq!(importers, vec![Path::new("driver.rs").to_owned()]);
}
