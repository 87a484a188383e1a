//! Settings files: an appliance's hardware and product settings as small text files
//! (issue 4), from a parsed [`Descriptor`] to file values and validated [`Edit`]s.
//!
//! Pure logic: no FUSE, no file writing. The FUSE layer lists [`tree`] (or [`read_all`] for
//! the values too), answers reads with [`read`], and turns a saved file into [`write()`] edits
//! (or [`mkdir`]/[`rmdir`] for networks); each comes with the edited descriptor, already
//! spliced ([`crate::ovf::splice()`]) and parsed ([`Edited`]), which the editor commits. A
//! new descriptor written whole goes through [`check_replacement`]. Every function takes the descriptor as it is now and never
//! panics; errors are [`SettingError`]s whose messages are meant for the user's log.
//!
//! One static table (`table::SETTINGS`) lists every setting with its path, its
//! documentation, its reader and its writer; the same table generates the man page section
//! ([`man_section`]), and a test checks that `man/ovafs.1` carries it verbatim (set
//! `OVAFS_REGENERATE_MAN=1` when running that test to rewrite the section).
//!
//! The tree (paths relative to the mount's settings root):
//! - `vms/ID/` for every VirtualSystem and VirtualSystemCollection, nested collections
//!   flattened (every content element has a unique `ovf:id` in practice; duplicates get
//!   `~2`, `~3`). `ID` is the `ovf:id` made safe as a file name: `%` and `/` are written
//!   `%25` and `%2F`, NUL `%00`, `.` and `..` become `%2E` and `%2E%2E`, the empty id `%00`,
//!   and names are cut to 240 bytes. `vm` is a symbolic link to `vms/ID` when there is
//!   exactly one VirtualSystem.
//! - Settings of the default deployment configuration in `vms/ID/`; per-configuration ones
//!   (`cpus`, `cores_per_socket`, `memory`, `nics/N/*`, `properties/KEY`) in
//!   `vms/ID/configs/CONFIG/`. A hardware item shared by several configurations is copied
//!   for the one edited, so the others do not change (see `hw`). A property's top-level
//!   file is its default value (`ovf:value`), which every configuration without a `Value`
//!   of its own uses (that is what COT and most tools read and write); the file under
//!   `configs/CONFIG/` is the value in that configuration, kept in a `Value` element.
//! - `networks/NAME/description` for every Network; `mkdir networks/NAME` adds a Network
//!   (and the NetworkSection when there is none), `rmdir` removes one that no adapter uses
//!   in any configuration.
//! - Password properties read like the others (the descriptor holds them in clear text
//!   anyway); [`Entry::secret`] tells the FUSE layer to give them mode 0600.
//!
//! Every write is checked after the fact: the edits are spliced, the result re-parsed (one
//! XML parse gives both the model and the tree the read-back uses) and the setting read
//! back; a mismatch is refused as [`SettingError::Internal`] instead of being written.
//! Writing a file's own content back is never an edit.

mod disk_file;
pub(crate) mod hw;
mod os_types;
mod props;
mod table;
mod values;
pub(crate) mod vbox;
pub(crate) mod xmlview;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use crate::ovf::{self, Descriptor, Edit, VirtualSystem};

pub use disk_file::{DiskImageUpdate, update_disk_image};
pub use table::man_section;
use table::{Place, SETTINGS, Setting};
use xmlview::View;

/// One entry of the settings tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the settings root, `/`-separated (`vms/vm1/cpus`).
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Whether the file holds a secret (a password property): the FUSE layer should give it
    /// mode 0600.
    pub secret: bool,
}

/// File, folder or symbolic link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A settings file.
    File,
    /// A folder.
    Dir,
    /// A symbolic link with this (relative) target.
    Symlink(String),
}

/// Why a setting cannot be read or written. The messages are for the user (the FUSE layer
/// logs them and answers EINVAL, or ENOENT for [`SettingError::NotFound`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingError {
    /// No such settings file or folder.
    #[error("{path}: no such setting")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The value is not one the descriptor can take.
    #[error("{setting}: {value:?} refused: {reason}")]
    Invalid {
        /// The settings path.
        setting: String,
        /// The value (at most 100 characters).
        value: String,
        /// Why.
        reason: String,
    },
    /// The descriptor has nothing this setting could change (no processor item, ...).
    #[error("{setting}: {reason}")]
    Unsupported {
        /// The settings path.
        setting: String,
        /// Why.
        reason: String,
    },
    /// The new content is not UTF-8 text.
    #[error("{setting}: the new value is not UTF-8 text")]
    NotUtf8 {
        /// The settings path.
        setting: String,
    },
    /// `mkdir` of a network that exists.
    #[error("network {name:?} already exists")]
    Exists {
        /// The network name.
        name: String,
    },
    /// `rmdir` of a network an adapter is connected to.
    #[error("network {name:?} is still used by {user}; connect it elsewhere first")]
    InUse {
        /// The network name.
        name: String,
        /// Which adapter uses it.
        user: String,
    },
    /// A replacement descriptor that does not parse or breaks a descriptor rule.
    #[error("the new descriptor is refused: {0}")]
    Descriptor(String),
    /// A replacement descriptor naming a file the package does not hold.
    #[error("the new descriptor refers to file {href:?}, which the package does not hold")]
    MissingMember {
        /// The href.
        href: String,
    },
    /// A bug: the edit did not read back as written. Nothing is written.
    #[error("internal error, nothing written: {0}")]
    Internal(String),
}

impl SettingError {
    /// Fills in the setting path and value of a writer's error.
    fn at(self, path: &str, value: &str) -> SettingError {
        match self {
            SettingError::Invalid {
                setting,
                value: v,
                reason,
            } => SettingError::Invalid {
                setting: if setting.is_empty() {
                    path.to_string()
                } else {
                    setting
                },
                value: if v.is_empty() {
                    value.chars().take(100).collect()
                } else {
                    v
                },
                reason,
            },
            SettingError::Unsupported { setting, reason } => SettingError::Unsupported {
                setting: if setting.is_empty() {
                    path.to_string()
                } else {
                    setting
                },
                reason,
            },
            SettingError::NotUtf8 { .. } => SettingError::NotUtf8 {
                setting: path.to_string(),
            },
            e => e,
        }
    }
}

/// A writer's refusal of a value (the path and value are filled in by [`write`]).
pub(crate) fn invalid(reason: impl Into<String>) -> SettingError {
    SettingError::Invalid {
        setting: String::new(),
        value: String::new(),
        reason: reason.into(),
    }
}

/// A writer's "this descriptor has nothing to change".
pub(crate) fn unsupported(reason: impl Into<String>) -> SettingError {
    SettingError::Unsupported {
        setting: String::new(),
        reason: reason.into(),
    }
}

/// What a writer returns: the edits, and what the setting reads as afterwards.
#[derive(Debug)]
pub(crate) struct Applied {
    pub edits: Vec<Edit>,
    pub expect: String,
}

impl Applied {
    /// These edits, after which the setting reads `expect`.
    pub fn new(edits: Vec<Edit>, expect: impl Into<String>) -> Applied {
        Applied {
            edits,
            expect: expect.into(),
        }
    }

    /// No change.
    pub fn none(expect: impl Into<String>) -> Applied {
        Applied::new(Vec::new(), expect)
    }
}

/// A VirtualSystem or a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// Index in [`Descriptor::systems`].
    System(usize),
    /// Index in [`Descriptor::collections`].
    Collection(usize),
}

/// What a settings path points at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub owner: Owner,
    /// Index in [`Descriptor::configurations`] inside `configs/CONFIG/`; `None` at the top.
    pub config: Option<usize>,
    /// Adapter number (`nics/N`).
    pub nic: usize,
    /// Index in the owner's properties.
    pub prop: usize,
    /// Index in [`Descriptor::networks`].
    pub network: usize,
}

impl Target {
    fn new(owner: Owner) -> Target {
        Target {
            owner,
            config: None,
            nic: 0,
            prop: 0,
            network: 0,
        }
    }
}

/// (system, configuration, ResourceType) of a memoised list of merged items.
type TypedKey = (usize, Option<String>, u16);

/// Everything a reader or writer needs.
pub(crate) struct Ctx<'d> {
    pub descriptor: &'d Descriptor,
    pub view: View<'d>,
    /// Safe names of the contents, with their owners, in document order.
    pub contents: Vec<(String, Owner)>,
    /// Safe names of the networks, in order.
    pub networks: Vec<String>,
    /// Safe names of the configurations, in order.
    pub configs: Vec<String>,
    /// Memoised per call: item nodes by system, merged items by (system, configuration,
    /// ResourceType), property names by owner. Listing a large descriptor stays linear.
    hw_nodes: RefCell<HashMap<usize, Rc<Vec<Option<usize>>>>>,
    typed: RefCell<HashMap<TypedKey, Rc<Vec<hw::MergedItem>>>>,
    prop_names: RefCell<HashMap<Owner, Rc<Vec<String>>>>,
}

impl<'d> Ctx<'d> {
    fn new(desc: &'d Descriptor) -> Result<Ctx<'d>, SettingError> {
        Ok(Ctx::with_view(View::new(desc)?))
    }

    fn with_view(view: View<'d>) -> Ctx<'d> {
        let desc = view.desc;
        let contents = content_folders(desc);
        let networks = unique_names(
            &desc
                .networks
                .iter()
                .map(|n| n.name.value.as_str())
                .collect::<Vec<_>>(),
        );
        let configs = unique_names(
            &desc
                .configurations
                .iter()
                .map(|c| c.id.value.as_str())
                .collect::<Vec<_>>(),
        );
        Ctx {
            descriptor: desc,
            view,
            contents,
            networks,
            configs,
            hw_nodes: RefCell::default(),
            typed: RefCell::default(),
            prop_names: RefCell::default(),
        }
    }

    /// The VirtualSystem of a target, if it is one.
    pub fn system(&self, t: &Target) -> Option<&'d VirtualSystem> {
        match t.owner {
            Owner::System(i) => self.descriptor.systems.get(i),
            Owner::Collection(_) => None,
        }
    }

    /// The element span of the owner.
    pub fn owner_element(&self, owner: Owner) -> Option<ovf::Span> {
        match owner {
            Owner::System(i) => self.descriptor.systems.get(i).map(|s| s.element),
            Owner::Collection(i) => self.descriptor.collections.get(i).map(|c| c.element),
        }
    }

    /// The tree node of the owner's element.
    pub fn owner_node(&self, owner: Owner) -> Result<usize, SettingError> {
        self.owner_element(owner)
            .and_then(|s| self.view.find(s))
            .ok_or_else(|| SettingError::Internal("content element not in the tree".into()))
    }

    /// The owner's properties.
    pub fn properties(&self, owner: Owner) -> &'d [ovf::Property] {
        match owner {
            Owner::System(i) => self
                .descriptor
                .systems
                .get(i)
                .map(|s| s.properties.as_slice())
                .unwrap_or_default(),
            Owner::Collection(i) => self
                .descriptor
                .collections
                .get(i)
                .map(|c| c.properties.as_slice())
                .unwrap_or_default(),
        }
    }

    /// The configuration a target's hardware settings apply to: the folder's, else the
    /// default one (`None` when the descriptor has no DeploymentOptionSection).
    pub fn hardware_config(&self, t: &Target) -> Option<&'d str> {
        match t.config {
            Some(i) => self
                .descriptor
                .configurations
                .get(i)
                .map(|c| c.id.value.as_str()),
            None => self
                .descriptor
                .default_configuration()
                .map(|c| c.id.value.as_str()),
        }
    }

    /// The configuration id of a `configs/CONFIG/` target.
    pub fn folder_config(&self, t: &Target) -> Option<&'d str> {
        t.config
            .and_then(|i| self.descriptor.configurations.get(i))
            .map(|c| c.id.value.as_str())
    }

    /// Safe names of the owner's properties (same order as [`Ctx::properties`]).
    pub fn property_names(&self, owner: Owner) -> Rc<Vec<String>> {
        if let Some(n) = self.prop_names.borrow().get(&owner) {
            return Rc::clone(n);
        }
        let keys: Vec<String> = self
            .properties(owner)
            .iter()
            .map(|p| p.full_key())
            .collect();
        let names = Rc::new(unique_names(
            &keys.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        self.prop_names
            .borrow_mut()
            .insert(owner, Rc::clone(&names));
        names
    }

    /// The hardware of a target's system.
    pub fn hardware(&self, t: &Target) -> Option<hw::Hardware<'_, 'd>> {
        let Owner::System(i) = t.owner else {
            return None;
        };
        let sys = self.descriptor.systems.get(i)?;
        let nodes = {
            let mut cache = self.hw_nodes.borrow_mut();
            Rc::clone(
                cache
                    .entry(i)
                    .or_insert_with(|| Rc::new(hw::Hardware::item_nodes(&self.view, sys))),
            )
        };
        hw::Hardware::with_nodes(&self.view, sys, nodes)
    }

    /// The merged items of type `rt` a target sees (in its configuration).
    pub fn of_type(
        &self,
        t: &Target,
        rt: u16,
    ) -> Option<(hw::Hardware<'_, 'd>, Rc<Vec<hw::MergedItem>>)> {
        let h = self.hardware(t)?;
        let Owner::System(i) = t.owner else {
            return None;
        };
        let config = self.hardware_config(t);
        let key = (i, config.map(str::to_string), rt);
        if let Some(v) = self.typed.borrow().get(&key) {
            return Some((h, Rc::clone(v)));
        }
        let v = Rc::new(h.of_type(config, rt));
        self.typed.borrow_mut().insert(key, Rc::clone(&v));
        Some((h, v))
    }

    /// Whether a property is listed in a target's folder: every property at the top, and in
    /// `configs/CONFIG/` those whose `ovf:configuration` (if any) names CONFIG.
    pub fn property_listed(&self, t: &Target, p: &ovf::Property) -> bool {
        match (self.folder_config(t), &p.configurations) {
            (Some(c), Some(list)) => list.value.iter().any(|x| x == c),
            _ => true,
        }
    }

    /// Number of network adapters a target sees.
    pub fn nic_count(&self, t: &Target) -> usize {
        self.of_type(t, hw::RESOURCE_TYPE_ETHERNET)
            .map(|(_, v)| v.len())
            .unwrap_or(0)
    }
}

/// The folder name under `vms/` of every VirtualSystem and VirtualSystemCollection, with
/// what it is, in document order (the names the settings tree and the deploy files use).
pub fn content_folders(desc: &Descriptor) -> Vec<(String, Owner)> {
    let mut owners: Vec<(usize, Owner, &str)> = desc
        .systems
        .iter()
        .enumerate()
        .map(|(i, s)| (s.element.start, Owner::System(i), s.id.value.as_str()))
        .chain(
            desc.collections
                .iter()
                .enumerate()
                .map(|(i, c)| (c.element.start, Owner::Collection(i), c.id.value.as_str())),
        )
        .collect();
    owners.sort_by_key(|(start, _, _)| *start);
    let ids: Vec<&str> = owners.iter().map(|(_, _, id)| *id).collect();
    unique_names(&ids)
        .into_iter()
        .zip(owners.iter().map(|(_, o, _)| *o))
        .collect()
}

/// A name made safe as one path component (see the module doc).
pub(crate) fn safe_name(s: &str) -> String {
    match s {
        "" => return "%00".into(),
        "." => return "%2E".into(),
        ".." => return "%2E%2E".into(),
        _ => {}
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    // Longer than a file name may be: cut at a character boundary.
    if out.len() > 240 {
        let mut end = 240;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The inverse of the escapes of [`safe_name`] (for `mkdir networks/NAME`).
pub(crate) fn unsafe_name(s: &str) -> String {
    match s {
        "%00" => return String::new(),
        "%2E" => return ".".into(),
        "%2E%2E" => return "..".into(),
        _ => {}
    }
    s.replace("%2F", "/")
        .replace("%00", "\0")
        .replace("%25", "%")
}

/// Safe names for `ids`, made unique with `~2`, `~3`, ... in order.
fn unique_names(ids: &[&str]) -> Vec<String> {
    let base: Vec<String> = ids.iter().map(|s| safe_name(s)).collect();
    let all: HashSet<&str> = base.iter().map(String::as_str).collect();
    let mut used: HashSet<String> = HashSet::new();
    // The next suffix to try for each base, so that many equal ids stay linear.
    let mut next: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(ids.len());
    for b in &base {
        let mut name = b.clone();
        if used.contains(&name) {
            let n = next.entry(b.as_str()).or_insert(2);
            loop {
                name = format!("{b}~{n}");
                *n += 1;
                if !used.contains(&name) && !all.contains(name.as_str()) {
                    break;
                }
            }
        }
        used.insert(name.clone());
        out.push(name);
    }
    out
}

/// A resolved settings file.
struct Resolved {
    setting: &'static Setting,
    target: Target,
}

/// Resolves a file path to its setting and target.
fn resolve(ctx: &Ctx<'_>, path: &str) -> Option<Resolved> {
    let comps: Vec<&str> = path.split('/').collect();
    if comps.iter().any(|c| c.is_empty()) {
        return None;
    }
    match comps.as_slice() {
        ["networks", name, rest @ ..] => {
            let network = ctx.networks.iter().position(|n| n == name)?;
            let mut t = Target::new(Owner::System(0));
            t.network = network;
            SETTINGS
                .iter()
                .filter(|s| s.place == Place::Network)
                .find(|s| pattern_is(s.path, rest))
                .map(|s| Resolved {
                    setting: s,
                    target: t,
                })
        }
        ["vms", id, rest @ ..] => {
            let owner = ctx.contents.iter().find(|(n, _)| n == id)?.1;
            let mut t = Target::new(owner);
            let mut rest = rest;
            if let ["configs", c, r @ ..] = rest {
                t.config = Some(ctx.configs.iter().position(|n| n == c)?);
                rest = r;
            }
            for s in SETTINGS.iter() {
                if !place_fits(s.place, owner, t.config.is_some()) {
                    continue;
                }
                if let Some(t2) = match_pattern(ctx, s, rest, t) {
                    return Some(Resolved {
                        setting: s,
                        target: t2,
                    });
                }
            }
            None
        }
        _ => None,
    }
}

/// Whether a pattern without placeholders equals `rest`.
fn pattern_is(pattern: &str, rest: &[&str]) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    p == rest
}

/// Whether settings of `place` live in a folder of `owner` (inside `configs/` or not).
fn place_fits(place: Place, owner: Owner, in_config: bool) -> bool {
    let system = matches!(owner, Owner::System(_));
    match place {
        Place::Content | Place::System => !in_config && (system || place == Place::Content),
        Place::Hardware | Place::Nic => system,
        Place::Property => true,
        Place::Network => false,
    }
}

/// Matches `rest` against a setting's pattern (`nics/N/network`, `properties/KEY`).
fn match_pattern(ctx: &Ctx<'_>, s: &Setting, rest: &[&str], mut t: Target) -> Option<Target> {
    let pat: Vec<&str> = s.path.split('/').collect();
    if pat.len() != rest.len() {
        return None;
    }
    for (p, r) in pat.iter().zip(rest) {
        match *p {
            "N" => {
                if r.len() > 1 && r.starts_with('0') {
                    return None;
                }
                let n: usize = r.parse().ok()?;
                if n >= ctx.nic_count(&t) {
                    return None;
                }
                t.nic = n;
            }
            "KEY" => {
                let names = ctx.property_names(t.owner);
                let i = names.iter().position(|n| n == r)?;
                let p = ctx.properties(t.owner).get(i)?;
                if !ctx.property_listed(&t, p) {
                    return None;
                }
                t.prop = i;
            }
            lit => {
                if lit != *r {
                    return None;
                }
            }
        }
    }
    Some(t)
}

/// Every instance path of a setting in one folder, with its target.
fn instances(ctx: &Ctx<'_>, s: &Setting, base: &str, t: Target) -> Vec<(String, Target)> {
    let mut out = Vec::new();
    match s.place {
        Place::Nic => {
            for n in 0..ctx.nic_count(&t) {
                let mut t2 = t;
                t2.nic = n;
                out.push((
                    format!("{base}/{}", s.path.replace("N", &n.to_string())),
                    t2,
                ));
            }
        }
        Place::Property => {
            let props = ctx.properties(t.owner);
            for (i, name) in ctx.property_names(t.owner).iter().enumerate() {
                let Some(p) = props.get(i) else { continue };
                if !ctx.property_listed(&t, p) {
                    continue;
                }
                let mut t2 = t;
                t2.prop = i;
                out.push((format!("{base}/properties/{name}"), t2));
            }
        }
        _ => out.push((format!("{base}/{}", s.path), t)),
    }
    out
}

/// Every top-level name the settings tree may use (the mount reserves them: see
/// [`crate::node::layout::RESERVED_NAMES`]).
pub const TOP_LEVEL_NAMES: [&str; 3] = crate::node::layout::SETTINGS_DIRS;

/// Lists the settings tree of `desc`: folders, files and the `vm` link, parents first.
pub fn tree(desc: &Descriptor) -> Vec<Entry> {
    listing(desc).into_iter().map(|(e, _)| e).collect()
}

/// Every settings file with what [`read`] returns for it (value and line break), in one
/// pass: what the FUSE layer needs for sizes, and cheaper than a [`read`] per file.
pub fn read_all(desc: &Descriptor) -> Vec<(String, String)> {
    listing(desc)
        .into_iter()
        .filter_map(|(e, v)| v.map(|v| (e.path, format!("{v}\n"))))
        .collect()
}

/// One per-configuration settings file of [`per_configuration`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSetting {
    /// Path under `configs/CONFIG/` (`cpus`, `nics/0/network`, `properties/KEY`).
    pub path: String,
    /// What [`read`] returns for it, without the line break.
    pub value: String,
    /// Whether it holds a secret (a password property).
    pub secret: bool,
}

/// The per-configuration settings of one VirtualSystem or collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentConfigs {
    /// Its `ovf:id`.
    pub id: String,
    /// Whether it is a VirtualSystem (else a collection).
    pub system: bool,
    /// For each deployment configuration, in document order: its id and the files of
    /// `vms/ID/configs/CONFIG/`, sorted by path.
    pub configurations: Vec<(String, Vec<ConfigSetting>)>,
}

/// What every deployment configuration sets for every content: the values the files of
/// `vms/ID/configs/CONFIG/` hold (the same readers), for `ovafs info` to compare. Empty
/// when the descriptor has no DeploymentOptionSection.
pub fn per_configuration(desc: &Descriptor) -> Vec<ContentConfigs> {
    let Ok(ctx) = Ctx::new(desc) else {
        return Vec::new();
    };
    if ctx.configs.is_empty() {
        return Vec::new();
    }
    ctx.contents
        .iter()
        .map(|(_, owner)| ContentConfigs {
            id: match owner {
                Owner::System(i) => desc.systems.get(*i).map(|s| s.id.value.clone()),
                Owner::Collection(i) => desc.collections.get(*i).map(|c| c.id.value.clone()),
            }
            .unwrap_or_default(),
            system: matches!(owner, Owner::System(_)),
            configurations: (0..ctx.configs.len())
                .map(|ci| {
                    let id = desc
                        .configurations
                        .get(ci)
                        .map(|c| c.id.value.clone())
                        .unwrap_or_default();
                    (id, config_settings(&ctx, *owner, ci))
                })
                .collect(),
        })
        .collect()
}

/// The files of `configs/CONFIG/` (configuration index `ci`) of `owner`, sorted by path.
fn config_settings(ctx: &Ctx<'_>, owner: Owner, ci: usize) -> Vec<ConfigSetting> {
    let mut t = Target::new(owner);
    t.config = Some(ci);
    let mut out = Vec::new();
    for s in SETTINGS.iter().filter(|s| place_fits(s.place, owner, true)) {
        for (path, t2) in instances(ctx, s, "", t) {
            if let Ok(Some(value)) = (s.read)(ctx, &t2) {
                let secret = s.place == Place::Property
                    && ctx
                        .properties(t2.owner)
                        .get(t2.prop)
                        .is_some_and(|p| p.is_password());
                out.push(ConfigSetting {
                    path: path.trim_start_matches('/').to_string(),
                    value,
                    secret,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The tree with the value of each file.
fn listing(desc: &Descriptor) -> Vec<(Entry, Option<String>)> {
    let Ok(ctx) = Ctx::new(desc) else {
        return Vec::new();
    };
    let mut values: HashMap<String, String> = HashMap::new();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let dir = |entries: &mut BTreeMap<String, Entry>, p: &str| {
        entries.entry(p.to_string()).or_insert(Entry {
            path: p.to_string(),
            kind: EntryKind::Dir,
            secret: false,
        });
    };
    dir(&mut entries, "vms");
    dir(&mut entries, "networks");
    let mut files: Vec<(String, bool, String)> = Vec::new();
    for (name, owner) in &ctx.contents {
        let base = format!("vms/{name}");
        dir(&mut entries, &base);
        let mut folders = vec![(base.clone(), Target::new(*owner))];
        for (ci, cname) in ctx.configs.iter().enumerate() {
            let mut t = Target::new(*owner);
            t.config = Some(ci);
            folders.push((format!("{base}/configs/{cname}"), t));
        }
        for (folder, t) in folders {
            for s in SETTINGS.iter() {
                if !place_fits(s.place, *owner, t.config.is_some()) {
                    continue;
                }
                for (path, t2) in instances(&ctx, s, &folder, t) {
                    if let Ok(Some(v)) = (s.read)(&ctx, &t2) {
                        let secret = s.place == Place::Property
                            && ctx
                                .properties(t2.owner)
                                .get(t2.prop)
                                .is_some_and(|p| p.is_password());
                        files.push((path, secret, v));
                    }
                }
            }
        }
    }
    for (i, name) in ctx.networks.iter().enumerate() {
        let base = format!("networks/{name}");
        dir(&mut entries, &base);
        let mut t = Target::new(Owner::System(0));
        t.network = i;
        for s in SETTINGS.iter().filter(|s| s.place == Place::Network) {
            if let Ok(Some(v)) = (s.read)(&ctx, &t) {
                files.push((format!("{base}/{}", s.path), false, v));
            }
        }
    }
    for (path, secret, v) in files {
        values.insert(path.clone(), v);
        let mut at = 0;
        while let Some(k) = path[at..].find('/') {
            dir(&mut entries, &path[..at + k]);
            at += k + 1;
        }
        entries.insert(
            path.clone(),
            Entry {
                path,
                kind: EntryKind::File,
                secret,
            },
        );
    }
    let systems: Vec<&String> = ctx
        .contents
        .iter()
        .filter(|(_, o)| matches!(o, Owner::System(_)))
        .map(|(n, _)| n)
        .collect();
    if let [only] = systems.as_slice() {
        entries.insert(
            "vm".into(),
            Entry {
                path: "vm".into(),
                kind: EntryKind::Symlink(format!("vms/{only}")),
                secret: false,
            },
        );
    }
    entries
        .into_values()
        .map(|e| {
            let v = values.remove(&e.path);
            (e, v)
        })
        .collect()
}

/// Reads a settings file: its value and a line break.
pub fn read(desc: &Descriptor, path: &str) -> Result<String, SettingError> {
    read_in(&Ctx::new(desc)?, path)
}

fn read_in(ctx: &Ctx<'_>, path: &str) -> Result<String, SettingError> {
    let r = resolve(ctx, path).ok_or_else(|| SettingError::NotFound {
        path: path.to_string(),
    })?;
    match (r.setting.read)(ctx, &r.target)? {
        Some(v) => Ok(format!("{v}\n")),
        None => Err(SettingError::NotFound {
            path: path.to_string(),
        }),
    }
}

/// Validates a new value for a settings file and returns the edits that make the descriptor
/// hold it, with the edited descriptor (no edits and no descriptor when the value is
/// unchanged). One trailing line break is ignored; each setting then trims what its format
/// says (see [`man_section`]).
pub fn write(desc: &Descriptor, path: &str, new: &[u8]) -> Result<Edited, SettingError> {
    let ctx = Ctx::new(desc)?;
    let r = resolve(&ctx, path).ok_or_else(|| SettingError::NotFound {
        path: path.to_string(),
    })?;
    let Ok(Some(current)) = (r.setting.read)(&ctx, &r.target) else {
        return Err(SettingError::NotFound {
            path: path.to_string(),
        });
    };
    let text = std::str::from_utf8(new).map_err(|_| SettingError::NotUtf8 {
        setting: path.to_string(),
    })?;
    let text = values::strip_newline(text);
    // The file's own content written back changes nothing, whatever the setting.
    if text == current {
        return Ok(Edited::unchanged());
    }
    let applied = (r.setting.write)(&ctx, &r.target, text).map_err(|e| e.at(path, text))?;
    if applied.edits.is_empty() {
        return Ok(Edited::unchanged());
    }
    let expect = applied.expect;
    verify(desc, applied.edits, |new| {
        let got = read_in(new, path).map_err(|e| e.to_string())?;
        if got.strip_suffix('\n') == Some(expect.as_str()) {
            Ok(())
        } else {
            Err(format!(
                "{path} reads {got:?} after the edit, not {expect:?}"
            ))
        }
    })
}

/// What [`write()`], [`mkdir`] and [`rmdir`] accept: the splice edits and the descriptor they
/// make. Every accepted edit is checked by splicing it and parsing the result (see
/// `verify`); the parsed result is handed on, so that the caller need not splice and parse
/// again. It dereferences to its edits.
pub struct Edited {
    /// The edits, in no particular order (see [`ovf::splice`]); none when nothing changes.
    pub edits: Vec<Edit>,
    /// The descriptor with the edits spliced in, parsed; `None` exactly when there are no
    /// edits.
    pub descriptor: Option<Descriptor>,
}

impl Edited {
    fn unchanged() -> Edited {
        Edited {
            edits: Vec::new(),
            descriptor: None,
        }
    }
}

impl std::ops::Deref for Edited {
    type Target = [Edit];

    fn deref(&self) -> &[Edit] {
        &self.edits
    }
}

impl std::fmt::Debug for Edited {
    /// The edits (the descriptor is the old one with them spliced in).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.edits.fmt(f)
    }
}

/// Splices `edits`, parses the result once (its model and its element tree), and runs
/// `check` on it; the edits and the parsed result are what the caller gets.
fn verify(
    desc: &Descriptor,
    edits: Vec<Edit>,
    check: impl FnOnce(&Ctx<'_>) -> Result<(), String>,
) -> Result<Edited, SettingError> {
    let bytes = ovf::splice(&desc.bytes, &edits)
        .map_err(|e| SettingError::Internal(format!("the edits do not apply: {e}")))?;
    let (new, tree) = ovf::parse_with_tree(&bytes).map_err(|e| {
        SettingError::Internal(format!("the edited descriptor does not parse: {e}"))
    })?;
    check(&Ctx::with_view(View::with_tree(&new, tree))).map_err(SettingError::Internal)?;
    Ok(Edited {
        edits,
        descriptor: Some(new),
    })
}

/// `mkdir networks/NAME`: adds `<Network ovf:name="NAME">` with a description to the
/// NetworkSection (created when the descriptor has none).
pub fn mkdir(desc: &Descriptor, path: &str) -> Result<Edited, SettingError> {
    let ctx = Ctx::new(desc)?;
    let Some(("networks", safe)) = path.split_once('/') else {
        return Err(SettingError::Unsupported {
            setting: path.to_string(),
            reason: "only networks/NAME folders can be created".into(),
        });
    };
    if safe.is_empty() || safe.contains('/') {
        return Err(SettingError::Unsupported {
            setting: path.to_string(),
            reason: "only networks/NAME folders can be created".into(),
        });
    }
    let name = unsafe_name(safe);
    if desc.networks.iter().any(|n| n.name.value == name) || ctx.networks.iter().any(|n| n == safe)
    {
        return Err(SettingError::Exists { name });
    }
    let edits = table::add_network(&ctx, &name).map_err(|e| e.at(path, &name))?;
    verify(desc, edits, |new| {
        if new.descriptor.networks.iter().any(|n| n.name.value == name) {
            Ok(())
        } else {
            Err(format!("network {name:?} is missing after the edit"))
        }
    })
}

/// `rmdir networks/NAME`: removes a Network that no network adapter (in any configuration)
/// is connected to.
pub fn rmdir(desc: &Descriptor, path: &str) -> Result<Edited, SettingError> {
    let ctx = Ctx::new(desc)?;
    let idx = match path.split_once('/') {
        Some(("networks", safe)) => ctx.networks.iter().position(|n| n == safe),
        _ => None,
    };
    let Some(idx) = idx else {
        return Err(SettingError::NotFound {
            path: path.to_string(),
        });
    };
    let edits = table::remove_network(&ctx, idx)?;
    let name = desc
        .networks
        .get(idx)
        .map(|n| n.name.value.clone())
        .unwrap_or_default();
    let before = desc.networks.len();
    verify(desc, edits, |new| {
        if new.descriptor.networks.len() + 1 == before {
            Ok(())
        } else {
            Err(format!("network {name:?} is still there after the edit"))
        }
    })
}

/// Checks a whole new descriptor written over the old one: it must parse (with every rule
/// of the descriptor model: disks name Files, items name disks and files, configurations
/// exist), and every File it references must be a member of the package (`members`, the
/// package's file names), or a chunked file whose first chunk (`NAME.000000000`) is;
/// an href that is a URL is accepted only when the old descriptor has it too.
pub fn check_replacement(
    old: &Descriptor,
    new_bytes: &[u8],
    members: &[&str],
) -> Result<Descriptor, SettingError> {
    let new =
        ovf::parse_descriptor(new_bytes).map_err(|e| SettingError::Descriptor(e.to_string()))?;
    let norm = |s: &str| s.trim_start_matches("./").to_string();
    let have: HashSet<String> = members.iter().map(|m| norm(m)).collect();
    let old_hrefs: HashSet<&str> = old.files.iter().map(|f| f.href.value.as_str()).collect();
    for f in &new.files {
        let href = f.href.value.as_str();
        let h = norm(href);
        let present = have.contains(&h)
            || (f.chunk_size.is_some() && have.contains(&format!("{h}.000000000")))
            || (href.contains("://") && old_hrefs.contains(href));
        if !present {
            return Err(SettingError::MissingMember {
                href: href.to_string(),
            });
        }
    }
    Ok(new)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
