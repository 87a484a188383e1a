//! A small element tree over the descriptor bytes, with the byte span of every value
//! (docs/formats.md §2.1, §6 rule 8).
//!
//! The tree is built from `quick-xml` events ([`NsReader`] over the original bytes, so
//! attribute values and text are borrowed from the document and their offsets are exact).
//! Namespaces are resolved by URI, never by prefix. Only elements in the namespaces the model
//! reads (OVF envelope, no namespace, DMTF CIM, VMware) are stored; subtrees in any other
//! namespace (`vbox:Machine`, `xenovf:...`) are still parsed and checked for well-formedness
//! but not kept, which bounds memory by what the model needs.
//!
//! Refused here: DTDs (`<!DOCTYPE` of any kind, so no entity can be declared, expanded or
//! fetched), undefined entities, nesting deeper than [`MAX_DEPTH`], more than
//! [`MAX_ATTRIBUTES`] attributes on an element, more than [`MAX_ELEMENTS`] stored elements,
//! text or a second element after the root, and documents that end with elements open.
//!
//! Encoding: UTF-8, with or without a byte-order mark. UTF-16 is refused with
//! [`OvfError::UnsupportedEncoding`]: spans must index the original bytes so that an edit can
//! be spliced in, and a transcoded copy would break that. A declaration naming another
//! encoding is accepted when the bytes are valid UTF-8 anyway (XenServer declares `utf-16`
//! and writes UTF-8).

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use super::OvfError;

/// Deepest element nesting accepted (docs/formats.md §6 rule 8). Real descriptors nest about ten
/// levels (collections add two per level); 256 leaves room and bounds recursion.
pub const MAX_DEPTH: usize = 256;

/// Most attributes on one element. The widest real element (`Envelope` with its namespace
/// declarations) has about fifteen.
pub const MAX_ATTRIBUTES: usize = 256;

/// Most stored elements. A descriptor with a hundred VMs has a few tens of thousands; each
/// stored element costs a few hundred bytes, so this bounds the tree to tens of megabytes.
pub const MAX_ELEMENTS: usize = 250_000;

/// A byte range in the original descriptor bytes (including any byte-order mark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub const fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the span is empty.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of `doc` this span covers, or `None` if it is not inside `doc`.
    pub fn slice<'a>(&self, doc: &'a [u8]) -> Option<&'a [u8]> {
        doc.get(self.start..self.end)
    }
}

/// A value read from the descriptor and the bytes it was read from.
///
/// For an attribute, `span` covers the value between the quotes. For element text, `span`
/// covers the whole content between the start and end tags (an edit replaces all of it),
/// while `value` is the decoded text (entities resolved, line ends normalised) with
/// surrounding whitespace trimmed. For a self-closing element (`<x/>`) the value is empty and
/// the span is empty, placed at the `/`: text cannot be spliced into such an element, replace
/// the element instead (every model struct records its element's span).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The decoded value.
    pub value: T,
    /// Where it was read from.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// A value with its span.
    pub const fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }

    /// Converts the value, keeping the span.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            value: f(self.value),
            span: self.span,
        }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The namespaces the model distinguishes (docs/formats.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ns {
    /// Any OVF envelope namespace (0.9, draft, 1.x, 2.x).
    Ovf,
    /// No namespace (an unprefixed name with no default namespace in scope).
    None,
    /// CIM ResourceAllocationSettingData.
    Rasd,
    /// CIM VirtualSystemSettingData.
    Vssd,
    /// CIM StorageAllocationSettingData (OVF 2.x).
    Sasd,
    /// CIM EthernetPortAllocationSettingData (OVF 2.x).
    Epasd,
    /// Another DMTF CIM namespace.
    Cim,
    /// VMware extensions.
    Vmw,
    /// VirtualBox's machine settings (`vbox:Machine`), kept because VirtualBox imports its
    /// CPU count and memory from there (see `settings::vbox`).
    Vbox,
    /// XML Schema instance (`xsi:type`).
    Xsi,
    /// XML Schema (`xs:name`, an Open-OVF quirk).
    Xs,
    /// Anything else.
    Other,
}

impl Ns {
    /// Whether elements in this namespace are kept in the tree.
    fn kept(self) -> bool {
        !matches!(self, Ns::Xsi | Ns::Xs | Ns::Other)
    }
}

/// OVF envelope namespace URIs, with the version each one means (docs/formats.md §2.1).
pub(crate) const ENVELOPE_0_9: &str = "http://www.vmware.com/schema/ovf/1/envelope";
pub(crate) const ENVELOPE_DRAFT: &str = "http://schemas.dmtf.org/ovf/envelope";
pub(crate) const ENVELOPE_1: &str = "http://schemas.dmtf.org/ovf/envelope/1";
pub(crate) const ENVELOPE_2: &str = "http://schemas.dmtf.org/ovf/envelope/2";
const CIM_PREFIX: &str = "http://schemas.dmtf.org/wbem/wscim/";
const CIM_SCHEMA: &str = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/";
const VMW: &str = "http://www.vmware.com/schema/ovf";
pub(crate) const VBOX: &str = "http://www.virtualbox.org/ovf/machine";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const XS: &str = "http://www.w3.org/2001/XMLSchema";

/// A namespace URI with one trailing `/` removed (oVirt writes `.../envelope/1/`).
pub(crate) fn trim_uri(uri: &str) -> &str {
    uri.strip_suffix('/').unwrap_or(uri)
}

/// Classifies a namespace URI.
pub(crate) fn classify(uri: &str) -> Ns {
    let uri = trim_uri(uri);
    match uri {
        ENVELOPE_0_9 | ENVELOPE_DRAFT | ENVELOPE_1 | ENVELOPE_2 => return Ns::Ovf,
        VMW => return Ns::Vmw,
        VBOX => return Ns::Vbox,
        XSI => return Ns::Xsi,
        XS => return Ns::Xs,
        _ => {}
    }
    if let Some(class) = uri.strip_prefix(CIM_SCHEMA) {
        // VirtualBox and COT write the 2.x URIs with a trailing ".xsd".
        let class = class.strip_suffix(".xsd").unwrap_or(class);
        return match class {
            "CIM_ResourceAllocationSettingData" => Ns::Rasd,
            "CIM_VirtualSystemSettingData" => Ns::Vssd,
            "CIM_StorageAllocationSettingData" => Ns::Sasd,
            "CIM_EthernetPortAllocationSettingData" => Ns::Epasd,
            _ => Ns::Cim,
        };
    }
    if uri.starts_with(CIM_PREFIX) {
        return Ns::Cim;
    }
    Ns::Other
}

/// One attribute of a stored element.
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub ns: Ns,
    pub local: String,
    pub value: Spanned<String>,
}

/// One stored element.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub ns: Ns,
    pub local: String,
    pub attrs: Vec<Attr>,
    /// Stored child elements, in document order (indices into [`Tree::nodes`]).
    pub children: Vec<usize>,
    /// Direct text content (see [`Spanned`] for the span rules).
    pub text: Spanned<String>,
    /// The whole element, from `<` of the start tag to `>` of the end tag.
    pub span: Span,
}

impl Node {
    /// The attribute with this local name in the OVF namespace, or else an unqualified one
    /// (some producers omit the `ovf:` prefix on attributes).
    pub fn ovf_attr(&self, local: &str) -> Option<&Spanned<String>> {
        self.attrs
            .iter()
            .find(|a| a.ns == Ns::Ovf && a.local == local)
            .or_else(|| {
                self.attrs
                    .iter()
                    .find(|a| a.ns == Ns::None && a.local == local)
            })
            .map(|a| &a.value)
    }

    /// The attribute with this namespace and local name.
    pub fn attr(&self, ns: Ns, local: &str) -> Option<&Spanned<String>> {
        self.attrs
            .iter()
            .find(|a| a.ns == ns && a.local == local)
            .map(|a| &a.value)
    }

    /// Whether this is an OVF element (OVF namespace, or no namespace: Open-OVF and oVirt
    /// write unqualified OVF elements under a prefixed root) with this local name.
    pub fn is_ovf(&self, local: &str) -> bool {
        matches!(self.ns, Ns::Ovf | Ns::None) && self.local == local
    }
}

/// The stored elements of a document.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
    /// Index of the root element (always stored).
    pub root: usize,
    /// Namespace URI of the root element (`""` when it has none).
    pub root_uri: String,
    /// Qualified name of the root element as written.
    pub root_name: String,
}

impl Tree {
    /// The node at `i` (indices come from the tree itself, so they are always valid; a bad
    /// one would be a bug, answered with the root rather than a panic).
    pub fn node(&self, i: usize) -> &Node {
        self.nodes
            .get(i)
            .or_else(|| self.nodes.get(self.root))
            .unwrap_or(&EMPTY_NODE)
    }

    /// Stored children of `node`.
    pub fn children<'a>(&'a self, node: &'a Node) -> impl Iterator<Item = &'a Node> + 'a {
        node.children.iter().map(|&i| self.node(i))
    }

    /// The first OVF child element with this local name.
    pub fn ovf_child<'a>(&'a self, node: &'a Node, local: &str) -> Option<&'a Node> {
        self.children(node).find(|c| c.is_ovf(local))
    }

    /// The trimmed text of the first OVF child with this local name.
    pub fn ovf_child_text(&self, node: &Node, local: &str) -> Option<Spanned<String>> {
        self.ovf_child(node, local).map(|c| c.text.clone())
    }
}

static EMPTY_NODE: Node = Node {
    ns: Ns::Other,
    local: String::new(),
    attrs: Vec::new(),
    children: Vec::new(),
    text: Spanned {
        value: String::new(),
        span: Span { start: 0, end: 0 },
    },
    span: Span { start: 0, end: 0 },
};

/// An element being read.
struct Frame {
    /// Index of the stored node, or `None` inside a skipped subtree.
    node: Option<usize>,
    /// Qualified name, for the "truncated" message.
    name: String,
    /// Text collected so far (stored nodes only).
    text: String,
    /// Offset just after the start tag.
    content_start: usize,
}

/// Refuses UTF-16 and undecodable input and returns the document as text, with the offset
/// of the text in `bytes` (3 after a UTF-8 byte-order mark, else 0).
pub(crate) fn decode(bytes: &[u8]) -> Result<(&str, usize), OvfError> {
    match bytes {
        [0xFF, 0xFE, ..] | [b'<', 0, b'?', 0, ..] => {
            return Err(OvfError::UnsupportedEncoding {
                encoding: "UTF-16LE".into(),
            });
        }
        [0xFE, 0xFF, ..] | [0, b'<', 0, b'?', ..] => {
            return Err(OvfError::UnsupportedEncoding {
                encoding: "UTF-16BE".into(),
            });
        }
        _ => {}
    }
    let base = if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    };
    let body = bytes.get(base..).unwrap_or_default();
    let declared = declared_encoding(body);
    match std::str::from_utf8(body) {
        Ok(text) => {
            if let Some(enc) = &declared
                && !is_utf8_compatible(enc)
            {
                log::warn!(
                    "descriptor declares encoding {enc:?} but is valid UTF-8; reading it as UTF-8"
                );
            }
            Ok((text, base))
        }
        Err(e) => match declared {
            Some(enc) if !is_utf8_compatible(&enc) => {
                Err(OvfError::UnsupportedEncoding { encoding: enc })
            }
            _ => Err(OvfError::InvalidUtf8 {
                position: base.saturating_add(e.valid_up_to()),
            }),
        },
    }
}

fn is_utf8_compatible(enc: &str) -> bool {
    matches!(
        enc.to_ascii_lowercase().as_str(),
        "utf-8" | "utf8" | "us-ascii" | "ascii"
    )
}

/// The `encoding` pseudo-attribute of a leading XML declaration, read from ASCII bytes.
fn declared_encoding(body: &[u8]) -> Option<String> {
    let head = body.get(..body.len().min(256))?;
    if !head.starts_with(b"<?xml") {
        return None;
    }
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = &head[..end];
    let at = decl.windows(8).position(|w| w == b"encoding")?;
    let rest = &decl[at + 8..];
    let rest = rest
        .trim_ascii_start()
        .strip_prefix(b"=")?
        .trim_ascii_start();
    let (&quote, rest) = rest.split_first()?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let close = rest.iter().position(|&b| b == quote)?;
    String::from_utf8(rest[..close].to_vec()).ok()
}

/// Converts a reader offset (a `u64` into the text) to a document offset.
fn doc_pos(base: usize, p: u64) -> usize {
    base.saturating_add(usize::try_from(p).unwrap_or(usize::MAX))
}

/// Offset of `inner` inside `outer` when `inner` is a sub-slice of it.
fn subslice_offset(outer: &str, inner: &str) -> Option<usize> {
    let off = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = off.checked_add(inner.len())?;
    (outer.get(off..end)? == inner).then_some(off)
}

/// Builds the tree of `bytes`.
pub(crate) fn parse_tree(bytes: &[u8]) -> Result<Tree, OvfError> {
    #[cfg(test)]
    super::parse_count::tree();
    let (text, base) = decode(bytes)?;
    let mut r = NsReader::from_str(text);
    {
        let c = r.config_mut();
        c.trim_text(false);
        c.check_end_names = true;
        c.expand_empty_elements = false;
    }
    let xml_err = |position: usize, e: &dyn std::fmt::Display| OvfError::Xml {
        position,
        message: e.to_string(),
    };

    let mut nodes: Vec<Node> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<(usize, String, String)> = None;
    let mut root_closed = false;

    loop {
        let before = doc_pos(base, r.buffer_position());
        let event = match r.read_event() {
            Ok(e) => e,
            Err(e) => return Err(xml_err(doc_pos(base, r.error_position()), &e)),
        };
        let after = doc_pos(base, r.buffer_position());
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                if root_closed {
                    return Err(OvfError::Xml {
                        position: before,
                        message: "a second element after the root element".into(),
                    });
                }
                let depth = stack.len().saturating_add(1);
                if depth > MAX_DEPTH {
                    return Err(OvfError::TooDeep { depth });
                }
                let qname = e.name().as_ref().to_string();
                if !is_xml_name(&qname) {
                    return Err(OvfError::Xml {
                        position: before,
                        message: format!("invalid element name {qname:?}"),
                    });
                }
                let (resolved, local) = r.resolver().resolve_element(e.name());
                let (ns, uri) = match resolved {
                    ResolveResult::Bound(n) => (classify(n.as_ref()), n.as_ref().to_string()),
                    ResolveResult::Unbound => (Ns::None, String::new()),
                    ResolveResult::Unknown(p) => {
                        return Err(OvfError::Xml {
                            position: before,
                            message: format!("undeclared namespace prefix {p:?}"),
                        });
                    }
                };
                let local = local.as_ref().to_string();
                let is_root = stack.is_empty();
                let parent_kept = stack.last().is_none_or(|f| f.node.is_some());
                let keep = is_root || (parent_kept && ns.kept());
                let node = if keep {
                    if nodes.len() >= MAX_ELEMENTS {
                        return Err(OvfError::TooManyElements {
                            limit: MAX_ELEMENTS,
                        });
                    }
                    let attrs = read_attrs(&r, e, text, base, before)?;
                    let content_at = if empty {
                        after.saturating_sub(2)
                    } else {
                        after
                    };
                    nodes.push(Node {
                        ns,
                        local,
                        attrs,
                        children: Vec::new(),
                        text: Spanned::new(String::new(), Span::new(content_at, content_at)),
                        span: Span::new(before, after),
                    });
                    let idx = nodes.len() - 1;
                    if let Some(parent) = stack.last().and_then(|f| f.node)
                        && let Some(p) = nodes.get_mut(parent)
                    {
                        p.children.push(idx);
                    }
                    Some(idx)
                } else {
                    // Still check the attribute syntax and count of skipped elements.
                    check_attrs(e, before)?;
                    None
                };
                if is_root {
                    root = Some((node.unwrap_or(0), uri, qname.clone()));
                }
                if empty {
                    if is_root {
                        root_closed = true;
                    }
                } else {
                    stack.push(Frame {
                        node,
                        name: qname,
                        text: String::new(),
                        content_start: after,
                    });
                }
            }
            Event::End(_) => {
                let Some(frame) = stack.pop() else {
                    return Err(OvfError::Xml {
                        position: before,
                        message: "end tag without a start tag".into(),
                    });
                };
                if let Some(i) = frame.node
                    && let Some(n) = nodes.get_mut(i)
                {
                    n.span.end = after;
                    n.text = Spanned::new(
                        frame.text.trim_matches(is_xml_space).to_string(),
                        Span::new(frame.content_start, before),
                    );
                }
                if stack.is_empty() {
                    root_closed = true;
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(f) => {
                        if f.node.is_some() {
                            f.text.push_str(&content);
                        }
                    }
                    None => {
                        if !content.chars().all(is_xml_space) {
                            return Err(OvfError::Xml {
                                position: before,
                                message: "text outside the root element".into(),
                            });
                        }
                    }
                }
            }
            Event::CData(t) => {
                let Some(f) = stack.last_mut() else {
                    return Err(OvfError::Xml {
                        position: before,
                        message: "CDATA outside the root element".into(),
                    });
                };
                if f.node.is_some() {
                    f.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(g) => {
                let Some(f) = stack.last_mut() else {
                    return Err(OvfError::Xml {
                        position: before,
                        message: "entity reference outside the root element".into(),
                    });
                };
                let resolved = match g.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match quick_xml::escape::resolve_predefined_entity(&g) {
                        Some(s) => s.to_string(),
                        None => {
                            return Err(OvfError::Xml {
                                position: before,
                                message: format!("undefined entity &{};", &*g),
                            });
                        }
                    },
                    Err(e) => return Err(xml_err(before, &e)),
                };
                if f.node.is_some() {
                    f.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err(OvfError::Dtd { position: before }),
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(OvfError::Truncated {
            open_element: open.name.clone(),
        });
    }
    let Some((root, root_uri, root_name)) = root else {
        return Err(OvfError::Xml {
            position: bytes.len(),
            message: "no root element".into(),
        });
    };
    Ok(Tree {
        nodes,
        root,
        root_uri,
        root_name,
    })
}

/// Whether `s` is an XML Name (XML 1.0 §2.3, with the non-ASCII ranges simplified to "any
/// letter-like character from U+00C0 on").
fn is_xml_name(s: &str) -> bool {
    let start = |c: char| {
        c.is_ascii_alphabetic()
            || c == '_'
            || c == ':'
            || (c >= '\u{C0}' && c != '\u{D7}' && c != '\u{F7}')
    };
    let mut chars = s.chars();
    chars.next().is_some_and(start)
        && chars.all(|c| start(c) || c.is_ascii_digit() || c == '-' || c == '.' || c == '\u{B7}')
}

/// XML white space (S production).
fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Reads the attributes of a stored element with the span of each value.
fn read_attrs(
    r: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
    text: &str,
    base: usize,
    position: usize,
) -> Result<Vec<Attr>, OvfError> {
    let mut out = Vec::new();
    for (count, a) in e.attributes().enumerate() {
        if count >= MAX_ATTRIBUTES {
            return Err(OvfError::TooManyAttributes {
                position,
                limit: MAX_ATTRIBUTES,
            });
        }
        let a = a.map_err(|err| OvfError::Xml {
            position,
            message: err.to_string(),
        })?;
        let key = a.key.as_ref();
        if !is_xml_name(key) {
            return Err(OvfError::Xml {
                position,
                message: format!("invalid attribute name {key:?}"),
            });
        }
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let (resolved, local) = r.resolver().resolve_attribute(a.key);
        let ns = match resolved {
            ResolveResult::Bound(n) => classify(n.as_ref()),
            ResolveResult::Unbound => Ns::None,
            ResolveResult::Unknown(p) => {
                return Err(OvfError::Xml {
                    position,
                    message: format!("undeclared namespace prefix {p:?}"),
                });
            }
        };
        let raw: &str = match &a.value {
            std::borrow::Cow::Borrowed(s) => s,
            std::borrow::Cow::Owned(_) => {
                return Err(OvfError::Xml {
                    position,
                    message: "attribute value not borrowed from the document".into(),
                });
            }
        };
        let off = subslice_offset(text, raw).ok_or_else(|| OvfError::Xml {
            position,
            message: "attribute value outside the document".into(),
        })?;
        let start = base.saturating_add(off);
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| OvfError::Xml {
                position: start,
                message: err.to_string(),
            })?
            .into_owned();
        out.push(Attr {
            ns,
            local: local.as_ref().to_string(),
            value: Spanned::new(value, Span::new(start, start.saturating_add(raw.len()))),
        });
    }
    Ok(out)
}

/// Checks the attributes of a skipped element: well-formed, unique, not too many.
fn check_attrs(e: &BytesStart<'_>, position: usize) -> Result<(), OvfError> {
    for (count, a) in e.attributes().enumerate() {
        if count >= MAX_ATTRIBUTES {
            return Err(OvfError::TooManyAttributes {
                position,
                limit: MAX_ATTRIBUTES,
            });
        }
        let a = a.map_err(|err| OvfError::Xml {
            position,
            message: err.to_string(),
        })?;
        if !is_xml_name(a.key.as_ref()) {
            return Err(OvfError::Xml {
                position,
                message: format!("invalid attribute name {:?}", a.key.as_ref()),
            });
        }
    }
    Ok(())
}
