//! The watch tree: one small node per watched directory holding only its own name, its parent
//! and its watch descriptor, so a million directories cost a million short names, not a million
//! full paths. Paths are rebuilt on demand by walking up to the root.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use crate::privsep::protocol::RelPath;

pub type NodeId = u32;
pub const ROOT: NodeId = 0;

#[derive(Debug)]
struct Node {
    parent: NodeId,
    name: Box<[u8]>,
    wd: i32,
    children: Vec<NodeId>,
}

#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Option<Node>>,
    free: Vec<NodeId>,
    by_wd: HashMap<i32, NodeId>,
    live: usize,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        let root = Node {
            parent: ROOT,
            name: Box::new([]),
            wd: -1,
            children: Vec::new(),
        };
        Tree {
            nodes: vec![Some(root)],
            free: Vec::new(),
            by_wd: HashMap::new(),
            live: 1,
        }
    }

    fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize).and_then(|n| n.as_ref())
    }

    fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id as usize).and_then(|n| n.as_mut())
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn watched(&self) -> usize {
        self.by_wd.len()
    }

    pub fn exists(&self, id: NodeId) -> bool {
        self.node(id).is_some()
    }

    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        let p = self.node(parent)?;
        p.children
            .iter()
            .copied()
            .find(|&c| self.node(c).is_some_and(|n| &*n.name == name))
    }

    /// Adds (or finds) the directory `name` under `parent`.
    pub fn add(&mut self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        if let Some(c) = self.child(parent, name) {
            return Some(c);
        }
        self.node(parent)?;
        let node = Node {
            parent,
            name: name.into(),
            wd: -1,
            children: Vec::new(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as NodeId
            }
        };
        self.live += 1;
        self.node_mut(parent)?.children.push(id);
        Some(id)
    }

    /// Records the watch of `id`; a wd the kernel reuses for another inode is taken from its old
    /// owner, which returns that node's id.
    pub fn set_wd(&mut self, id: NodeId, wd: i32) -> Option<NodeId> {
        let old = self.by_wd.insert(wd, id).filter(|&o| o != id);
        if let Some(o) = old {
            if let Some(n) = self.node_mut(o) {
                n.wd = -1;
            }
        }
        if let Some(n) = self.node_mut(id) {
            if n.wd >= 0 && n.wd != wd {
                let prev = n.wd;
                n.wd = wd;
                self.by_wd.remove(&prev);
            } else {
                n.wd = wd;
            }
        }
        old
    }

    pub fn by_wd(&self, wd: i32) -> Option<NodeId> {
        self.by_wd.get(&wd).copied()
    }

    /// The kernel dropped this watch (IN_IGNORED).
    pub fn forget_wd(&mut self, wd: i32) {
        if let Some(id) = self.by_wd.remove(&wd) {
            if let Some(n) = self.node_mut(id) {
                if n.wd == wd {
                    n.wd = -1;
                }
            }
        }
    }

    pub fn path(&self, id: NodeId) -> RelPath {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            match self.node(cur) {
                Some(n) => {
                    parts.push(&n.name);
                    cur = n.parent;
                }
                None => break,
            }
        }
        let mut v = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for (i, p) in parts.iter().rev().enumerate() {
            if i > 0 {
                v.push(b'/');
            }
            v.extend_from_slice(p);
        }
        RelPath(v)
    }

    /// `path(id)/name` without building intermediate strings twice.
    pub fn child_path(&self, id: NodeId, name: &[u8]) -> RelPath {
        self.path(id).join(name)
    }

    /// The directory at `path` (relative, `/`-separated; the root is empty), if known.
    pub fn lookup(&self, path: &[u8]) -> Option<NodeId> {
        let mut id = ROOT;
        for name in path.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
            id = self.child(id, name)?;
        }
        Some(id)
    }

    /// Whether the subtree at `id` holds at most `limit` directories (`id` included); stops
    /// counting past the limit.
    pub fn subtree_at_most(&self, id: NodeId, limit: usize) -> bool {
        let mut stack = vec![id];
        let mut seen = 0usize;
        while let Some(n) = stack.pop() {
            seen += 1;
            if seen > limit {
                return false;
            }
            if let Some(node) = self.node(n) {
                stack.extend_from_slice(&node.children);
            }
        }
        true
    }

    pub fn children(&self, id: NodeId) -> Vec<NodeId> {
        self.node(id)
            .map(|n| n.children.clone())
            .unwrap_or_default()
    }

    fn detach(&mut self, id: NodeId) {
        let parent = match self.node(id) {
            Some(n) => n.parent,
            None => return,
        };
        if let Some(p) = self.node_mut(parent) {
            p.children.retain(|&c| c != id);
        }
    }

    /// Moves `id` to `new_parent` under `new_name` (a rename within the tree: watches stay valid).
    /// A directory already there under that name is replaced; its watches are returned.
    pub fn rename(&mut self, id: NodeId, new_parent: NodeId, new_name: &[u8]) -> Vec<i32> {
        if id == ROOT || !self.exists(new_parent) || self.is_ancestor(id, new_parent) {
            return Vec::new();
        }
        let mut dropped = Vec::new();
        if let Some(existing) = self.child(new_parent, new_name) {
            if existing != id {
                dropped = self.remove(existing);
            }
        }
        self.detach(id);
        if let Some(n) = self.node_mut(id) {
            n.parent = new_parent;
            n.name = new_name.into();
        }
        if let Some(p) = self.node_mut(new_parent) {
            p.children.push(id);
        }
        dropped
    }

    fn is_ancestor(&self, a: NodeId, mut b: NodeId) -> bool {
        loop {
            if a == b {
                return true;
            }
            if b == ROOT {
                return false;
            }
            match self.node(b) {
                Some(n) => b = n.parent,
                None => return false,
            }
        }
    }

    /// Removes `id` and its whole subtree; returns the watch descriptors that were live.
    pub fn remove(&mut self, id: NodeId) -> Vec<i32> {
        if id == ROOT {
            return Vec::new();
        }
        self.detach(id);
        let mut wds = Vec::new();
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            if let Some(n) = self.nodes.get_mut(cur as usize).and_then(|n| n.take()) {
                if n.wd >= 0 && self.by_wd.get(&n.wd) == Some(&cur) {
                    self.by_wd.remove(&n.wd);
                    wds.push(n.wd);
                }
                stack.extend(n.children);
                self.free.push(cur);
                self.live -= 1;
            }
        }
        wds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_renames_and_subtree_removal() {
        let mut t = Tree::new();
        let a = t.add(ROOT, b"a").unwrap();
        let b = t.add(a, b"b").unwrap();
        let c = t.add(b, b"c d").unwrap();
        t.set_wd(a, 1);
        t.set_wd(b, 2);
        t.set_wd(c, 3);
        assert_eq!(t.path(c).as_bytes(), b"a/b/c d");
        assert_eq!(t.path(ROOT).as_bytes(), b"");
        let x = t.add(ROOT, b"x").unwrap();
        assert!(t.rename(b, x, b"moved").is_empty());
        assert_eq!(t.path(c).as_bytes(), b"x/moved/c d");
        assert_eq!(t.by_wd(3), Some(c));
        let mut gone = t.remove(x);
        gone.sort();
        assert_eq!(gone, vec![2, 3]);
        assert_eq!(t.by_wd(2), None);
        assert_eq!(t.len(), 2);
        assert!(t.child(ROOT, b"x").is_none());
    }

    #[test]
    fn rename_onto_existing_replaces_it_and_cycles_are_refused() {
        let mut t = Tree::new();
        let a = t.add(ROOT, b"a").unwrap();
        let b = t.add(ROOT, b"b").unwrap();
        t.set_wd(b, 7);
        assert_eq!(t.rename(a, ROOT, b"b"), vec![7]);
        assert_eq!(t.child(ROOT, b"b"), Some(a));
        let inner = t.add(a, b"in").unwrap();
        assert!(t.rename(a, inner, b"loop").is_empty());
        assert_eq!(t.path(inner).as_bytes(), b"b/in");
    }

    #[test]
    fn reused_wd_moves_to_the_new_node() {
        let mut t = Tree::new();
        let a = t.add(ROOT, b"a").unwrap();
        let b = t.add(ROOT, b"b").unwrap();
        t.set_wd(a, 5);
        assert_eq!(t.set_wd(b, 5), Some(a));
        assert_eq!(t.by_wd(5), Some(b));
        assert!(t.remove(a).is_empty());
        assert_eq!(t.by_wd(5), Some(b));
    }
}
