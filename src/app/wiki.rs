//! Plain text from a Wikipedia dump: one of the course's seed projects trains on English
//! Wikipedia, which comes as a MediaWiki XML dump (`enwiki-latest-pages-articles.xml.bz2`,
//! tens of gigabytes unpacked).
//!
//! [`extract_file`] streams the dump: the bz2 stream is decompressed as it is read, the XML
//! is parsed event by event with `quick-xml`, and only one page is held in memory at a time,
//! so memory stays constant whatever the dump's size. Each article (namespace 0, not a
//! redirect) is written as its title, a blank line, and its text reduced to prose by
//! [`wiki_to_text`]:
//!
//! ```text
//! '''Alan Turing''' was an English [[mathematician]]{{sfn|Hodges|1983}}.<ref>...</ref>
//!     becomes
//! Alan Turing was an English mathematician.
//! ```
//!
//! The reduction is a readable approximation, not a MediaWiki renderer: templates
//! (`{{...}}`, infoboxes included), references, tables, comments, files and categories are
//! dropped; links keep their visible text; bold, italics and HTML tags go; headings stay as
//! lines of their own; the "References", "External links", "See also" sections go.

use crate::{Error, Result};
use quick_xml::events::Event;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WikiStats {
    /// Articles written.
    pub articles: usize,
    /// Redirect pages skipped.
    pub redirects: usize,
    /// Pages of other namespaces (talk, user, templates, files, ...) skipped.
    pub other_pages: usize,
    /// Bytes of text written.
    pub bytes: u64,
}

impl std::fmt::Display for WikiStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} articles ({} bytes of text); skipped {} redirects and {} pages of other namespaces",
            self.articles, self.bytes, self.redirects, self.other_pages
        )
    }
}

/// Extract the articles of the dump at `dump` (`.xml`, or bz2-compressed: recognised by its
/// `BZh` magic bytes, whatever its name) into the text file `out`.
///
/// A dump that is truncated or corrupt is an error ([`Error::Dump`]) saying where it broke;
/// the articles extracted before that point are kept in `out`, and the message says how
/// many. `on_article` sees the running counts after each article (for a progress display).
pub fn extract_file(dump: &Path, out: &Path, on_article: impl FnMut(&WikiStats)) -> Result<WikiStats> {
    let mut file = std::fs::File::open(dump).map_err(|e| Error::io(dump, e))?;
    let mut magic = [0u8; 3];
    let n = read_up_to(&mut file, &mut magic).map_err(|e| Error::io(dump, e))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let raw = head.chain(file);
    let input: Box<dyn Read> = if &magic[..n] == b"BZh" {
        // Wikipedia's "multistream" dumps are many bz2 streams end to end.
        Box::new(bzip2::read::MultiBzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let tmp = crate::io::temp_path_for(out);
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut writer = BufWriter::new(file);
    let result = extract(BufReader::with_capacity(1 << 16, input), &mut writer, on_article);
    // Keep what was extracted, also after an error: flush, sync, and move into place.
    let saved = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, out));
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(out, e));
    }
    result.map_err(|(stats, reason)| Error::Dump {
        path: dump.to_owned(),
        reason: format!("{reason}; kept the text extracted before it in {}: {stats}", out.display()),
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Which element's text is being collected.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    None,
    Title,
    Ns,
    Text,
}

/// The page being read.
#[derive(Default)]
struct Page {
    title: String,
    ns: String,
    redirect: bool,
    text: String,
}

/// Stream the articles of the XML dump `input` into `out` (see [`extract_file`]). On error,
/// returns the counts so far and what went wrong; every article counted was written whole.
pub fn extract(
    input: impl BufRead,
    out: &mut impl Write,
    mut on_article: impl FnMut(&WikiStats),
) -> std::result::Result<WikiStats, (WikiStats, String)> {
    let mut reader = quick_xml::Reader::from_reader(input);
    let mut stats = WikiStats::default();
    let mut buf = Vec::new();
    let mut page: Option<Page> = None;
    let mut field = Field::None;
    let mut depth = 0usize; // open elements: non-zero at the end means a truncated dump
    let mut seen_root = false;
    loop {
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(e) => {
                let at = reader.buffer_position();
                return Err((stats, format!("the dump is corrupt near byte {at} of the XML: {e}")));
            }
        };
        match event {
            Event::Start(e) => {
                depth += 1;
                seen_root = true;
                match e.local_name().as_ref() {
                    "page" => page = Some(Page::default()),
                    "title" => field = Field::Title,
                    "ns" => field = Field::Ns,
                    "text" => {
                        if let Some(p) = page.as_mut() {
                            p.text.clear(); // the last revision's text wins
                        }
                        field = Field::Text
                    }
                    "redirect" => mark_redirect(&mut page),
                    _ => {}
                }
            }
            Event::Empty(e) => {
                seen_root = true;
                if e.local_name().as_ref() == "redirect" {
                    mark_redirect(&mut page)
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                match e.local_name().as_ref() {
                    "title" | "ns" | "text" => field = Field::None,
                    "page" => {
                        if let Some(p) = page.take() {
                            write_page(p, out, &mut stats).map_err(|e| (stats.clone(), e))?;
                            on_article(&stats);
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => push(&mut page, field, &t),
            Event::CData(t) => push(&mut page, field, &t),
            Event::GeneralRef(r) => {
                // `&lt;` and friends arrive as their own events; put the character back.
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_xml_entity(&r).unwrap_or("").to_owned(),
                };
                push(&mut page, field, &resolved)
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if depth > 0 || page.is_some() || !seen_root {
        let what = if seen_root {
            "the dump ends in the middle of a page (truncated?)"
        } else {
            "no XML in the input"
        };
        return Err((stats, what.to_owned()));
    }
    Ok(stats)
}

fn mark_redirect(page: &mut Option<Page>) {
    if let Some(p) = page.as_mut() {
        p.redirect = true;
    }
}

fn push(page: &mut Option<Page>, field: Field, text: &str) {
    if let Some(p) = page.as_mut() {
        match field {
            Field::Title => p.title.push_str(text),
            Field::Ns => p.ns.push_str(text),
            Field::Text => p.text.push_str(text),
            Field::None => {}
        }
    }
}

/// Write one finished page if it is an article, and count it.
fn write_page(p: Page, out: &mut impl Write, stats: &mut WikiStats) -> std::result::Result<(), String> {
    let ns = p.ns.trim();
    if !(ns.is_empty() || ns == "0") {
        stats.other_pages += 1;
        return Ok(());
    }
    if p.redirect || p.text.trim_start().get(..9).is_some_and(|s| s.eq_ignore_ascii_case("#redirect")) {
        stats.redirects += 1;
        return Ok(());
    }
    let body = wiki_to_text(&p.text);
    if body.is_empty() {
        return Ok(());
    }
    let article = format!("{}\n\n{body}\n\n", p.title.trim());
    out.write_all(article.as_bytes()).map_err(|e| format!("writing the text: {e}"))?;
    stats.articles += 1;
    stats.bytes += article.len() as u64;
    Ok(())
}

/// Sections that hold lists of sources and links rather than prose.
const DROPPED_SECTIONS: &[&str] =
    &["references", "external links", "see also", "further reading", "notes", "bibliography", "sources"];

/// HTML elements dropped with their content (citations, formulas, galleries, code).
const DROPPED_ELEMENTS: &[&str] =
    &["ref", "math", "gallery", "timeline", "score", "syntaxhighlight", "source", "table", "imagemap"];

/// Reduce MediaWiki markup to readable prose (see the module docs for what goes and stays).
pub fn wiki_to_text(markup: &str) -> String {
    let text = remove_comments(markup);
    let text = remove_elements(&text);
    let text = remove_templates_and_tables(&text);
    let text = replace_links(&text);
    let text = strip_tags(&text);
    let text = text.replace("'''", "").replace("''", "");
    let text = decode_entities(&text);
    tidy_lines(&text)
}

/// Drop `<!-- ... -->` (an unclosed one runs to the end).
fn remove_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("-->").map_or("", |j| &rest[i + j + 3..]);
    }
    out.push_str(rest);
    out
}

/// Drop the elements of [`DROPPED_ELEMENTS`] with their content: `<ref name="x"/>`,
/// `<ref>...</ref>`, `<math>...</math>`, ...
fn remove_elements(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let tag = &rest[i + 1..];
        let name: String =
            tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
        if !DROPPED_ELEMENTS.contains(&name.as_str()) {
            out.push('<');
            rest = tag;
            continue;
        }
        let Some(close) = tag.find('>') else {
            rest = ""; // an unclosed tag: nothing readable after it
            break;
        };
        if tag[..close].ends_with('/') {
            rest = &tag[close + 1..]; // <ref name="x" />
            continue;
        }
        let body = &tag[close + 1..];
        let end = format!("</{name}");
        let lower = body.to_ascii_lowercase(); // ASCII lowercasing keeps byte offsets
        rest = match lower.find(&end) {
            Some(j) => body[j..].find('>').map_or("", |k| &body[j + k + 1..]),
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Drop templates `{{...}}` and tables `{| ... |}` (a table's markers start a line), nested
/// in each other to any depth.
fn remove_templates_and_tables(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut templates, mut tables) = (0usize, 0usize);
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut line_start = true;
    while i < bytes.len() {
        let two = &bytes[i..(i + 2).min(bytes.len())];
        if two == b"{{" {
            templates += 1;
            i += 2;
        } else if two == b"}}" && templates > 0 {
            templates -= 1;
            i += 2;
        } else if two == b"{|" && line_start {
            tables += 1;
            i += 2;
        } else if two == b"|}" && line_start && tables > 0 {
            tables -= 1;
            i += 2;
        } else {
            let c = s[i..].chars().next().unwrap_or(' ');
            if templates == 0 && tables == 0 {
                out.push(c);
            }
            if c == '\n' {
                line_start = true;
            } else if !c.is_whitespace() {
                line_start = false;
            }
            i += c.len_utf8();
            continue;
        }
        line_start = false;
    }
    out
}

/// `[[target|text]]` → `text`, `[[target]]` → `target`, `[[File:...]]` and
/// `[[Category:...]]` (any `prefix:` link) → nothing, `[http://x text]` → `text`.
fn replace_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let internal = rest.find("[[");
        let external = rest.find('[').filter(|&i| Some(i) != internal);
        match (internal, external) {
            (Some(i), e) if e.is_none_or(|e| i < e) => {
                out.push_str(&rest[..i]);
                let inner_start = i + 2;
                let Some(len) = balanced_close(&rest[inner_start..]) else {
                    rest = ""; // unclosed link: drop the rest of the line's markup
                    break;
                };
                let inner = &rest[inner_start..inner_start + len];
                out.push_str(&link_text(inner));
                rest = &rest[inner_start + len + 2..];
            }
            (_, Some(e)) => {
                out.push_str(&rest[..e]);
                let after = &rest[e + 1..];
                let is_url =
                    after.starts_with("http://") || after.starts_with("https://") || after.starts_with("//");
                match after.find(']') {
                    Some(j) if is_url && !after[..j].contains('\n') => {
                        if let Some((_, label)) = after[..j].split_once(' ') {
                            out.push_str(label.trim());
                        }
                        rest = &after[j + 1..];
                    }
                    _ => {
                        out.push('[');
                        rest = after;
                    }
                }
            }
            _ => break,
        }
    }
    out.push_str(rest);
    out
}

/// The length of `s` up to the `]]` that closes an already opened `[[` (nested links
/// inside, as in file captions, are skipped over).
fn balanced_close(s: &str) -> Option<usize> {
    let mut depth = 1;
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        match &b[i..i + 2] {
            b"[[" => {
                depth += 1;
                i += 2
            }
            b"]]" => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
                i += 2
            }
            _ => i += 1,
        }
    }
    None
}

/// The visible text of an internal link's inside (`target|text`).
fn link_text(inner: &str) -> String {
    let target = inner.split('|').next().unwrap_or("");
    if let Some((prefix, _)) = target.split_once(':') {
        // File:, Image:, Category:, interlanguage links (de:...): not prose.
        if !prefix.is_empty() && !prefix.contains(' ') || prefix.eq_ignore_ascii_case("file") {
            return String::new();
        }
    }
    match inner.rsplit_once('|') {
        Some((_, text)) if !text.trim().is_empty() => replace_links(text),
        _ => target.trim_start_matches(':').to_owned(),
    }
}

/// Drop remaining HTML tags (`<small>`, `</span>`, `<br />`), keeping their content.
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let looks_like_tag = after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/');
        match after.find('>') {
            Some(j) if looks_like_tag && !after[..j].contains('<') => {
                if after[..j].to_ascii_lowercase().starts_with("br") {
                    out.push(' ');
                }
                rest = &after[j + 1..];
            }
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The HTML entities wiki text uses most, and numeric ones (`&#8212;`, `&#x2014;`).
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let name = after.find(';').filter(|&j| j <= 10).map(|j| &after[..j]);
        let decoded = name.and_then(|name| {
            let named = match name {
                "nbsp" | "thinsp" | "ensp" | "emsp" => Some(' '),
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "ndash" => Some('–'),
                "mdash" => Some('—'),
                "minus" => Some('−'),
                "times" => Some('×'),
                "hellip" => Some('…'),
                _ => None,
            };
            named.or_else(|| {
                let num = name.strip_prefix('#')?;
                let code = match num.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => num.parse().ok()?,
                };
                char::from_u32(code)
            })
        });
        match (name, decoded) {
            (Some(name), Some(c)) => {
                out.push(c);
                rest = &after[name.len() + 1..];
            }
            _ => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Headings to plain lines, list markers and table leftovers off, the listed sections
/// dropped, spaces and blank lines collapsed.
fn tidy_lines(s: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut skipping = false;
    for line in s.lines() {
        let line = line.trim();
        if line.starts_with('=') && line.ends_with('=') && line.len() > 2 {
            let title = line.trim_matches('=').trim();
            skipping = DROPPED_SECTIONS.contains(&title.to_lowercase().as_str());
            if !skipping && !title.is_empty() {
                if lines.last().is_some_and(|l| !l.is_empty()) {
                    lines.push(String::new());
                }
                lines.push(title.to_owned());
            }
            continue;
        }
        if skipping || line.starts_with('|') || line.starts_with('!') || line.starts_with("__") {
            continue;
        }
        let line = line.trim_start_matches(['*', '#', ':', ';']).trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        let line = words.join(" ");
        // Punctuation left alone by removed refs and templates: "word ." → "word."
        let line = line.replace(" .", ".").replace(" ,", ",").replace("()", "");
        if line.is_empty() {
            if lines.last().is_some_and(|l| !l.is_empty()) {
                lines.push(String::new());
            }
        } else {
            lines.push(line);
        }
    }
    while lines.first().is_some_and(|l| l.is_empty()) {
        lines.remove(0);
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_becomes_prose() {
        let wiki = "{{Infobox person\n| name = Alan {{small|M.}} Turing\n}}\n'''Alan Turing''' was an \
            English [[mathematician]] and [[computer science|computer scientist]].<ref name=\"a\">Hodges, \
            p. 1</ref> He was born in [[London]]{{sfn|Hodges|1983}}.<!-- hidden -->\n\n\
            [[File:Alan Turing.jpg|thumb|Turing in [[1936]]]]\n== Early life ==\n\
            * Went to [https://example.org Sherborne] school&nbsp;&ndash; aged 13.<ref name=\"b\"/>\n\
            {| class=\"wikitable\"\n|-\n! Year\n|-\n| 1936\n|}\n\
            == References ==\n{{reflist}}\n* Hodges, A. (1983)\n[[Category:1912 births]]";
        let text = wiki_to_text(wiki);
        assert_eq!(
            text,
            "Alan Turing was an English mathematician and computer scientist. He was born in London.\n\n\
             Early life\nWent to Sherborne school – aged 13."
        );
    }

    #[test]
    fn entities_and_stray_brackets_survive() {
        assert_eq!(wiki_to_text("a < b &amp; [c] &#x41; &bogus; x"), "a < b & [c] A &bogus; x");
    }
}
