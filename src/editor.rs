//! The editing backend of a mount: settings files, the descriptor and the manifest as live
//! files, every accepted change committed into the package before the call returns.
//!
//! It glues three layers together: [`crate::settings`] turns a new value into splice edits
//! of the descriptor, [`crate::ovf`] applies and re-parses them, and [`crate::commit`]
//! persists the new descriptor with a refreshed manifest (in place under a journal, or by an
//! atomic rewrite). One mutex serialises changes, so each commit sees the previous one.
//!
//! The editor shows its files as nodes ([`Editor::show_in`]): the descriptor, manifest and
//! certificate where the tree shows their members ([`layout::shown_path`]), and the settings
//! tree, as [`LiveFile`]s it serves and live folders whose `mkdir`/`rmdir` it answers. After
//! each change it brings those nodes in line with the new descriptor
//! ([`Folder::sync_live`]). They are never more readable than the members they come from:
//! every settings file is read from the descriptor, so it allows what the descriptor member
//! allows.
//! After a commit that replaced the package file (an OVA rewrite), the package's members
//! are re-pointed at the new file ([`crate::package::Relocation::reopen`]), so that the mount
//! reads the new archive and the unlinked old one is closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::commit::{ChangeSet, CommitReport, Committer};
use crate::deploy::{self, DeployContext, DeployError};
use crate::error::{Error, ErrorKind, Refusal, Result};
use crate::node::folder::{Folder, FolderChanges, LiveTree};
use crate::node::layout;
use crate::node::live::{LiveFile, LiveMode, LiveSource};
use crate::node::refusals::Refusals;
use crate::node::{Caching, Node};
use crate::ovf::{self, Descriptor};
use crate::package::{Package, Relocation};
use crate::settings::{self, EntryKind, SettingError};

/// Largest settings value accepted (a property can hold a certificate or a script).
const MAX_SETTING_BYTES: u64 = 1 << 20;

struct State {
    descriptor: Descriptor,
    /// The descriptor as stored (with any padding the commit layer keeps after it).
    stored_descriptor: Arc<[u8]>,
    manifest: Option<Arc<[u8]>>,
    certificate: Option<Arc<[u8]>>,
    /// `None` for a read-only mount.
    committer: Option<Committer>,
    /// The change the last `check` accepted, for the `store` of the same bytes that follows.
    prepared: Option<Prepared>,
    /// Every settings file's content for the current descriptor, made at the first read
    /// after a change: a `stat` or `cat` of a setting then reads a map instead of building
    /// the settings view of the whole descriptor again.
    values: Option<HashMap<String, Arc<[u8]>>>,
    /// Deployment files made since the last change: each is generated at its first read
    /// and then served from here, byte-stable until the descriptor changes.
    deploy_files: HashMap<String, Arc<[u8]>>,
}

/// A change checked at write() time: the descriptor it makes, kept so that the store at
/// flush neither splices nor parses again.
struct Prepared {
    /// The bytes of the descriptor it was made from: the same allocation as
    /// `State::descriptor`'s while that is current (a commit replaces it).
    base: Arc<[u8]>,
    path: String,
    data: Vec<u8>,
    /// What [`Editor::new_descriptor`] answered.
    new: Option<Descriptor>,
}

impl Prepared {
    /// Whether this is the change of writing `data` to `path` on `current`.
    fn is_for(&self, current: &Descriptor, path: &str, data: &[u8]) -> bool {
        Arc::ptr_eq(&self.base, &current.bytes) && self.path == path && self.data == data
    }
}

/// The editing side of one mount.
pub struct Editor {
    state: Mutex<State>,
    descriptor_path: String,
    manifest_path: Option<String>,
    certificate_path: Option<String>,
    /// Where a certificate that a re-signing commit created is shown (the package had none).
    created_certificate_path: OnceLock<String>,
    members: Vec<String>,
    /// Permission bits of the descriptor, manifest and certificate members.
    descriptor_mode: u32,
    manifest_mode: u32,
    certificate_mode: u32,
    relocation: Arc<Relocation>,
    /// Where its nodes are shown, once [`Editor::show_in`] was called.
    shown: OnceLock<Shown>,
    /// What the deployment files need besides the descriptor; `None`: no `deploy/` folders.
    deploy: Option<DeployContext>,
}

/// Where the editor's nodes are shown.
struct Shown {
    /// The root folder of the mount (weak: the folders hold the editor's files, which hold
    /// the editor).
    root: Weak<Folder>,
    /// Where refused writes are kept.
    refusals: Arc<Refusals>,
    /// The editor itself, for the nodes it makes.
    editor: Weak<Editor>,
}

/// One entry of the editor's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LiveKind {
    File { writable: bool, secret: bool },
    Dir,
    Symlink(String),
}

impl Editor {
    /// An editor for `package`; `committer` is `None` for a read-only mount.
    pub fn new(package: &Package, committer: Option<Committer>) -> Result<Self> {
        let member_bytes = |i: Option<usize>| -> Result<Option<(String, Arc<[u8]>)>> {
            let Some(m) = i.and_then(|i| package.members.get(i)) else {
                return Ok(None);
            };
            let bytes = crate::io::read_vec_at(
                &*m.data,
                "member",
                0,
                m.size,
                crate::commit::MAX_MANIFEST_BYTES,
            )?;
            Ok(Some((
                layout::shown_path(&m.name).into_owned(),
                Arc::from(bytes),
            )))
        };
        let mode_of = |i: Option<usize>| {
            i.and_then(|i| package.members.get(i))
                .map_or(0o777, |m| m.mode & 0o777)
        };
        let manifest = member_bytes(package.manifest_member)?;
        let certificate = member_bytes(package.certificate_member)?;
        let descriptor_path = package
            .members
            .get(package.descriptor_member)
            .map(|m| layout::shown_path(&m.name).into_owned())
            .unwrap_or_default();
        let stored: Arc<[u8]> = match &committer {
            Some(c) => Arc::from(c.descriptor()),
            None => package.descriptor.bytes.clone(),
        };
        Ok(Editor {
            state: Mutex::new(State {
                descriptor: package.descriptor.clone(),
                values: None,
                deploy_files: HashMap::new(),
                stored_descriptor: stored,
                manifest: manifest.as_ref().map(|(_, b)| b.clone()),
                certificate: certificate.as_ref().map(|(_, b)| b.clone()),
                committer,
                prepared: None,
            }),
            descriptor_path,
            manifest_path: manifest.map(|(n, _)| n),
            certificate_path: certificate.map(|(n, _)| n),
            created_certificate_path: OnceLock::new(),
            members: package.members.iter().map(|m| m.name.clone()).collect(),
            descriptor_mode: mode_of(Some(package.descriptor_member)),
            manifest_mode: mode_of(package.manifest_member),
            // A certificate created by re-signing is written like the manifest.
            certificate_mode: mode_of(package.certificate_member.or(package.manifest_member)),
            relocation: package.relocation.clone(),
            shown: OnceLock::new(),
            deploy: None,
        })
    }

    /// Shows `vms/ID/deploy/` (the OVF environment and launch files) made for `ctx`.
    pub fn with_deploy(mut self, ctx: DeployContext) -> Self {
        self.deploy = Some(ctx);
        self
    }

    /// The package members this editor serves as live files (so the static tree skips them).
    pub fn served_members(package: &Package) -> Vec<usize> {
        [
            Some(package.descriptor_member),
            package.manifest_member,
            package.certificate_member,
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The state, locked. A panic while it was held (caught by `fs::contain`) may have left
    /// it half updated (a commit done but not recorded, say), so from then on the editor
    /// refuses changes: it keeps serving what it has, read-only.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut st = poisoned.into_inner();
            if st.committer.take().is_some() {
                log::error!(
                    "an internal error interrupted a change: further changes are refused \
                     until the package is mounted again"
                );
            }
            self.state.clear_poison();
            st
        })
    }

    /// Where the certificate is shown: its member's place, or that of the one a re-signing
    /// commit created.
    fn certificate_path(&self) -> Option<&str> {
        self.certificate_path
            .as_deref()
            .or_else(|| self.created_certificate_path.get().map(String::as_str))
    }

    fn writable(&self) -> bool {
        self.state().committer.is_some()
    }

    /// Checks writing `data` to `path` as [`Editor::new_descriptor`] does, and keeps the
    /// descriptor it makes for the store of the same bytes that follows.
    fn prepare(&self, st: &mut State, path: &str, data: &[u8]) -> Result<()> {
        let new = self.new_descriptor(st, path, data)?;
        st.prepared = Some(Prepared {
            base: st.descriptor.bytes.clone(),
            path: path.to_string(),
            data: data.to_vec(),
            new,
        });
        Ok(())
    }

    /// The new descriptor, parsed, that writing `data` to `path` asks for (`None`: no
    /// change): the prepared one when the last check was of these bytes on the current
    /// descriptor, else checked now.
    fn new_descriptor(
        &self,
        st: &mut State,
        path: &str,
        data: &[u8],
    ) -> Result<Option<Descriptor>> {
        if let Some(prepared) = st.prepared.take()
            && prepared.is_for(&st.descriptor, path, data)
        {
            return Ok(prepared.new);
        }
        if path == self.descriptor_path {
            let members: Vec<&str> = self.members.iter().map(String::as_str).collect();
            let new = settings::check_replacement(&st.descriptor, data, &members)
                .map_err(setting_error)?;
            return Ok((data != &*st.stored_descriptor).then_some(new));
        }
        let edited = settings::write(&st.descriptor, path, data).map_err(setting_error)?;
        Ok(edited.descriptor)
    }

    /// Commits `new` as the descriptor and updates the state.
    ///
    /// `new` is a parsed model of the bytes stored: the model accepted what is about to be
    /// stored (`settings::write`, `mkdir`, `rmdir` and `check_replacement` parse what they
    /// hand on), so a settings bug that breaks the document never reaches the package.
    fn commit(&self, st: &mut State, new: Descriptor) -> Result<()> {
        self.commit_set(st, new, ChangeSet::default()).map(|_| ())
    }

    /// Commits `changes` with `new` as the descriptor, and follows the package: the state
    /// takes the stored descriptor and manifest, and members that moved are re-pointed.
    fn commit_set(
        &self,
        st: &mut State,
        new: Descriptor,
        changes: ChangeSet,
    ) -> Result<CommitReport> {
        let committer = st
            .committer
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::ReadOnly("the mount is read-only".into())))?;
        let report = committer.commit(&changes.with_descriptor(new.bytes.as_ref()))?;
        log::info!(
            "committed the descriptor ({:?}, {} bytes written, {:?})",
            report.path,
            report.bytes_written,
            report.elapsed
        );
        if let Some(name) = &report.certificate_dropped {
            log::warn!("{name} no longer matches the manifest and was removed");
            st.certificate = None;
        }
        if let (crate::commit::CertificateFate::Signed(name), Some(bytes)) =
            (&report.certificate, &report.certificate_bytes)
        {
            if self.certificate_path.is_none() {
                // Set once: every later re-signing writes the same member.
                let _ = self
                    .created_certificate_path
                    .set(layout::shown_path(name).into_owned());
            }
            st.certificate = Some(Arc::from(bytes.as_slice()));
        }
        st.descriptor = new;
        st.values = None;
        st.deploy_files.clear();
        st.prepared = None;
        st.stored_descriptor = Arc::from(report.descriptor.clone());
        if let Some(m) = &report.manifest {
            st.manifest = Some(Arc::from(m.clone()));
        }
        if report.replaced || !report.members_replaced.is_empty() {
            // The commit is durable; failing to follow it only leaves reads on the old file.
            match self.relocation.reopen(&report.members_replaced) {
                Ok(n) => log::info!("the package file was replaced; {n} members now read it"),
                Err(e) => log::warn!("cannot follow the replaced package file: {e}"),
            }
        }
        Ok(report)
    }
}

impl crate::writable::PackageCommit for Editor {
    /// Disk commits go through the editor's committer (the package's one write lock), so
    /// that the descriptor they change is the one the settings show.
    fn commit_disks(
        &self,
        edit: &mut dyn FnMut(&Descriptor) -> Result<Descriptor>,
        changes: ChangeSet,
    ) -> Result<CommitReport> {
        let mut st = self.state();
        let new = edit(&st.descriptor)?;
        let report = self.commit_set(&mut st, new, changes)?;
        drop(st);
        self.resync();
        Ok(report)
    }
}

/// A settings refusal as an error kind (an invalid edit; not found for unknown paths).
fn setting_error(e: SettingError) -> Error {
    match e {
        SettingError::NotFound { path } => Error::refused(path, Refusal::NotFound),
        other => Error::new(ErrorKind::InvalidEdit(other.to_string())),
    }
}

impl Editor {
    /// The editor's tree as it is now: the live files and the settings tree.
    fn entries(&self) -> Vec<(String, LiveKind)> {
        let st = self.state();
        let writable = st.committer.is_some();
        let read_only = LiveKind::File {
            writable: false,
            secret: false,
        };
        let mut out = vec![(
            self.descriptor_path.clone(),
            LiveKind::File {
                writable,
                secret: false,
            },
        )];
        if let Some(p) = &self.manifest_path {
            out.push((p.clone(), read_only.clone()));
        }
        if let (Some(p), Some(_)) = (self.certificate_path(), &st.certificate) {
            out.push((p.to_string(), read_only));
        }
        for e in settings::tree(&st.descriptor) {
            let kind = match e.kind {
                EntryKind::File => LiveKind::File {
                    writable,
                    secret: e.secret,
                },
                EntryKind::Dir => LiveKind::Dir,
                EntryKind::Symlink(t) => LiveKind::Symlink(t),
            };
            out.push((e.path, kind));
        }
        if self.deploy.is_some() {
            for e in deploy::tree(&st.descriptor) {
                let kind = if e.folder {
                    LiveKind::Dir
                } else {
                    LiveKind::File {
                        writable: false,
                        secret: e.secret,
                    }
                };
                out.push((e.path, kind));
            }
        }
        out
    }

    /// Current content of the live file at `path`.
    fn read(&self, path: &str) -> Result<Arc<[u8]>> {
        let mut guard = self.state();
        let st = &mut *guard;
        if path == self.descriptor_path {
            return Ok(st.stored_descriptor.clone());
        }
        if Some(path) == self.manifest_path.as_deref() {
            return st.manifest.clone().ok_or_else(|| gone(path));
        }
        if Some(path) == self.certificate_path() {
            return st.certificate.clone().ok_or_else(|| gone(path));
        }
        let values = st.values.get_or_insert_with(|| {
            settings::read_all(&st.descriptor)
                .into_iter()
                .map(|(p, v)| (p, Arc::from(v.into_bytes())))
                .collect()
        });
        if let Some(v) = values.get(path) {
            return Ok(v.clone());
        }
        if let Some(ctx) = &self.deploy
            && deploy::is_deploy_path(path)
        {
            if let Some(v) = st.deploy_files.get(path) {
                return Ok(v.clone());
            }
            let bytes: Arc<[u8]> = match deploy::read(&st.descriptor, path, ctx) {
                Some(Ok(b)) => Arc::from(b),
                Some(Err(e)) => return Err(deploy_error(path, e)),
                None => return Err(gone(path)),
            };
            st.deploy_files.insert(path.to_string(), bytes.clone());
            return Ok(bytes);
        }
        let text = settings::read(&st.descriptor, path).map_err(setting_error)?;
        Ok(Arc::from(text.into_bytes()))
    }

    /// Largest content accepted for `path`.
    fn max_len(&self, path: &str) -> u64 {
        if path == self.descriptor_path {
            ovf::MAX_DESCRIPTOR_BYTES
        } else {
            MAX_SETTING_BYTES
        }
    }

    /// Whether `data` would be accepted as the complete new content of `path`.
    fn check(&self, path: &str, data: &[u8]) -> Result<()> {
        if path == self.descriptor_path {
            // A large descriptor arrives in several writes: a document that merely ends too
            // soon may be completed by the next one, and is checked whole when stored.
            // Anything else wrong is refused now.
            if let Err(ovf::OvfError::Truncated { .. }) = ovf::parse_descriptor(data) {
                return Ok(());
            }
        }
        let mut st = self.state();
        self.prepare(&mut st, path, data)
    }

    /// Validates `data` as the new content of `path`, commits it, and brings the shown
    /// tree up to date.
    fn store(&self, path: &str, data: &[u8]) -> Result<()> {
        if !self.writable() {
            return Err(Error::new(ErrorKind::ReadOnly(format!(
                "{path}: the mount is read-only"
            ))));
        }
        {
            let mut st = self.state();
            match self.new_descriptor(&mut st, path, data)? {
                Some(new) => self.commit(&mut st, new)?,
                None => return Ok(()),
            }
        }
        self.resync();
        Ok(())
    }

    /// Creates the settings folder `path` (for example a new network).
    fn mkdir(&self, path: &str) -> Result<()> {
        self.change_folder(path, settings::mkdir)
    }

    /// Removes the settings folder `path`.
    fn rmdir(&self, path: &str) -> Result<()> {
        self.change_folder(path, settings::rmdir)
    }

    /// Commits what `change` (`settings::mkdir` or `rmdir`) makes of the descriptor for the
    /// folder `path`, and brings the shown tree up to date.
    fn change_folder(
        &self,
        path: &str,
        change: fn(&Descriptor, &str) -> std::result::Result<settings::Edited, SettingError>,
    ) -> Result<()> {
        {
            let mut st = self.state();
            let edited = change(&st.descriptor, path).map_err(setting_error)?;
            match edited.descriptor {
                Some(new) => self.commit(&mut st, new)?,
                None => return Ok(()),
            }
        }
        self.resync();
        Ok(())
    }

    /// The permission bits that the live file `path` may show at most to the mount's group
    /// and others: those of the package file its content comes from.
    fn mode_ceiling(&self, path: &str) -> u32 {
        if Some(path) == self.manifest_path.as_deref() {
            self.manifest_mode
        } else if Some(path) == self.certificate_path() {
            self.certificate_mode
        } else {
            // The descriptor and every settings file read from it.
            self.descriptor_mode
        }
    }
}

/// Showing the editor's files as nodes.
impl Editor {
    /// Shows the editor's files in `root` (and keeps them in line with the descriptor after
    /// every change); refused writes are kept in `refusals`.
    pub fn show_in(self: &Arc<Self>, root: &Arc<Folder>, refusals: Arc<Refusals>) {
        let shown = Shown {
            root: Arc::downgrade(root),
            refusals,
            editor: Arc::downgrade(self),
        };
        if self.shown.set(shown).is_err() {
            log::warn!("the editor's files are already shown");
        }
        self.resync();
    }

    /// Brings the shown tree in line with the descriptor.
    fn resync(&self) {
        let Some(shown) = self.shown.get() else {
            return;
        };
        let Some(root) = shown.root.upgrade() else {
            return;
        };
        let Some(editor) = shown.editor.upgrade() else {
            return;
        };
        let entries = self.entries();
        let kinds = entries.iter().map(|(p, k)| (p.as_str(), k)).collect();
        root.sync_live(&EditorTree {
            editor: &editor,
            entries: &entries,
            kinds,
            refusals: &shown.refusals,
        });
    }

    /// The permission bits of the editor's folders.
    fn folder_mode(&self) -> u32 {
        if self.writable() { 0o755 } else { 0o555 }
    }
}

/// The editor's tree at one moment, as [`Folder::sync_live`] asks for it.
struct EditorTree<'a> {
    editor: &'a Arc<Editor>,
    entries: &'a [(String, LiveKind)],
    /// The entries by path (a descriptor may hold many thousands of properties).
    kinds: std::collections::HashMap<&'a str, &'a LiveKind>,
    refusals: &'a Arc<Refusals>,
}

impl LiveTree for EditorTree<'_> {
    fn paths(&self) -> Vec<String> {
        self.entries.iter().map(|(p, _)| p.clone()).collect()
    }

    fn node(&self, path: &str) -> Option<Node> {
        let kind = *self.kinds.get(path)?;
        Some(match kind {
            LiveKind::Dir => Node::Dir(self.folder(path)),
            LiveKind::Symlink(target) => Node::symlink(target),
            LiveKind::File { writable, secret } => {
                let mode = LiveMode {
                    writable: *writable,
                    secret: *secret,
                    ceiling: self.editor.mode_ceiling(path),
                };
                let source = EditorFile {
                    editor: self.editor.clone(),
                    path: path.to_string(),
                };
                let file = LiveFile::new(path, Box::new(source), mode, self.refusals.clone());
                Node::File(Arc::new(file))
            }
        })
    }

    fn folder(&self, path: &str) -> Arc<Folder> {
        let changes = SettingsFolders {
            editor: self.editor.clone(),
        };
        let mode = self.editor.folder_mode();
        let now = std::time::SystemTime::now();
        Arc::new(Folder::new(path, mode, now, Caching::Changing).with_changes(Arc::new(changes)))
    }
}

/// One of the editor's files: the descriptor, the manifest, the certificate or a setting.
struct EditorFile {
    editor: Arc<Editor>,
    path: String,
}

impl LiveSource for EditorFile {
    fn read(&self) -> Result<Arc<[u8]>> {
        self.editor.read(&self.path)
    }

    fn max_len(&self) -> u64 {
        self.editor.max_len(&self.path)
    }

    fn check(&self, data: &[u8]) -> Result<()> {
        self.editor.check(&self.path, data)
    }

    fn store(&self, data: &[u8]) -> Result<()> {
        self.editor.store(&self.path, data)
    }
}

/// `mkdir` and `rmdir` in the settings folders (a new network, say).
struct SettingsFolders {
    editor: Arc<Editor>,
}

impl FolderChanges for SettingsFolders {
    fn mkdir(&self, path: &str) -> Result<()> {
        if !self.editor.writable() {
            return Err(Error::new(ErrorKind::ReadOnly(format!(
                "{path}: the mount is read-only"
            ))));
        }
        self.editor.mkdir(path)
    }

    fn rmdir(&self, path: &str) -> Result<()> {
        if !self.editor.writable() {
            return Err(Error::new(ErrorKind::ReadOnly(format!(
                "{path}: the mount is read-only"
            ))));
        }
        self.editor.rmdir(path)
    }
}

/// A deployment file that cannot be made from the descriptor as it is: its reads fail (EIO)
/// and the log says why.
fn deploy_error(path: &str, e: DeployError) -> Error {
    log::warn!("{path}: {e}");
    Error::layer(e).context(path.to_string())
}

fn gone(path: &str) -> Error {
    Error::refused(format!("{path} was removed"), Refusal::NotFound)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::ovf::parse_count;
    use crate::sample::{self, ApplianceSpec};

    /// A writable editor of a one-system OVA (`vms/vm/`) written in `dir`, and the OVA.
    fn editor(dir: &Path) -> (Editor, PathBuf) {
        let spec = ApplianceSpec {
            name: "vm".into(),
            cpus: 1,
            memory_mib: 512,
            network: "VM Network".into(),
            disks: Vec::new(),
        };
        std::fs::write(dir.join("vm.ovf"), sample::descriptor_xml(&spec)).unwrap();
        let ova = dir.join("vm.ova");
        sample::write_ova(&ova, dir, &["vm.ovf"]).unwrap();
        let package = crate::package::open(&ova).unwrap();
        let committer = Committer::open(&package).unwrap();
        (Editor::new(&package, Some(committer)).unwrap(), ova)
    }

    /// What the package file holds now.
    fn stored(ova: &Path) -> Descriptor {
        crate::package::open(ova).unwrap().descriptor
    }

    /// (XML parses, models built) since `before`.
    fn parses_since(before: (u64, u64)) -> (u64, u64) {
        let now = parse_count::get();
        (now.0 - before.0, now.1 - before.1)
    }

    #[test]
    fn one_settings_edit_parses_the_descriptor_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (editor, ova) = editor(dir.path());
        // What the FUSE layer does for `echo 4 > vms/vm/cpus`: write() checks the value,
        // flush stores it.
        let before = parse_count::get();
        editor.check("vms/vm/cpus", b"4\n").unwrap();
        let checked = parses_since(before);
        editor.store("vms/vm/cpus", b"4\n").unwrap();
        let edited = parses_since(before);
        eprintln!("check: {checked:?}, check and store: {edited:?} (XML parses, models)");
        // The check reads the old descriptor's tree, and parses the edited one once (its
        // model and the tree the read-back uses); the store commits that model.
        assert_eq!(checked, (2, 1));
        assert_eq!(edited, (2, 1));
        assert_eq!(&*editor.read("vms/vm/cpus").unwrap(), b"4\n");
        let on_disk = stored(&ova);
        assert_eq!(on_disk.bytes, editor.state().descriptor.bytes);
        assert_eq!(settings::read(&on_disk, "vms/vm/cpus").unwrap(), "4\n");
    }

    #[test]
    fn settings_reads_build_the_settings_view_once_per_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let (editor, _ova) = editor(dir.path());
        let paths = ["vms/vm/cpus", "vms/vm/memory", "vms/vm/name"];
        let expected: Vec<String> = paths
            .iter()
            .map(|p| settings::read(&editor.state().descriptor, p).unwrap())
            .collect();
        let before = parse_count::get();
        for _ in 0..3 {
            for (p, want) in paths.iter().zip(&expected) {
                assert_eq!(&*editor.read(p).unwrap(), want.as_bytes(), "{p}");
            }
        }
        let first = parses_since(before);
        // Nine reads of three files: one settings view of the descriptor, no model.
        assert!(first.0 <= 1 && first.1 == 0, "{first:?}");
        editor.store("vms/vm/cpus", b"3\n").unwrap();
        assert_eq!(
            &*editor.read("vms/vm/cpus").unwrap(),
            b"3\n",
            "a commit renews them"
        );
        assert!(editor.read("vms/vm/no-such-file").is_err());
    }

    #[test]
    fn a_store_without_its_check_still_checks_and_parses_once() {
        let dir = tempfile::tempdir().unwrap();
        let (editor, ova) = editor(dir.path());
        let before = parse_count::get();
        editor.store("vms/vm/memory", b"1024").unwrap();
        assert_eq!(parses_since(before), (2, 1));
        assert!(editor.store("vms/vm/memory", b"0").is_err());
        assert_eq!(
            settings::read(&stored(&ova), "vms/vm/memory").unwrap(),
            "1024\n"
        );
    }

    #[test]
    fn a_change_checked_before_another_commit_is_made_again_on_the_new_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let (editor, ova) = editor(dir.path());
        editor.check("vms/vm/cpus", b"4\n").unwrap();
        // Another handle commits in between: the prepared descriptor lacks its change.
        editor.mkdir("networks/lab").unwrap();
        editor.store("vms/vm/cpus", b"4\n").unwrap();
        let on_disk = stored(&ova);
        assert_eq!(settings::read(&on_disk, "vms/vm/cpus").unwrap(), "4\n");
        assert!(on_disk.networks.iter().any(|n| n.name.value == "lab"));
        // A check of other bytes is not taken for this store.
        editor.check("vms/vm/cpus", b"8\n").unwrap();
        editor.store("vms/vm/cpus", b"2\n").unwrap();
        assert_eq!(settings::read(&stored(&ova), "vms/vm/cpus").unwrap(), "2\n");
    }

    #[test]
    fn a_whole_descriptor_written_is_parsed_once_after_its_check() {
        let dir = tempfile::tempdir().unwrap();
        let (editor, ova) = editor(dir.path());
        let path = editor.descriptor_path.clone();
        let old = editor.read(&path).unwrap();
        let new = String::from_utf8(old.to_vec())
            .unwrap()
            .replace("<rasd:VirtualQuantity>512<", "<rasd:VirtualQuantity>2048<");
        assert_ne!(new.as_bytes(), &*old);
        editor.check(&path, new.as_bytes()).unwrap();
        let before = parse_count::get();
        editor.store(&path, new.as_bytes()).unwrap();
        assert_eq!(parses_since(before), (0, 0));
        assert_eq!(
            settings::read(&stored(&ova), "vms/vm/memory").unwrap(),
            "2048\n"
        );
    }
}
