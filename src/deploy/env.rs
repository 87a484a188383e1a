//! The OVF environment document, `ovf-env.xml` (DSP0243 2.1 §11.1 "Environment document",
//! schema DSP8027 `http://schemas.dmtf.org/ovf/environment/1`; ISO/IEC 17203).
//!
//! What the spec asks and what ovafs writes:
//! - Root `Environment` in the environment namespace (default namespace and prefix `oe`, the
//!   prefix VMware writes; the spec's examples use `ovfenv`, any prefix bound to the namespace
//!   is the same attribute), `oe:id` = the `ovf:id` of the content described.
//! - `PlatformSection` (optional, "experimental" in the spec): `Kind` `ovafs`, `Version` the
//!   crate version, `Vendor` `ovafs`, `Locale` `en`, as VMware writes Kind/Version/Vendor/Locale.
//!   `TimeZone` is left out: ovafs cannot know the host the guest will run on.
//! - `PropertySection` with one `<Property oe:key="FULLKEY" oe:value="VALUE"/>` per property:
//!   the content's own properties (descriptor order), then those of the immediate parent
//!   VirtualSystemCollection that the content does not override (same `ovf:class`, `ovf:key`,
//!   `ovf:instance`, i.e. the same full key: "the overridden property shall not be in the
//!   list"). The value is the one of the deployment configuration in effect
//!   ([`Property::value_for`]); a property with no value at all gets `oe:value=""` (the
//!   attribute is required by the schema, and a guest then sees the key as set and empty, as
//!   deployers do for an unset property). A property whose `ovf:configuration` names other
//!   configurations only is left out. A second property with the same full key is left out
//!   (keys are unique per the spec; the first one is what the settings folder shows). The
//!   section is written even when empty: cloud-init's parser refuses a document without one.
//! - `Entity oe:id="ID"` elements, each holding the `PropertySection` that content sees: for a
//!   VirtualSystem one per *sibling* (other members of the same parent collection), as the spec
//!   says; for a VirtualSystemCollection (whose environment the spec does not define: it has no
//!   guest) one per *child*, so a tool can read what every member will see.
//!
//! Escaping: every name and value goes into a double-quoted attribute with `&`, `<`, `>`, `"`
//! and `'` as entities and tab, newline and carriage return as character references (`&#9;`,
//! `&#10;`, `&#13;`; written raw, a parser would normalise them to spaces). Characters XML 1.0
//! cannot carry at all (other C0 controls, U+FFFE, U+FFFF) make the document fail with
//! [`DeployError::Unusable`] naming the property: dropping them would hand the guest a value
//! other than the one configured.
//!
//! Byte-stable: a pure function of the descriptor and the configuration; no time, no host data.

use std::collections::HashSet;

use super::{DeployError, Target};
use crate::ovf::Descriptor;
use crate::ovf::model::Property;
use crate::settings::Owner;

/// The environment namespace (DSP8027).
pub const ENV_NS: &str = "http://schemas.dmtf.org/ovf/environment/1";
/// The XML Schema instance namespace (declared as VMware does).
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The file this module writes, for error messages.
const FILE: &str = "ovf-env.xml";

/// The `ovf-env.xml` of `t`.
pub fn environment_xml(t: &Target<'_>) -> Result<String, DeployError> {
    let desc = t.desc;
    let node = Node::of(desc, t.owner).ok_or_else(|| DeployError::NoContent(t.folder.into()))?;
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<Environment xmlns=\"{ENV_NS}\" xmlns:oe=\"{ENV_NS}\" xmlns:xsi=\"{XSI_NS}\" oe:id=\"{}\">\n",
        attr(node.id, "the content's ovf:id")?
    ));
    platform_section(&mut out);
    property_section(&mut out, desc, node, t.configuration, "  ")?;
    let entities = match t.owner {
        Owner::System(_) => siblings(desc, node),
        Owner::Collection(_) => children(desc, node),
    };
    for e in entities {
        out.push_str(&format!(
            "  <Entity oe:id=\"{}\">\n",
            attr(e.id, "an Entity's ovf:id")?
        ));
        property_section(&mut out, desc, e, t.configuration, "    ")?;
        out.push_str("  </Entity>\n");
    }
    out.push_str("</Environment>\n");
    Ok(out)
}

/// The PlatformSection: who deployed (DSP0243 §11.1 Table "PlatformSection").
fn platform_section(out: &mut String) {
    out.push_str("  <PlatformSection>\n");
    out.push_str("    <Kind>ovafs</Kind>\n");
    out.push_str(&format!(
        "    <Version>{}</Version>\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str("    <Vendor>ovafs</Vendor>\n");
    out.push_str("    <Locale>en</Locale>\n");
    out.push_str("  </PlatformSection>\n");
}

/// The PropertySection `node` sees, indented by `indent`.
fn property_section(
    out: &mut String,
    desc: &Descriptor,
    node: Node<'_>,
    config: Option<&str>,
    indent: &str,
) -> Result<(), DeployError> {
    let props = seen_properties(desc, node, config);
    if props.is_empty() {
        out.push_str(&format!("{indent}<PropertySection/>\n"));
        return Ok(());
    }
    out.push_str(&format!("{indent}<PropertySection>\n"));
    for (key, p) in props {
        let what = format!("property {}", key.escape_debug());
        let value = p.value_for(config).map(|v| v.value.as_str()).unwrap_or("");
        out.push_str(&format!(
            "{indent}  <Property oe:key=\"{}\" oe:value=\"{}\"/>\n",
            attr(&key, &what)?,
            attr(value, &what)?
        ));
    }
    out.push_str(&format!("{indent}</PropertySection>\n"));
    Ok(())
}

/// The properties `node` sees, with their full keys: its own in descriptor order (first of
/// each key), then its immediate parent's not overridden.
fn seen_properties<'d>(
    desc: &'d Descriptor,
    node: Node<'d>,
    config: Option<&str>,
) -> Vec<(String, &'d Property)> {
    let mut out: Vec<(String, &Property)> = Vec::new();
    // Keys already listed: a set, since a hostile descriptor may hold many thousands.
    let mut seen: HashSet<String> = HashSet::new();
    let parent = parent(desc, node);
    let inherited = parent.map(|p| p.properties).unwrap_or(&[]);
    for p in node.properties.iter().chain(inherited) {
        if !in_configuration(p, config) {
            continue;
        }
        let key = p.full_key();
        if seen.insert(key.clone()) {
            out.push((key, p));
        }
    }
    out
}

/// Whether `p` exists in `config`: a Property with `ovf:configuration` exists only in the
/// configurations it lists (DSP0243 §9.8); without configurations everything exists.
fn in_configuration(p: &Property, config: Option<&str>) -> bool {
    match (&p.configurations, config) {
        (Some(list), Some(c)) => list.value.iter().any(|x| x == c),
        _ => true,
    }
}

/// A VirtualSystem or VirtualSystemCollection, with what this module needs of it.
#[derive(Clone, Copy)]
struct Node<'d> {
    id: &'d str,
    /// Ids of the enclosing collections, outermost first.
    path: &'d [String],
    properties: &'d [Property],
    /// Start of its element: document order.
    start: usize,
}

impl<'d> Node<'d> {
    fn of(desc: &'d Descriptor, owner: Owner) -> Option<Node<'d>> {
        match owner {
            Owner::System(i) => desc.systems.get(i).map(|s| Node {
                id: &s.id.value,
                path: &s.path,
                properties: &s.properties,
                start: s.element.start,
            }),
            Owner::Collection(i) => desc.collections.get(i).map(|c| Node {
                id: &c.id.value,
                path: &c.path,
                properties: &c.properties,
                start: c.element.start,
            }),
        }
    }

    /// Whether `self` is a direct member of the collection `c`: its enclosing path is `c`'s
    /// path plus `c`'s id (ids alone may repeat in a hostile descriptor).
    fn is_child_of(&self, c: &Node<'_>) -> bool {
        self.path
            .split_last()
            .is_some_and(|(last, head)| last == c.id && head == c.path)
    }
}

/// Every content of `desc`, in document order.
fn all_nodes(desc: &Descriptor) -> Vec<Node<'_>> {
    let mut v: Vec<Node<'_>> = (0..desc.systems.len())
        .map(Owner::System)
        .chain((0..desc.collections.len()).map(Owner::Collection))
        .filter_map(|o| Node::of(desc, o))
        .collect();
    v.sort_by_key(|n| n.start);
    v
}

/// The collection directly enclosing `node`, if any.
fn parent<'d>(desc: &'d Descriptor, node: Node<'d>) -> Option<Node<'d>> {
    desc.collections
        .iter()
        .enumerate()
        .filter_map(|(i, _)| Node::of(desc, Owner::Collection(i)))
        .find(|c| node.is_child_of(c))
}

/// The direct members of the collection `node`, in document order.
fn children<'d>(desc: &'d Descriptor, node: Node<'d>) -> Vec<Node<'d>> {
    all_nodes(desc)
        .into_iter()
        .filter(|n| n.is_child_of(&node))
        .collect()
}

/// The other members of `node`'s parent collection, in document order.
fn siblings<'d>(desc: &'d Descriptor, node: Node<'d>) -> Vec<Node<'d>> {
    match parent(desc, node) {
        Some(p) => children(desc, p)
            .into_iter()
            .filter(|n| n.start != node.start)
            .collect(),
        None => Vec::new(),
    }
}

/// `s` escaped for a double-quoted XML 1.0 attribute value; `what` names it in the error
/// when it holds a character XML 1.0 cannot carry.
pub(crate) fn attr(s: &str, what: &str) -> Result<String, DeployError> {
    super::xml::escape(s, FILE, what)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NS: &str = r#"xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1""#;

    fn vs(id: &str, props: &str) -> String {
        format!(
            "<VirtualSystem ovf:id=\"{id}\"><Info>x</Info>\
             <ProductSection ovf:class=\"app\"><Info>p</Info>{props}</ProductSection>\
             <VirtualHardwareSection><Info>hw</Info></VirtualHardwareSection></VirtualSystem>"
        )
    }

    fn doc(body: &str) -> Descriptor {
        let d = format!("<?xml version=\"1.0\"?><Envelope {NS}>{body}</Envelope>");
        crate::ovf::parse(d.as_bytes()).unwrap()
    }

    fn env_of(desc: &Descriptor, owner: Owner, config: Option<&str>) -> String {
        let t = Target {
            desc,
            owner,
            folder: "x",
            configuration: config,
        };
        environment_xml(&t).unwrap()
    }

    const OPTIONS: &str = "<DeploymentOptionSection><Info>c</Info>\
        <Configuration ovf:id=\"small\" ovf:default=\"true\"><Label>s</Label><Description>s</Description></Configuration>\
        <Configuration ovf:id=\"big\"><Label>b</Label><Description>b</Description></Configuration>\
        </DeploymentOptionSection>";

    #[test]
    fn one_system_with_configurations() {
        let props = "<Property ovf:key=\"hostname\" ovf:type=\"string\" ovf:value=\"h1\"/>\
            <Property ovf:key=\"size\" ovf:type=\"string\" ovf:value=\"m\">\
              <Value ovf:value=\"xl\" ovf:configuration=\"big\"/></Property>\
            <Property ovf:key=\"only-big\" ovf:type=\"string\" ovf:value=\"1\" ovf:configuration=\"big\"/>\
            <Property ovf:key=\"unset\" ovf:type=\"string\"/>\
            <Property ovf:key=\"odd\" ovf:type=\"string\" ovf:value=\"a&lt;b&amp;&quot;c&#10;d\"/>";
        let d = doc(&format!("{OPTIONS}{}", vs("vm1", props)));
        let small = env_of(&d, Owner::System(0), Some("small"));
        let head = format!(
            "<Environment xmlns=\"{ENV_NS}\" xmlns:oe=\"{ENV_NS}\" xmlns:xsi=\"{XSI_NS}\" oe:id=\"vm1\">"
        );
        let version = format!("    <Version>{}</Version>", env!("CARGO_PKG_VERSION"));
        let lines = [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            &head,
            "  <PlatformSection>",
            "    <Kind>ovafs</Kind>",
            &version,
            "    <Vendor>ovafs</Vendor>",
            "    <Locale>en</Locale>",
            "  </PlatformSection>",
            "  <PropertySection>",
            "    <Property oe:key=\"app.hostname\" oe:value=\"h1\"/>",
            "    <Property oe:key=\"app.size\" oe:value=\"m\"/>",
            "    <Property oe:key=\"app.unset\" oe:value=\"\"/>",
            "    <Property oe:key=\"app.odd\" oe:value=\"a&lt;b&amp;&quot;c&#10;d\"/>",
            "  </PropertySection>",
            "</Environment>",
            "",
        ];
        let expected = lines.join("\n");
        assert_eq!(small, expected);
        let big = env_of(&d, Owner::System(0), Some("big"));
        assert!(big.contains("oe:key=\"app.size\" oe:value=\"xl\""), "{big}");
        assert!(
            big.contains("oe:key=\"app.only-big\" oe:value=\"1\""),
            "{big}"
        );
        assert_eq!(big, env_of(&d, Owner::System(0), Some("big")));
    }

    #[test]
    fn collection_members_see_parent_and_siblings() {
        let body = format!(
            "<VirtualSystemCollection ovf:id=\"app\"><Info>c</Info>\
             <ProductSection><Info>p</Info>\
               <Property ovf:key=\"domain\" ovf:type=\"string\" ovf:value=\"example.org\"/>\
               <Property ovf:key=\"role\" ovf:type=\"string\" ovf:value=\"none\"/>\
             </ProductSection>{}{}</VirtualSystemCollection>",
            "<VirtualSystem ovf:id=\"web\"><Info>x</Info><ProductSection><Info>p</Info>\
               <Property ovf:key=\"role\" ovf:type=\"string\" ovf:value=\"web\"/></ProductSection>\
               <VirtualHardwareSection><Info>hw</Info></VirtualHardwareSection></VirtualSystem>",
            "<VirtualSystem ovf:id=\"db\"><Info>x</Info><ProductSection><Info>p</Info>\
               <Property ovf:key=\"port\" ovf:type=\"uint16\" ovf:value=\"5432\"/></ProductSection>\
               <VirtualHardwareSection><Info>hw</Info></VirtualHardwareSection></VirtualSystem>"
        );
        let d = doc(&body);
        let web = d.systems.iter().position(|s| s.id.value == "web").unwrap();
        let e = env_of(&d, Owner::System(web), None);
        // Own property overrides the collection's `role`; the collection's `domain` is seen;
        // the sibling `db` is an Entity with what db sees (its port, the collection's two).
        let section = "  <PropertySection>\n    <Property oe:key=\"role\" oe:value=\"web\"/>\n    \
<Property oe:key=\"domain\" oe:value=\"example.org\"/>\n  </PropertySection>\n";
        assert!(e.contains(section), "{e}");
        let entity = "  <Entity oe:id=\"db\">\n    <PropertySection>\n      \
<Property oe:key=\"port\" oe:value=\"5432\"/>\n      \
<Property oe:key=\"domain\" oe:value=\"example.org\"/>\n      \
<Property oe:key=\"role\" oe:value=\"none\"/>\n    </PropertySection>\n  </Entity>\n";
        assert!(e.contains(entity), "{e}");
        assert!(
            !e.contains("oe:id=\"web\">\n    <"),
            "no Entity for itself: {e}"
        );
        // The collection: its own properties, one Entity per child in document order.
        let c = env_of(&d, Owner::Collection(0), None);
        assert!(c.contains("oe:id=\"app\">"), "{c}");
        let w = c.find("<Entity oe:id=\"web\">").unwrap();
        let b = c.find("<Entity oe:id=\"db\">").unwrap();
        assert!(w < b, "{c}");
    }

    #[test]
    fn system_without_properties_has_an_empty_section() {
        let d = doc(&vs("vm", ""));
        let e = env_of(&d, Owner::System(0), None);
        assert!(e.contains("  <PropertySection/>\n"), "{e}");
        assert!(!e.contains("<Entity"), "{e}");
    }

    #[test]
    fn a_value_xml_cannot_carry_fails_the_document() {
        let props = "<Property ovf:key=\"bell\" ovf:type=\"string\" ovf:value=\"a&#7;b\"/>";
        let d = doc(&vs("vm", props));
        // The descriptor parser decodes the reference (XML 1.0 forbids it; it is lenient).
        assert_eq!(
            d.systems[0].properties[0].value.as_ref().unwrap().value,
            "a\u{7}b"
        );
        let t = Target {
            desc: &d,
            owner: Owner::System(0),
            folder: "vm",
            configuration: None,
        };
        let e = environment_xml(&t).unwrap_err();
        assert!(e.to_string().contains("app.bell"), "{e}");
        assert!(e.to_string().contains("U+0007"), "{e}");
    }
}
