//! The inode table: which node has which inode number.
//!
//! Nodes are recognised by identity ([`Node::identity`]): the folder that shows a node
//! returns the same object for it while it exists, so it keeps its number for the life of
//! the mount, across renames and commits. Numbers are never reused within a mount (a
//! monotonic counter), so a number the kernel still holds can never name another file.
//!
//! Slots are kept for the life of the mount, except:
//! - those of nodes that live in a lazy folder ([`crate::node::DirNode::is_lazy`]: a guest
//!   file system, whose children are many and expensive): they go when the kernel forgets
//!   them, and come back with a new number when looked up again. Listing such a folder
//!   numbers its children without the kernel holding them; when more than
//!   [`MAX_IDLE_FORGETTABLE`] such slots are idle, they are swept;
//! - a removed file (an unlinked scratch file) loses its slot at once, and one that is no
//!   longer in its folder (a setting a commit removed) when the kernel forgets it.

use std::collections::HashMap;

use crate::node::Node;

/// Inode number of the root directory (FUSE's fixed value).
pub const ROOT_INO: u64 = 1;

/// Forgettable slots held before those the kernel does not hold are swept (bounds the
/// table whatever a listing of a lazy folder adds).
pub const MAX_IDLE_FORGETTABLE: usize = 65_536;

/// Deepest nesting walked to build a path (bounds the loop whatever the table holds).
const MAX_DEPTH: usize = 256;

/// One known node.
pub struct Slot {
    /// The node.
    pub node: Node,
    /// Inode of the folder it was last seen in (the root is its own parent).
    pub parent: u64,
    /// Its name there ("" for the root).
    pub name: String,
    /// Lookups the kernel holds (entries replied minus forgotten).
    lookups: u64,
    /// Whether the slot goes when the kernel forgets it.
    forgettable: bool,
}

/// The table.
pub struct Table {
    slots: HashMap<u64, Slot>,
    by_identity: HashMap<usize, u64>,
    next: u64,
    /// Slots that are forgettable.
    forgettable: usize,
}

impl Table {
    /// A table holding `root` as inode 1.
    pub fn new(root: Node) -> Self {
        let mut t = Table {
            slots: HashMap::new(),
            by_identity: HashMap::new(),
            next: ROOT_INO + 1,
            forgettable: 0,
        };
        t.by_identity.insert(root.identity(), ROOT_INO);
        t.slots.insert(
            ROOT_INO,
            Slot {
                node: root,
                parent: ROOT_INO,
                name: String::new(),
                lookups: 1,
                forgettable: false,
            },
        );
        t
    }

    /// The slot of `ino`.
    pub fn get(&self, ino: u64) -> Option<&Slot> {
        self.slots.get(&ino)
    }

    /// The node of `ino`.
    pub fn node(&self, ino: u64) -> Option<Node> {
        self.slots.get(&ino).map(|s| s.node.clone())
    }

    /// Number of known nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether only the root is known.
    pub fn is_empty(&self) -> bool {
        self.slots.len() <= 1
    }

    /// The inode of `node`, found as `name` in folder `parent`: its number if known (its
    /// place updated), else a new one. `lookup` counts a reply that hands the kernel an
    /// entry (lookup, create, mkdir), not a listing.
    pub fn number(
        &mut self,
        parent: u64,
        name: &str,
        node: &Node,
        lookup: bool,
        forgettable: bool,
    ) -> u64 {
        let ino = match self.by_identity.get(&node.identity()) {
            Some(&ino) => ino,
            None => {
                if forgettable {
                    self.sweep_if_full();
                    self.forgettable += 1;
                }
                let ino = self.next;
                self.next += 1;
                self.by_identity.insert(node.identity(), ino);
                self.slots.insert(
                    ino,
                    Slot {
                        node: node.clone(),
                        parent,
                        name: name.to_string(),
                        lookups: 0,
                        forgettable,
                    },
                );
                ino
            }
        };
        if let Some(slot) = self.slots.get_mut(&ino) {
            if slot.parent != parent || slot.name != name {
                slot.parent = parent;
                slot.name = name.to_string();
            }
            if lookup {
                slot.lookups = slot.lookups.saturating_add(1);
            }
        }
        ino
    }

    /// Drops the slot of `node` (a file that no longer exists anywhere).
    pub fn remove(&mut self, node: &Node) {
        if let Some(ino) = self.by_identity.remove(&node.identity())
            && let Some(slot) = self.slots.remove(&ino)
            && slot.forgettable
        {
            self.forgettable = self.forgettable.saturating_sub(1);
        }
    }

    /// The kernel forgets `count` lookups of `ino`; `orphan` says its node is no longer in
    /// its folder.
    pub fn forget(&mut self, ino: u64, count: u64, orphan: bool) {
        let Some(slot) = self.slots.get_mut(&ino) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(count);
        if slot.lookups == 0 && (slot.forgettable || orphan) && ino != ROOT_INO {
            let node = slot.node.clone();
            self.remove(&node);
        }
    }

    /// Drops the forgettable slots the kernel holds no lookup of, when there are too many.
    fn sweep_if_full(&mut self) {
        if self.forgettable < MAX_IDLE_FORGETTABLE {
            return;
        }
        let idle: Vec<Node> = self
            .slots
            .values()
            .filter(|s| s.forgettable && s.lookups == 0)
            .map(|s| s.node.clone())
            .collect();
        for node in &idle {
            self.remove(node);
        }
    }

    /// The path of `ino` inside the mount, without a leading slash ("" for the root).
    pub fn path_of(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO && parts.len() < MAX_DEPTH {
            match self.slots.get(&cur) {
                Some(s) => {
                    parts.push(s.name.as_str());
                    cur = s.parent;
                }
                None => break,
            }
        }
        parts.reverse();
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_identity_and_are_never_reused() {
        let root = Node::symlink("root");
        let mut t = Table::new(root);
        let a = Node::symlink("a");
        let b = Node::symlink("b");
        let ia = t.number(ROOT_INO, "a", &a, true, false);
        assert_eq!(t.number(ROOT_INO, "a", &a.clone(), false, false), ia);
        let ib = t.number(ROOT_INO, "b", &b, false, false);
        assert_ne!(ia, ib);
        // A rename keeps the number and moves the name.
        assert_eq!(t.number(ib, "moved", &a, false, false), ia);
        assert_eq!(t.path_of(ia), "b/moved");
        t.remove(&a);
        assert!(t.get(ia).is_none());
        let again = t.number(ROOT_INO, "a", &a, true, false);
        assert!(again > ib, "a new number, never an old one");
    }

    #[test]
    fn only_lazy_slots_are_forgotten() {
        let mut t = Table::new(Node::symlink("root"));
        let kept = Node::symlink("k");
        let lazy = Node::symlink("l");
        let ik = t.number(ROOT_INO, "k", &kept, true, false);
        let il = t.number(ROOT_INO, "l", &lazy, true, true);
        t.number(ROOT_INO, "l", &lazy, true, true);
        t.forget(ik, 1, false);
        t.forget(il, 1, false);
        assert!(t.get(ik).is_some() && t.get(il).is_some());
        t.forget(il, 1, false);
        assert!(t.get(il).is_none());
        let orphan = Node::symlink("o");
        let io = t.number(ROOT_INO, "o", &orphan, true, false);
        t.forget(io, 1, true);
        assert!(
            t.get(io).is_none(),
            "a node no longer in its folder goes when forgotten"
        );
        t.forget(ROOT_INO, 10, true);
        assert!(t.get(ROOT_INO).is_some());
        assert!(t.get(0).is_none() && t.get(u64::MAX).is_none());
    }

    #[test]
    fn idle_slots_of_listings_are_swept() {
        let mut t = Table::new(Node::symlink("root"));
        let held = Node::symlink("held");
        let ih = t.number(ROOT_INO, "held", &held, true, true);
        let listed: Vec<Node> = (0..MAX_IDLE_FORGETTABLE + 10)
            .map(|i| Node::symlink(&i.to_string()))
            .collect();
        for (i, n) in listed.iter().enumerate() {
            t.number(ROOT_INO, &i.to_string(), n, false, true);
        }
        assert!(t.len() < MAX_IDLE_FORGETTABLE, "swept: {}", t.len());
        assert!(t.get(ih).is_some(), "a slot the kernel holds is kept");
    }
}
