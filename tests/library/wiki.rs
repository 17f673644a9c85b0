//! `llm data wiki-extract` on small MediaWiki dumps written by the test: plain, bz2,
//! truncated and corrupt.

use crate::common::TempDir;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn page(title: &str, ns: u32, body: &str, redirect: bool) -> String {
    let redirect = if redirect { format!("<redirect title=\"{title} (x)\" />") } else { String::new() };
    // The body is XML-escaped in a dump: `<ref>` is `&lt;ref&gt;`.
    let body = body.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "  <page>\n    <title>{title}</title>\n    <ns>{ns}</ns>\n    <id>1</id>\n    {redirect}\n    \
         <revision>\n      <id>2</id>\n      <text bytes=\"{}\" xml:space=\"preserve\">{body}</text>\n    \
         </revision>\n  </page>\n",
        body.len()
    )
}

/// A dump of two articles, a redirect and a talk page.
fn dump() -> String {
    let mut xml = String::from(
        "<mediawiki xmlns=\"http://www.mediawiki.org/xml/export-0.10/\" version=\"0.10\" xml:lang=\"en\">\n  \
         <siteinfo><sitename>Wikipedia</sitename></siteinfo>\n",
    );
    xml += &page(
        "Alan Turing",
        0,
        "{{Infobox scientist\n| name = Alan Turing\n}}\n'''Alan Mathison Turing''' was an English \
         [[mathematician]] and [[computer science|computer scientist]].<ref>Hodges 1983</ref>\n\n\
         == Early life ==\nTuring was born in [[Maida Vale]], London.\n\n== References ==\n{{reflist}}\n\
         [[Category:1912 births]]",
        false,
    );
    xml += &page("Turing", 0, "#REDIRECT [[Alan Turing]]", true);
    xml += &page("Talk:Alan Turing", 1, "Is this article accurate?", false);
    xml += &page("Enigma machine", 0, "The '''Enigma machine''' is a [[cipher]] device.", false);
    xml += "</mediawiki>\n";
    xml
}

fn bz2(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn extract(dir: &TempDir, dump: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llm"))
        .args(["data", "wiki-extract", dump, "--out", "out.txt"])
        .current_dir(dir.path())
        .output()
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

const EXPECTED: &str =
    "Alan Turing\n\nAlan Mathison Turing was an English mathematician and computer scientist.\n\n\
                        Early life\nTuring was born in Maida Vale, London.\n\n\
                        Enigma machine\n\nThe Enigma machine is a cipher device.\n\n";

#[test]
fn articles_are_extracted_from_plain_and_bz2_dumps() {
    let dir = TempDir::new("wiki-ok");
    std::fs::write(dir.join("dump.xml"), dump()).unwrap();
    std::fs::write(dir.join("dump.xml.bz2"), bz2(dump().as_bytes())).unwrap();
    for file in ["dump.xml", "dump.xml.bz2"] {
        let out = extract(&dir, file);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("2 articles") && stdout.contains("1 redirects"), "{stdout}");
        assert_eq!(read(&dir.join("out.txt")), EXPECTED, "{file}");
    }
    // Only the dumps and the output: no temporary file left.
    assert_eq!(dir.entries(), ["dump.xml", "dump.xml.bz2", "out.txt"]);
}

#[test]
fn a_truncated_dump_keeps_the_articles_before_the_cut() {
    let dir = TempDir::new("wiki-truncated");
    let xml = dump();
    let cut = xml.find("<title>Enigma").unwrap() + 10; // in the middle of the last page
    std::fs::write(dir.join("cut.xml"), &xml[..cut]).unwrap();
    let out = extract(&dir, "cut.xml");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("truncated") && stderr.contains("kept") && stderr.contains("1 articles"),
        "{stderr}"
    );
    assert_eq!(read(&dir.join("out.txt")), EXPECTED[..EXPECTED.find("Enigma").unwrap()]);
}

#[test]
fn a_corrupt_bz2_stream_is_a_clear_error() {
    let dir = TempDir::new("wiki-corrupt");
    let mut compressed = bz2(dump().as_bytes());
    // Cut the compressed stream: the decoder cannot finish its block.
    compressed.truncate(compressed.len() * 2 / 3);
    std::fs::write(dir.join("bad.xml.bz2"), &compressed).unwrap();
    let out = extract(&dir, "bad.xml.bz2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.xml.bz2") && stderr.contains("kept"), "{stderr}");
    assert!(dir.join("out.txt").is_file());
}
