//! The descriptor's element tree seen as text to splice into: where an element's start tag
//! ends, which prefix a namespace has at a point, what indentation and line ending the
//! document uses, and small builders for the [`Edit`]s every setting makes (replace a text,
//! set or add an attribute, insert or remove an element).
//!
//! Nothing here re-serialises the document: every builder returns an edit of a few bytes and
//! copies the surrounding style (prefixes, per-element namespace declarations, quotes,
//! indentation, CRLF) from the elements around the edit.
//!
//! The tree is [`crate::ovf::xml::parse_tree`] over the descriptor's own bytes, so the spans
//! of the [`Descriptor`] model and of the tree agree; a model value is matched to its tree
//! node by the start offset of its element.

use std::collections::HashMap;

use crate::ovf::edit::Edit;
use crate::ovf::xml::{self, Node, Ns, Span, Tree};
use crate::ovf::{Descriptor, content_kind, section_name};

use super::SettingError;

/// The XML namespace of VMware's extensions.
pub(crate) const VMW_URI: &str = "http://www.vmware.com/schema/ovf";

/// One attribute of a start tag, as written.
#[derive(Debug, Clone)]
pub(crate) struct RawAttr {
    /// The qualified name as written (`ovf:key`, `xmlns:rasd`).
    pub name: String,
    /// From the first byte of the name to the closing quote (inclusive).
    pub whole: Span,
    /// The value between the quotes.
    pub value: Span,
}

/// A start tag: its attributes and where it closes.
#[derive(Debug, Clone)]
pub(crate) struct StartTag {
    /// Offset of the closing `>`.
    pub close: usize,
    /// Whether it is `<x/>`.
    pub self_closing: bool,
    /// Offset where a new attribute goes: after the last attribute, or after the name.
    pub attr_insert: usize,
    /// Attributes in order, namespace declarations included.
    pub attrs: Vec<RawAttr>,
}

/// The descriptor's tree with parent links and text helpers.
pub(crate) struct View<'d> {
    pub desc: &'d Descriptor,
    pub tree: Tree,
    parent: Vec<Option<usize>>,
    by_start: HashMap<usize, usize>,
    /// The document's line ending (`"\r\n"` when its first line ends so).
    pub nl: &'static str,
}

impl<'d> View<'d> {
    /// Builds the view of `desc`.
    pub fn new(desc: &'d Descriptor) -> Result<View<'d>, SettingError> {
        let tree = xml::parse_tree(&desc.bytes).map_err(|e| {
            SettingError::Internal(format!("the descriptor does not re-parse: {e}"))
        })?;
        Ok(View::with_tree(desc, tree))
    }

    /// The view of `desc` over `tree`, the tree `desc` was built from (see
    /// [`crate::ovf::parse_with_tree`]): no second parse.
    pub fn with_tree(desc: &'d Descriptor, tree: Tree) -> View<'d> {
        let mut parent = vec![None; tree.nodes.len()];
        let mut by_start = HashMap::with_capacity(tree.nodes.len());
        for (i, n) in tree.nodes.iter().enumerate() {
            by_start.insert(n.span.start, i);
            for &c in &n.children {
                if let Some(p) = parent.get_mut(c) {
                    *p = Some(i);
                }
            }
        }
        let nl = match desc.bytes.iter().position(|&b| b == b'\n') {
            Some(i) if i > 0 && desc.bytes.get(i - 1) == Some(&b'\r') => "\r\n",
            _ => "\n",
        };
        View {
            desc,
            tree,
            parent,
            by_start,
            nl,
        }
    }

    /// The document bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.desc.bytes
    }

    /// The text of `span` (empty when it is not inside the document or not UTF-8).
    pub fn text(&self, span: Span) -> &str {
        span.slice(self.bytes())
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        self.tree.node(i)
    }

    /// The node of the element whose span is `element` (a model span).
    pub fn find(&self, element: Span) -> Option<usize> {
        self.by_start.get(&element.start).copied()
    }

    /// The parent of node `i`.
    pub fn parent(&self, i: usize) -> Option<usize> {
        self.parent.get(i).copied().flatten()
    }

    /// The stored children of node `i`.
    pub fn children(&self, i: usize) -> Vec<usize> {
        self.node(i).children.clone()
    }

    /// The first OVF child of `i` named `local`.
    pub fn ovf_child(&self, i: usize, local: &str) -> Option<usize> {
        self.node(i)
            .children
            .iter()
            .copied()
            .find(|&c| self.node(c).is_ovf(local))
    }

    /// The section children of a content element `i` with this section name (`AnnotationSection`).
    pub fn section(&self, i: usize, name: &str) -> Option<usize> {
        self.node(i)
            .children
            .iter()
            .copied()
            .find(|&c| section_name(self.node(c)) == Some(name))
    }

    /// The qualified name of node `i` as written.
    pub fn qname(&self, i: usize) -> &str {
        let n = self.node(i);
        let rest = self.text(Span::new(n.span.start.saturating_add(1), n.span.end));
        let end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        &rest[..end]
    }

    /// The element prefix of node `i` with its colon (`ovf:`), or `""`.
    pub fn prefix(&self, i: usize) -> &str {
        let q = self.qname(i);
        match q.find(':') {
            Some(k) => &q[..=k],
            None => "",
        }
    }

    /// The start tag of node `i`.
    pub fn start_tag(&self, i: usize) -> StartTag {
        let n = self.node(i);
        scan_start_tag(self.bytes(), n.span.start, n.span.end)
    }

    /// Namespace declarations written on node `i`: (prefix or `None` for the default, URI).
    pub fn ns_decls(&self, i: usize) -> Vec<(Option<String>, String)> {
        let st = self.start_tag(i);
        st.attrs
            .iter()
            .filter_map(|a| {
                let uri = quick_xml::escape::unescape(self.text(a.value))
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                if a.name == "xmlns" {
                    Some((None, uri))
                } else {
                    a.name
                        .strip_prefix("xmlns:")
                        .map(|p| (Some(p.to_string()), uri))
                }
            })
            .collect()
    }

    /// The prefix (with colon) bound to a namespace accepted by `is_ns` in scope at node `i`
    /// (declarations on `i` itself included); `Some("")` when it is the default namespace
    /// and `allow_default`.
    pub fn prefix_in_scope(
        &self,
        i: usize,
        is_ns: &dyn Fn(&str) -> bool,
        allow_default: bool,
    ) -> Option<String> {
        let mut seen: Vec<Option<String>> = Vec::new();
        let mut at = Some(i);
        let mut steps = 0usize;
        while let Some(n) = at {
            steps += 1;
            if steps > xml::MAX_DEPTH + 1 {
                break;
            }
            for (p, uri) in self.ns_decls(n) {
                if seen.contains(&p) {
                    continue;
                }
                seen.push(p.clone());
                if is_ns(&uri) {
                    match p {
                        Some(p) => return Some(format!("{p}:")),
                        None if allow_default => return Some(String::new()),
                        None => {}
                    }
                }
            }
            at = self.parent(n);
        }
        None
    }

    /// Whether `uri` is the document's OVF envelope namespace.
    pub fn is_ovf_uri(&self, uri: &str) -> bool {
        xml::trim_uri(uri) == xml::trim_uri(&self.desc.namespace)
    }

    /// How to write an OVF attribute `local` on (a new child of) node `i`: the qualified name
    /// and any declaration it needs, e.g. (`ovf:value`, ``).
    pub fn ovf_attr_name(&self, i: usize, local: &str) -> (String, String) {
        // An OVF attribute already on the element tells the prefix this producer uses.
        let st = self.start_tag(i);
        for a in &st.attrs {
            if a.name.starts_with("xmlns") {
                continue;
            }
            if let Some((p, _)) = a.name.split_once(':')
                && self
                    .prefix_in_scope(i, &|u| self.is_ovf_uri(u), false)
                    .as_deref()
                    == Some(&format!("{p}:"))
            {
                return (format!("{p}:{local}"), String::new());
            }
        }
        match self.prefix_in_scope(i, &|u| self.is_ovf_uri(u), false) {
            Some(p) => (format!("{p}{local}"), String::new()),
            None => {
                if self.node(i).ns == Ns::None {
                    // Unqualified OVF elements (Open-OVF, oVirt) may carry unqualified
                    // attributes; the model reads both.
                    (local.to_string(), String::new())
                } else {
                    (
                        format!("ovf:{local}"),
                        format!(" xmlns:ovf=\"{}\"", escape_attr(&self.desc.namespace)),
                    )
                }
            }
        }
    }

    /// The run of white space just before offset `pos`, from its last line break (so the
    /// line break and the indentation of the element at `pos`), or the whole run when it has
    /// no line break.
    pub fn ws_before(&self, pos: usize) -> &str {
        let b = self.bytes();
        let mut s = pos.min(b.len());
        while s > 0 && matches!(b[s - 1], b' ' | b'\t' | b'\r' | b'\n') {
            s -= 1;
        }
        let run = self.text(Span::new(s, pos));
        match run.rfind('\n') {
            Some(k) => {
                let k = if k > 0 && run.as_bytes()[k - 1] == b'\r' {
                    k - 1
                } else {
                    k
                };
                &run[k..]
            }
            None => run,
        }
    }

    /// The start of the white space run before `pos` that begins with a line break, or
    /// `pos` when there is none (what removing the element at `pos` also removes).
    fn ws_start(&self, pos: usize) -> usize {
        pos - self.ws_before(pos).len()
    }

    /// The indentation of node `i` (the white space after the line break before it).
    pub fn indent(&self, i: usize) -> String {
        let ws = self.ws_before(self.node(i).span.start);
        ws.trim_start_matches(['\r', '\n']).to_string()
    }

    /// One level of indentation as the document writes it around node `i`.
    pub fn indent_unit(&self, i: usize) -> String {
        let own = self.indent(i);
        if let Some(&c) = self.node(i).children.first() {
            let child = self.indent(c);
            if let Some(u) = child.strip_prefix(own.as_str())
                && !u.is_empty()
            {
                return u.to_string();
            }
        }
        if let Some(p) = self.parent(i) {
            let pi = self.indent(p);
            if let Some(u) = own.strip_prefix(pi.as_str())
                && !u.is_empty()
            {
                return u.to_string();
            }
        }
        if own.starts_with('\t') {
            "\t".into()
        } else {
            "  ".into()
        }
    }

    /// Whether the document puts elements on their own lines around node `i`.
    fn multiline(&self, i: usize) -> bool {
        self.ws_before(self.node(i).span.start).contains('\n')
    }

    /// Line break plus indentation for a child of node `parent`.
    pub fn child_break(&self, parent: usize) -> String {
        if let Some(&c) = self.node(parent).children.first() {
            return self.ws_before(self.node(c).span.start).to_string();
        }
        if self.multiline(parent) {
            format!(
                "{}{}{}",
                self.nl,
                self.indent(parent),
                self.indent_unit(parent)
            )
        } else {
            String::new()
        }
    }

    /// Line break plus the indentation of `i` itself (what goes before its end tag).
    pub fn own_break(&self, i: usize) -> String {
        if self.multiline(i) {
            format!("{}{}", self.nl, self.indent(i))
        } else {
            String::new()
        }
    }

    /// Replaces the text content of element `i` with `value` (escaped here).
    pub fn set_text(&self, i: usize, value: &str) -> Edit {
        let n = self.node(i);
        let esc = escape_text(value, self.nl);
        let st = self.start_tag(i);
        if st.self_closing {
            // `<x .../>` becomes `<x ...>value</x>`: replace from the `/` on.
            let slash = self.bytes()[..st.close]
                .iter()
                .rposition(|&b| b == b'/')
                .unwrap_or(st.close);
            return Edit {
                span: Span::new(slash, n.span.end),
                replacement: format!(">{esc}</{}>", self.qname(i)),
            };
        }
        Edit {
            span: n.text.span,
            replacement: esc,
        }
    }

    /// Sets attribute `name` (qualified as written, e.g. `ovf:value`) of element `i`, found
    /// by `existing` when present; a new one is added after the last attribute, with
    /// `decl` (a namespace declaration it needs) before it.
    pub fn set_attr(
        &self,
        i: usize,
        existing: Option<Span>,
        name: &str,
        decl: &str,
        value: &str,
    ) -> Edit {
        let esc = escape_attr(value);
        match existing {
            Some(span) => Edit {
                span,
                replacement: esc,
            },
            None => {
                let st = self.start_tag(i);
                Edit {
                    span: Span::new(st.attr_insert, st.attr_insert),
                    replacement: format!("{decl} {name}=\"{esc}\""),
                }
            }
        }
    }

    /// Removes the attribute whose value span is `value` from element `i` (with the white
    /// space before it).
    pub fn remove_attr(&self, i: usize, value: Span) -> Option<Edit> {
        let st = self.start_tag(i);
        let a = st.attrs.iter().find(|a| a.value == value)?;
        let b = self.bytes();
        let mut s = a.whole.start;
        while s > 0 && matches!(b[s - 1], b' ' | b'\t' | b'\r' | b'\n') {
            s -= 1;
        }
        Some(Edit {
            span: Span::new(s, a.whole.end),
            replacement: String::new(),
        })
    }

    /// Inserts `xml` as a sibling right after element `i`, on its own line when `i` is.
    pub fn insert_after(&self, i: usize, xml: &str) -> Edit {
        let n = self.node(i);
        let ws = self.ws_before(n.span.start);
        Edit {
            span: Span::new(n.span.end, n.span.end),
            replacement: format!("{ws}{xml}"),
        }
    }

    /// Inserts `xml` as a sibling right before element `i`.
    pub fn insert_before(&self, i: usize, xml: &str) -> Edit {
        let n = self.node(i);
        let ws = self.ws_before(n.span.start);
        Edit {
            span: Span::new(n.span.start, n.span.start),
            replacement: format!("{xml}{ws}"),
        }
    }

    /// Inserts `xml` as the last child of element `i` (which may be empty or `<x/>`).
    pub fn append_child(&self, i: usize, xml: &str) -> Result<Edit, SettingError> {
        let n = self.node(i);
        if let Some(&last) = n.children.last() {
            return Ok(self.insert_after(last, xml));
        }
        let st = self.start_tag(i);
        let cb = self.child_break(i);
        let ob = self.own_break(i);
        if st.self_closing {
            let b = self.bytes();
            let mut s = st.close.saturating_sub(1);
            while s > 0 && matches!(b[s - 1], b' ' | b'\t' | b'\r' | b'\n') {
                s -= 1;
            }
            return Ok(Edit {
                span: Span::new(s, n.span.end),
                replacement: format!(">{cb}{xml}{ob}</{}>", self.qname(i)),
            });
        }
        if !self.text(n.text.span).trim().is_empty() {
            return Err(SettingError::Internal(format!(
                "element {} has text where an element was to be inserted",
                self.qname(i)
            )));
        }
        Ok(Edit {
            span: n.text.span,
            replacement: format!("{cb}{xml}{ob}"),
        })
    }

    /// Inserts `xml` as a child of `parent` before the first child for which `after_new`
    /// holds (the children that sort after the new one), else as the last child.
    pub fn insert_child_ordered(
        &self,
        parent: usize,
        xml: &str,
        after_new: &dyn Fn(usize) -> bool,
    ) -> Result<Edit, SettingError> {
        match self
            .node(parent)
            .children
            .iter()
            .copied()
            .find(|&c| after_new(c))
        {
            Some(c) => Ok(self.insert_before(c, xml)),
            None => self.append_child(parent, xml),
        }
    }

    /// Removes element `i` with the line break and indentation before it.
    pub fn remove(&self, i: usize) -> Edit {
        let n = self.node(i);
        Edit {
            span: Span::new(self.ws_start(n.span.start), n.span.end),
            replacement: String::new(),
        }
    }

    /// A new text element in the namespace of element `sibling`, written like it: the same
    /// prefix and the namespace declarations it carries itself.
    pub fn element_like(&self, sibling: usize, local: &str, text: &str) -> String {
        let st = self.start_tag(sibling);
        let decls: String = st
            .attrs
            .iter()
            .filter(|a| a.name == "xmlns" || a.name.starts_with("xmlns:"))
            .map(|a| format!(" {}", self.text(a.whole)))
            .collect();
        let p = self.prefix(sibling);
        format!(
            "<{p}{local}{decls}>{}</{p}{local}>",
            escape_text(text, self.nl)
        )
    }

    /// Builds a new text element named like the OVF element children of `parent`:
    /// `<ovf:Local>text</ovf:Local>`.
    pub fn ovf_element(&self, parent: usize, local: &str, text: &str) -> String {
        let p = self.ovf_elem_prefix(parent);
        format!("<{p}{local}>{}</{p}{local}>", escape_text(text, self.nl))
    }

    /// The prefix for a new OVF element inside `parent`.
    pub fn ovf_elem_prefix(&self, parent: usize) -> String {
        let n = self.node(parent);
        if matches!(n.ns, Ns::Ovf | Ns::None) {
            self.prefix(parent).to_string()
        } else {
            self.prefix_in_scope(parent, &|u| self.is_ovf_uri(u), true)
                .unwrap_or_default()
        }
    }

    /// How this document writes a section named `name` (`AnnotationSection`): the start tag
    /// text up to (not including) `>`, and the end tag. Documents that type their sections
    /// (`<Section xsi:type="ovf:AnnotationSection_Type">`, OVF 0.9 and the draft) get the
    /// same form, copied from an existing typed section.
    pub fn section_tags(&self, parent: usize, name: &str) -> (String, String) {
        let p = self.ovf_elem_prefix(parent);
        let typed = self.tree.nodes.iter().enumerate().find(|(_, n)| {
            n.is_ovf("Section") || (n.is_ovf("Content") && content_kind(n).is_some())
        });
        if let Some((k, _)) = typed {
            let st = self.start_tag(k);
            for a in &st.attrs {
                let local = a.name.rsplit(':').next().unwrap_or("");
                let is_type = (a.name.ends_with(":type") || a.name.ends_with(":name"))
                    && !a.name.starts_with("xmlns")
                    && (local == "type" || local == "name")
                    && self.text(a.value).ends_with("_Type");
                if is_type {
                    let v = self.text(a.value);
                    let vp = match v.find(':') {
                        Some(c) => &v[..=c],
                        None => "",
                    };
                    return (
                        format!("<{p}Section {}=\"{vp}{name}_Type\"", a.name),
                        format!("</{p}Section>"),
                    );
                }
            }
        }
        (format!("<{p}{name}"), format!("</{p}{name}>"))
    }

    /// A new section for content element `content`: `start_attrs` are extra attributes
    /// (already escaped, each with a leading space), `children` the child elements in
    /// order (already built). Indented one level deeper than the content's children.
    pub fn new_section(
        &self,
        content: usize,
        name: &str,
        start_attrs: &str,
        children: &[String],
    ) -> String {
        let (open, close) = self.section_tags(content, name);
        let cb = self.child_break(content);
        let inner = if cb.is_empty() {
            String::new()
        } else {
            format!("{cb}{}", self.indent_unit(content))
        };
        let mut s = format!("{open}{start_attrs}>");
        for c in children {
            s.push_str(&inner);
            s.push_str(c);
        }
        s.push_str(&cb);
        s.push_str(&close);
        s
    }

    /// Inserts a new section into content element `content`: after its last section, else
    /// after `Name`, else after `Info`, else as the first child; `before` names a section to
    /// insert before instead when the content has one (the OperatingSystemSection goes
    /// before the VirtualHardwareSection, as producers write it).
    pub fn insert_section(
        &self,
        content: usize,
        xml: &str,
        before: Option<&str>,
    ) -> Result<Edit, SettingError> {
        if let Some(b) = before
            && let Some(k) = self.section(content, b)
        {
            return Ok(self.insert_before(k, xml));
        }
        let kids = self.children(content);
        let anchor = kids
            .iter()
            .copied()
            .rfind(|&c| section_name(self.node(c)).is_some())
            .or_else(|| self.ovf_child(content, "Name"))
            .or_else(|| self.ovf_child(content, "Info"));
        match anchor {
            Some(a) => Ok(self.insert_after(a, xml)),
            None => match kids.first() {
                Some(&f) => Ok(self.insert_before(f, xml)),
                None => self.append_child(content, xml),
            },
        }
    }
}

/// Scans the start tag beginning at `start` (a `<`) up to `limit`. The document is
/// well-formed (it parsed), so quotes balance.
pub(crate) fn scan_start_tag(b: &[u8], start: usize, limit: usize) -> StartTag {
    let limit = limit.min(b.len());
    let mut i = start.saturating_add(1);
    // The element name.
    while i < limit && !matches!(b[i], b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/') {
        i += 1;
    }
    let mut attr_insert = i;
    let mut attrs = Vec::new();
    loop {
        while i < limit && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        if i >= limit {
            return StartTag {
                close: limit.saturating_sub(1),
                self_closing: false,
                attr_insert,
                attrs,
            };
        }
        match b[i] {
            b'>' => {
                return StartTag {
                    close: i,
                    self_closing: false,
                    attr_insert,
                    attrs,
                };
            }
            b'/' => {
                let mut j = i + 1;
                while j < limit && b[j] != b'>' {
                    j += 1;
                }
                return StartTag {
                    close: j.min(limit.saturating_sub(1)),
                    self_closing: true,
                    attr_insert,
                    attrs,
                };
            }
            _ => {}
        }
        let name_start = i;
        while i < limit && !matches!(b[i], b'=' | b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/') {
            i += 1;
        }
        let name = String::from_utf8_lossy(&b[name_start..i]).into_owned();
        while i < limit && b[i] != b'"' && b[i] != b'\'' && b[i] != b'>' {
            i += 1;
        }
        if i >= limit || b[i] == b'>' {
            continue;
        }
        let quote = b[i];
        let vstart = i + 1;
        let mut j = vstart;
        while j < limit && b[j] != quote {
            j += 1;
        }
        let vend = j.min(limit);
        i = (j + 1).min(limit);
        attr_insert = i;
        attrs.push(RawAttr {
            name,
            whole: Span::new(name_start, i),
            value: Span::new(vstart, vend),
        });
    }
}

/// Escapes element text: `&`, `<`, `>`, carriage returns as a character reference, and line
/// breaks as the document's own (`nl`).
pub(crate) fn escape_text(value: &str, nl: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '\r' => s.push_str("&#13;"),
            '\n' => s.push_str(nl),
            c => s.push(c),
        }
    }
    s
}

/// Escapes an attribute value for either quote, keeping tabs and line breaks exact (as
/// character references, which attribute-value normalisation leaves alone).
pub(crate) fn escape_attr(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&apos;"),
            '\t' => s.push_str("&#9;"),
            '\n' => s.push_str("&#10;"),
            '\r' => s.push_str("&#13;"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn start_tags() {
        let doc = br#"<a x="1" y='>2' ><b/><c z="3" /></a>"#;
        let st = scan_start_tag(doc, 0, doc.len());
        assert_eq!(st.attrs.len(), 2);
        assert_eq!(st.attrs[1].name, "y");
        assert_eq!(&doc[st.attrs[1].value.start..st.attrs[1].value.end], b">2");
        assert_eq!(doc[st.close], b'>');
        assert_eq!(st.close, 16);
        assert!(!st.self_closing);
        assert_eq!(st.attr_insert, 15);
        let st = scan_start_tag(doc, 17, doc.len());
        assert!(st.self_closing);
        assert_eq!(st.attr_insert, 19);
        let st = scan_start_tag(doc, 21, doc.len());
        assert!(st.self_closing);
        assert_eq!(st.attr_insert, 29);
    }

    #[test]
    fn escapes() {
        assert_eq!(
            escape_text("a<b&c>\n\rd", "\r\n"),
            "a&lt;b&amp;c&gt;\r\n&#13;d"
        );
        assert_eq!(escape_attr("a\"b'\n\t"), "a&quot;b&apos;&#10;&#9;");
    }
}
