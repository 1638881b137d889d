//! `unsafe` is denied in the whole workspace; one module (the INT8 kernel's SIMD intrinsics)
//! allows it. A new `allow` anywhere else must be a deliberate change to this list.

use crate::repo;
use std::path::Path;

const ALLOWED: &[&str] = &["crates/moltbot-understand/src/encoder/int8.rs"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_int8_kernel_allows_unsafe_code() {
    let root = repo();
    let manifest = crate::read("Cargo.toml");
    assert!(
        manifest.contains("unsafe_code = \"deny\"")
            || manifest.contains("unsafe_code = \"forbid\""),
        "the workspace lints must deny unsafe code"
    );
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    assert!(files.len() > 100, "found only {} Rust files", files.len());
    let marker = ["allow(", "unsafe_code)"].concat();
    let mut allowing: Vec<String> = files
        .iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|s| s.contains(&marker)))
        .map(|p| p.strip_prefix(&root).unwrap_or(p).display().to_string())
        .collect();
    allowing.sort();
    assert_eq!(allowing, ALLOWED);
}
