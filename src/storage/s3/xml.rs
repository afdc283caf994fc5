/*!
A minimal element tree for the few S3 XML responses we read (listings, multipart, errors).
Namespaces are ignored (local names only); entity and character references are resolved.
Nesting is capped at [`MAX_DEPTH`]: the responses are a few levels deep, and a tree millions deep
(a 64 MiB body of `<a>`) would overflow the stack when it is dropped.
*/

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;

use crate::error::{Error, Result};

/// The deepest nesting read; S3's responses are at most four levels deep.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Default)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// Text of a direct child, or "" when absent.
    pub fn text_of(&self, name: &str) -> &str {
        self.child(name).map(|c| c.text.as_str()).unwrap_or("")
    }
}

pub fn parse(xml: &[u8]) -> Result<Element> {
    let bad = |what: String| {
        Error::storage(format!(
            "unreadable response from the storage service: {what}"
        ))
    };
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| bad(e.to_string()))?;
        match ev {
            Event::Start(s) => {
                // The stack holds the document's root too.
                if stack.len() > MAX_DEPTH {
                    return Err(bad(format!("elements nested deeper than {MAX_DEPTH}")));
                }
                stack.push(Element {
                    name: String::from_utf8_lossy(s.local_name().as_ref()).into_owned(),
                    ..Default::default()
                })
            }
            Event::Empty(s) => {
                let el = Element {
                    name: String::from_utf8_lossy(s.local_name().as_ref()).into_owned(),
                    ..Default::default()
                };
                stack.last_mut().unwrap().children.push(el);
            }
            Event::End(_) => {
                let el = stack.pop().unwrap();
                let parent = stack
                    .last_mut()
                    .ok_or_else(|| bad("unbalanced tags".into()))?;
                parent.children.push(el);
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| bad(e.to_string()))?;
                stack.last_mut().unwrap().text.push_str(&s);
            }
            Event::CData(t) => {
                stack
                    .last_mut()
                    .unwrap()
                    .text
                    .push_str(&String::from_utf8_lossy(&t));
            }
            Event::GeneralRef(r) => {
                let s = if let Some(c) = r.resolve_char_ref().map_err(|e| bad(e.to_string()))? {
                    c.to_string()
                } else {
                    let name = r.decode().map_err(|e| bad(e.to_string()))?;
                    resolve_predefined_entity(&name)
                        .ok_or_else(|| bad(format!("unknown entity &{name};")))?
                        .to_string()
                };
                stack.last_mut().unwrap().text.push_str(&s);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if stack.len() != 1 {
        return Err(bad("document ended inside an element".into()));
    }
    let mut root = stack.pop().unwrap();
    root.children
        .pop()
        .filter(|_| root.children.is_empty())
        .ok_or_else(|| bad("expected one root element".into()))
}

pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_listing_with_entities() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bkt</Name><IsTruncated>true</IsTruncated>
  <Contents><Key>a&amp;b/c&#x41;</Key><Size>12</Size></Contents>
  <Contents><Key>d</Key><Size>0</Size></Contents>
  <NextContinuationToken>tok/==</NextContinuationToken>
</ListBucketResult>"#;
        let root = parse(xml).unwrap();
        assert_eq!(root.name, "ListBucketResult");
        let keys: Vec<_> = root
            .children("Contents")
            .map(|c| c.text_of("Key"))
            .collect();
        assert_eq!(keys, ["a&b/cA", "d"]);
        assert_eq!(root.text_of("IsTruncated"), "true");
        assert_eq!(root.text_of("NextContinuationToken"), "tok/==");
    }

    #[test]
    fn refuses_deep_nesting_instead_of_overflowing_the_stack() {
        let depth = 1_000_000;
        let doc = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        let e = parse(doc.as_bytes()).unwrap_err();
        assert!(e.message().contains("nested deeper than 32"), "{e:?}");
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"").is_err());
    }
}
