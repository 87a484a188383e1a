//! Hardware items as one configuration sees them, and edits that change one configuration
//! only (docs/formats.md §2.5, DSP0243 "Item" merging and `ovf:configuration`).
//!
//! Items with the same InstanceID are merged in document order, a later item's children
//! replacing like-named children of earlier ones, among the items that apply to the
//! configuration (no `ovf:configuration`, or a list that names it; `ovf:bound` min/max
//! items are ranges, not settings, and never apply). Unlike the model's merge, this one
//! keeps every child element (vendor children such as `vmw:CoresPerSocket` too) with its
//! tree node, so that an edit knows which item element provides the value.
//!
//! **Editing one configuration.** To change a child for configuration C, the item that
//! provides it in C (the last one that has it) is edited in place when no other
//! configuration takes that child from that item. Otherwise (the item is shared: no
//! `ovf:configuration`, or a list naming other configurations too) a full copy of C's
//! merged item is inserted right after it, with `ovf:configuration="C"` and the new value,
//! and C is taken out of the shared item's list when it is named there. Later items win
//! the merge, so C sees the copy and every other configuration sees exactly what it saw
//! before. The copy's children are the original elements' bytes (prefixes and per-element
//! namespace declarations kept) in schema order. Removing a child for one configuration
//! when it is shared cannot be expressed by merging and is refused.

use std::rc::Rc;

use crate::ovf::edit::Edit;
use crate::ovf::xml::{Node, Ns};
use crate::ovf::{Descriptor, Item, OvfVersion, VirtualHardware, VirtualSystem};

use super::SettingError;
use super::xmlview::{VMW_URI, View, escape_text};

/// CIM ResourceType of a processor.
pub(crate) const RESOURCE_TYPE_PROCESSOR: u16 = 3;
/// CIM ResourceType of memory.
pub(crate) const RESOURCE_TYPE_MEMORY: u16 = 4;
/// CIM ResourceType of an Ethernet adapter.
pub(crate) const RESOURCE_TYPE_ETHERNET: u16 = 10;

/// The CIM ResourceAllocationSettingData namespace.
const RASD_URI: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";

/// The order of rasd children in OVF 0.9 (the CIM 2.x MOF order VMware wrote; 1.x and 2.x
/// use alphabetical order instead).
const RASD_ORDER_0_9: &[&str] = &[
    "Caption",
    "Description",
    "InstanceId",
    "ResourceType",
    "OtherResourceType",
    "ResourceSubType",
    "PoolID",
    "ConsumerVisibility",
    "HostResource",
    "AllocationUnits",
    "VirtualQuantity",
    "Reservation",
    "Limit",
    "Weight",
    "AutomaticAllocation",
    "AutomaticDeallocation",
    "Parent",
    "Connection",
    "Address",
    "MappingBehavior",
    "AddressOnParent",
    "BusNumber",
];

/// Which child an item field is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// A CIM settings child (`rasd:`, `sasd:`, `epasd:`), by local name.
    Cim(String),
    /// VMware's `vmw:` child, by local name.
    Vmw(String),
    /// Any other child, by namespace and local name.
    Other(String),
}

impl Key {
    pub fn cim(name: &str) -> Key {
        Key::Cim(name.to_string())
    }

    fn of(n: &Node) -> Key {
        match n.ns {
            Ns::Rasd | Ns::Sasd | Ns::Epasd => Key::Cim(n.local.clone()),
            Ns::Vmw => Key::Vmw(n.local.clone()),
            ns => Key::Other(format!("{ns:?}:{}", n.local)),
        }
    }
}

/// One child of a merged item.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub key: Key,
    /// Its tree node.
    pub node: usize,
    /// Index of the item element (in [`VirtualHardware::items`]) it comes from.
    pub source: usize,
}

/// An item as one configuration sees it.
#[derive(Debug, Clone)]
pub(crate) struct MergedItem {
    pub iid: String,
    /// Indices of the items merged, in order.
    pub sources: Vec<usize>,
    pub fields: Vec<Field>,
}

impl MergedItem {
    /// The first field with this key.
    pub fn get(&self, key: &Key) -> Option<&Field> {
        self.fields.iter().find(|f| &f.key == key)
    }
}

/// A change to one child of an item.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub key: Key,
    /// The new text, or `None` to remove the child.
    pub value: Option<String>,
}

/// The first hardware section of a system, with the tree node of every item.
pub(crate) struct Hardware<'v, 'd> {
    pub view: &'v View<'d>,
    pub hw: &'d VirtualHardware,
    nodes: Rc<Vec<Option<usize>>>,
}

impl<'v, 'd> Hardware<'v, 'd> {
    /// The tree node of every item of `sys`'s first hardware section.
    pub fn item_nodes(view: &View<'d>, sys: &'d VirtualSystem) -> Vec<Option<usize>> {
        sys.hardware
            .first()
            .map(|hw| hw.items.iter().map(|i| view.find(i.element)).collect())
            .unwrap_or_default()
    }

    /// The hardware of `sys` with its item nodes (from [`Hardware::item_nodes`]), if it has a
    /// VirtualHardwareSection.
    pub fn with_nodes(
        view: &'v View<'d>,
        sys: &'d VirtualSystem,
        nodes: Rc<Vec<Option<usize>>>,
    ) -> Option<Hardware<'v, 'd>> {
        let hw = sys.hardware.first()?;
        Some(Hardware { view, hw, nodes })
    }

    fn item(&self, i: usize) -> Option<&'d Item> {
        self.hw.items.get(i)
    }

    fn iid(&self, i: usize) -> Option<&'d str> {
        self.item(i)?.instance_id().map(|s| s.value.as_str())
    }

    fn fields_of(&self, i: usize) -> Vec<(Key, usize)> {
        let Some(Some(node)) = self.nodes.get(i) else {
            return Vec::new();
        };
        self.view
            .node(*node)
            .children
            .iter()
            .map(|&c| (Key::of(self.view.node(c)), c))
            .collect()
    }

    /// The merged items of configuration `config`, in order of first appearance.
    pub fn effective(&self, config: Option<&str>) -> Vec<MergedItem> {
        let mut out: Vec<MergedItem> = Vec::new();
        let mut by_id: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, item) in self.hw.items.iter().enumerate() {
            if !item.applies_to(config) {
                continue;
            }
            let Some(iid) = self.iid(i) else { continue };
            let fields = self.fields_of(i);
            match by_id.get(iid).and_then(|&j| out.get_mut(j)) {
                Some(e) => {
                    e.fields
                        .retain(|f| !fields.iter().any(|(k, _)| k == &f.key));
                    e.fields.extend(fields.into_iter().map(|(key, node)| Field {
                        key,
                        node,
                        source: i,
                    }));
                    e.sources.push(i);
                }
                None => {
                    by_id.insert(iid, out.len());
                    out.push(MergedItem {
                        iid: iid.to_string(),
                        sources: vec![i],
                        fields: fields
                            .into_iter()
                            .map(|(key, node)| Field {
                                key,
                                node,
                                source: i,
                            })
                            .collect(),
                    });
                }
            }
        }
        out
    }

    /// The text of a field.
    pub fn text(&self, f: &Field) -> &str {
        &self.view.node(f.node).text.value
    }

    /// The text of the first field with this key.
    pub fn get_text(&self, e: &MergedItem, key: &Key) -> Option<&str> {
        e.get(key).map(|f| self.text(f))
    }

    /// The ResourceType of a merged item.
    pub fn resource_type(&self, e: &MergedItem) -> Option<u16> {
        self.get_text(e, &Key::cim("ResourceType"))?
            .trim()
            .parse()
            .ok()
    }

    /// The merged items of `config` with this ResourceType.
    pub fn of_type(&self, config: Option<&str>, rt: u16) -> Vec<MergedItem> {
        self.effective(config)
            .into_iter()
            .filter(|e| self.resource_type(e) == Some(rt))
            .collect()
    }

    /// Every configuration id (or `None` alone when the descriptor has none).
    fn all_configs(desc: &Descriptor) -> Vec<Option<&str>> {
        if desc.configurations.is_empty() {
            vec![None]
        } else {
            desc.configurations
                .iter()
                .map(|c| Some(c.id.value.as_str()))
                .collect()
        }
    }

    /// Whether item `j` has a child with this key.
    fn has_key(&self, j: usize, key: &Key) -> bool {
        self.fields_of(j).iter().any(|(k, _)| k == key)
    }

    /// The configurations whose value of `key` in item `iid` comes from item `s` (or would,
    /// once `s` has it).
    fn takers(&self, desc: &Descriptor, s: usize, iid: &str, key: &Key) -> Vec<Option<String>> {
        let Some(item) = self.item(s) else {
            return Vec::new();
        };
        // Later items of the same InstanceID that have this child hide `s` from the
        // configurations they apply to.
        let hiders: Vec<&Item> = (s + 1..self.hw.items.len())
            .filter(|&j| self.iid(j) == Some(iid) && self.has_key(j, key))
            .filter_map(|j| self.item(j))
            .collect();
        Self::all_configs(desc)
            .into_iter()
            .filter(|&c| item.applies_to(c) && !hiders.iter().any(|h| h.applies_to(c)))
            .map(|c| c.map(str::to_string))
            .collect()
    }

    /// Edits that apply `changes` to merged item `e` in configuration `config` and in no
    /// other configuration.
    pub fn edit(
        &self,
        config: Option<&str>,
        e: &MergedItem,
        changes: &[Change],
    ) -> Result<Vec<Edit>, SettingError> {
        let desc = self.view.desc;
        let last = *e
            .sources
            .last()
            .ok_or_else(|| SettingError::Internal("merged item without a source".into()))?;
        let mut in_place = true;
        let mut anchor = 0usize;
        let mut shared_with: Vec<String> = Vec::new();
        for ch in changes {
            let provider = e.get(&ch.key).map(|f| f.source).unwrap_or(last);
            anchor = anchor.max(provider);
            let takers = self.takers(desc, provider, &e.iid, &ch.key);
            let others: Vec<String> = takers
                .iter()
                .filter(|c| c.as_deref() != config)
                .map(|c| c.clone().unwrap_or_default())
                .collect();
            if !others.is_empty() {
                in_place = false;
                shared_with.extend(others);
            }
            if ch.value.is_none() {
                let providers = e
                    .sources
                    .iter()
                    .filter(|&&s| self.has_key(s, &ch.key))
                    .count();
                if providers > 1 || !others_is_empty(&takers, config) {
                    shared_with.sort();
                    shared_with.dedup();
                    return Err(super::unsupported(format!(
                        "it cannot be removed for this configuration alone: the item that \
                         holds it also serves {}",
                        if shared_with.is_empty() {
                            "an earlier item of the same InstanceID".to_string()
                        } else {
                            shared_with.join(", ")
                        }
                    )));
                }
            }
        }
        if in_place {
            let mut edits = Vec::new();
            for ch in changes {
                match (e.get(&ch.key), &ch.value) {
                    (Some(f), Some(v)) => edits.push(self.view.set_text(f.node, v)),
                    (Some(f), None) => {
                        for g in e.fields.iter().filter(|g| g.key == f.key) {
                            edits.push(self.view.remove(g.node));
                        }
                    }
                    (None, Some(v)) => {
                        let node = self.node_of(last)?;
                        let xml = self.new_field(node, &ch.key, v);
                        let rank = self.rank(&ch.key);
                        edits.push(self.view.insert_child_ordered(node, &xml, &|c| {
                            self.rank(&Key::of(self.view.node(c))) > rank
                        })?);
                    }
                    (None, None) => {}
                }
            }
            return Ok(edits);
        }
        let Some(config) = config else {
            return Err(SettingError::Internal(
                "a shared item without configurations".into(),
            ));
        };
        self.split(config, e, changes, anchor)
    }

    fn node_of(&self, i: usize) -> Result<usize, SettingError> {
        self.nodes
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| SettingError::Internal("item element not in the tree".into()))
    }

    /// Schema rank of a child: CIM children in the version's order, then everything else.
    fn rank(&self, key: &Key) -> (u8, usize, String) {
        match key {
            Key::Cim(name) => {
                if self.view.desc.version == OvfVersion::V0_9 {
                    let i = RASD_ORDER_0_9
                        .iter()
                        .position(|n| n == name)
                        .unwrap_or(RASD_ORDER_0_9.len());
                    (0, i, name.clone())
                } else {
                    (0, 0, name.to_ascii_lowercase())
                }
            }
            _ => (1, 0, String::new()),
        }
    }

    /// A new child element for item element `item`: CIM children copy the prefix and the
    /// namespace declarations of a CIM sibling; `vmw:` children get VMware's
    /// `ovf:required="false"`.
    fn new_field(&self, item: usize, key: &Key, value: &str) -> String {
        let v = self.view;
        let text = escape_text(value, v.nl);
        match key {
            Key::Cim(local) => {
                let sibling = v
                    .node(item)
                    .children
                    .iter()
                    .copied()
                    .find(|&c| matches!(Key::of(v.node(c)), Key::Cim(_)));
                match sibling {
                    Some(s) => v.element_like(s, local, value),
                    None => {
                        format!("<rasd:{local} xmlns:rasd=\"{RASD_URI}\">{text}</rasd:{local}>")
                    }
                }
            }
            Key::Vmw(local) => {
                let (prefix, decl) = match v.prefix_in_scope(item, &|u| u == VMW_URI, false) {
                    Some(p) => (p, String::new()),
                    None => ("vmw:".to_string(), format!(" xmlns:vmw=\"{VMW_URI}\"")),
                };
                let (req, req_decl) = v.ovf_attr_name(item, "required");
                format!("<{prefix}{local}{decl}{req_decl} {req}=\"false\">{text}</{prefix}{local}>")
            }
            Key::Other(_) => String::new(),
        }
    }

    /// Inserts a copy of `e` for `config` alone after item `anchor` (see the module doc).
    fn split(
        &self,
        config: &str,
        e: &MergedItem,
        changes: &[Change],
        anchor: usize,
    ) -> Result<Vec<Edit>, SettingError> {
        let v = self.view;
        let a_node = self.node_of(anchor)?;
        let a_item = self
            .item(anchor)
            .ok_or_else(|| SettingError::Internal("anchor item missing".into()))?;
        let mut edits = Vec::new();

        // The copy's start tag: the anchor's, with ovf:configuration="config".
        let tag_start = v.node(a_node).span.start;
        let st = v.start_tag(a_node);
        let mut tag = v
            .text(crate::ovf::Span::new(tag_start, st.close))
            .to_string();
        let conf = crate::ovf::edit::escape_attr(config).into_owned();
        match &a_item.configurations {
            Some(list) => {
                let range = list.span.start.checked_sub(tag_start).and_then(|s| {
                    let t = list.span.end.checked_sub(tag_start)?;
                    tag.get(s..t).map(|_| s..t)
                });
                let range = range.ok_or_else(|| {
                    SettingError::Internal("ovf:configuration outside its start tag".into())
                })?;
                tag.replace_range(range, &conf);
                // Take `config` out of the shared item's list.
                if list.value.iter().any(|c| c == config) {
                    let rest: Vec<&str> = list
                        .value
                        .iter()
                        .map(String::as_str)
                        .filter(|c| *c != config)
                        .collect();
                    edits.push(Edit {
                        span: list.span,
                        replacement: super::xmlview::escape_attr(&rest.join(" ")),
                    });
                }
            }
            None => {
                let (name, decl) = v.ovf_attr_name(a_node, "configuration");
                let at = st
                    .attr_insert
                    .checked_sub(tag_start)
                    .filter(|&at| tag.is_char_boundary(at))
                    .ok_or_else(|| SettingError::Internal("start tag out of place".into()))?;
                tag.insert_str(at, &format!("{decl} {name}=\"{conf}\""));
            }
        }
        let tag = tag.trim_end_matches('/').trim_end().to_string();

        // Its children: the merged fields with the changes, in schema order.
        let mut parts: Vec<(Key, String)> = Vec::new();
        for f in &e.fields {
            let ch = changes.iter().find(|c| c.key == f.key);
            let raw = v.text(v.node(f.node).span).to_string();
            match ch {
                None => parts.push((f.key.clone(), raw)),
                Some(Change { value: None, .. }) => {}
                Some(Change {
                    value: Some(val), ..
                }) => {
                    // Only the first of repeated children (Connection) takes the value.
                    if parts.iter().any(|(k, _)| k == &f.key) {
                        parts.push((f.key.clone(), raw));
                        continue;
                    }
                    parts.push((f.key.clone(), self.with_text(f.node, val)));
                }
            }
        }
        for ch in changes {
            if let Some(val) = &ch.value
                && e.get(&ch.key).is_none()
            {
                parts.push((ch.key.clone(), self.new_field(a_node, &ch.key, val)));
            }
        }
        parts.sort_by_key(|(k, _)| self.rank(k));

        let cb = v.child_break(a_node);
        let ob = v.own_break(a_node);
        let mut xml = format!("{tag}>");
        for (_, p) in &parts {
            xml.push_str(&cb);
            xml.push_str(p);
        }
        xml.push_str(&ob);
        xml.push_str(&format!("</{}>", v.qname(a_node)));
        edits.push(v.insert_after(a_node, &xml));
        Ok(edits)
    }

    /// The element of `node` as written, with its text replaced by `value`.
    fn with_text(&self, node: usize, value: &str) -> String {
        let v = self.view;
        let n = v.node(node);
        let st = v.start_tag(node);
        let text = escape_text(value, v.nl);
        let start = v.text(crate::ovf::Span::new(n.span.start, st.close));
        if st.self_closing {
            let start = start.trim_end_matches('/').trim_end();
            format!("{start}>{text}</{}>", v.qname(node))
        } else {
            format!("{start}>{text}</{}>", v.qname(node))
        }
    }
}

fn others_is_empty(takers: &[Option<String>], config: Option<&str>) -> bool {
    takers.iter().all(|c| c.as_deref() == config)
}
