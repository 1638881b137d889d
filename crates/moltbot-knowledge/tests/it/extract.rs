//! Extraction from txt, md, html and pdf; folder walking; errors that name the file.

use std::path::Path;

use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Document, Object, Stream};
use moltbot_knowledge::{collect_files, extract_file, html_to_text};

/// Writes a one-page PDF with the given lines, using lopdf (no fixture file needed).
pub fn write_pdf(path: &Path, lines: &[&str]) {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut ops = vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F1".into(), 12.into()]),
        Operation::new("Td", vec![72.into(), 720.into()]),
        Operation::new("TL", vec![16.into()]),
    ];
    for line in lines {
        ops.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
        ops.push(Operation::new("T*", vec![]));
    }
    ops.push(Operation::new("ET", vec![]));
    let content = Content { operations: ops };
    let content_id = doc.add_object(Stream::new(
        dictionary! {},
        content.encode().expect("encode content"),
    ));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "Contents" => content_id,
    });
    let pages = dictionary! {
        "Type" => "Pages",
        "Kids" => vec![page_id.into()],
        "Count" => 1,
        "Resources" => resources_id,
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
    };
    doc.objects.insert(pages_id, Object::Dictionary(pages));
    let catalog_id = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog_id);
    doc.save(path).expect("save pdf");
}

#[test]
fn html_drops_scripts_and_keeps_headings() {
    let html = r#"<html><head><title>T</title><style>body{color:red}</style></head>
        <body><script>var secret = 1;</script><h1>Main  title</h1><p>First <b>bold</b> para.</p>
        <ul><li>one</li><li>two</li></ul><h2>Sub</h2><div>Tail text</div><noscript>x</noscript></body></html>"#;
    let text = html_to_text(html);
    assert!(
        !text.contains("secret") && !text.contains("color"),
        "{text}"
    );
    assert!(text.contains("# Main title\n"), "{text}");
    assert!(text.contains("## Sub\n"), "{text}");
    assert!(text.contains("First bold para."), "{text}");
    assert!(
        text.contains("- one\n") && text.contains("- two\n"),
        "{text}"
    );
    assert!(text.contains("Tail text"), "{text}");
}

#[test]
fn pdf_text_is_extracted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("manual.pdf");
    write_pdf(
        &path,
        &["Moltbot manual", "The backup runs nightly at 02:00."],
    );
    let (_, text) = extract_file(&path).expect("extract");
    assert!(text.contains("Moltbot manual"), "{text:?}");
    assert!(text.contains("backup runs nightly"), "{text:?}");
}

#[test]
fn broken_and_unsupported_files_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdf = dir.path().join("broken.pdf");
    std::fs::write(&pdf, b"%PDF-1.4 this is not really a pdf").expect("write");
    let e = extract_file(&pdf).expect_err("broken pdf");
    assert_eq!(e.kind(), "extract_pdf");
    assert!(e.to_string().contains("broken.pdf"), "{e}");
    let exe = dir.path().join("tool.exe");
    std::fs::write(&exe, b"MZ").expect("write");
    let e = extract_file(&exe).expect_err("unsupported");
    assert_eq!(e.kind(), "extract_unsupported");
    assert!(e.to_string().contains("tool.exe"), "{e}");
    let e = collect_files(&dir.path().join("nope")).expect_err("missing");
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn folders_are_walked_recursively_skipping_hidden_and_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
    std::fs::create_dir_all(root.join(".git")).expect("mkdir");
    for f in [
        "x.txt",
        "a/y.md",
        "a/b/z.html",
        ".git/config.txt",
        "a/image.png",
    ] {
        std::fs::write(root.join(f), "hello").expect("write");
    }
    let files = collect_files(root).expect("collect");
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, vec!["a/b/z.html", "a/y.md", "x.txt"]);
}
