//! The watch tree: one small node per watched directory holding only its own name, its parent
//! and its watch descriptor, so a million directories cost a million short names, not a million
//! full paths. Paths are rebuilt on demand by walking up to the root.
//!
//! Layout (about 40 heap bytes per directory, see BENCHMARKS.md):
//! - nodes are 20-byte records in one `Vec`, addressed by `NodeId`; removed nodes go on a free
//!   list threaded through their `next` field and are reused; trailing free slots are released
//!   once more than half the slots are free (ids never change: the worker holds them);
//! - names live in one byte arena (a LEB128 length, then the bytes), so a node holds a `u32`
//!   offset, not an allocation; the arena is compacted when more than half of it is garbage;
//! - children hang off their parent as a singly linked list (`first`, then `next`) while there
//!   are at most `LIST_MAX` of them; a wider directory gets its own index, an open-addressing
//!   table of child ids keyed by a keyed hash of the name (`wides`), so adding to or looking up
//!   in a 100,000-wide directory costs about what it does in a narrow one;
//! - wd → node is the same kind of table of node ids, keyed by the wd each node holds.
#![forbid(unsafe_code)]

use std::hash::{BuildHasher, RandomState};

use crate::privsep::protocol::RelPath;

pub type NodeId = u32;
pub const ROOT: NodeId = 0;

/// No node: the end of a list, an empty table slot, a node without children.
const NIL: u32 = u32::MAX;
/// In `Node::first`: the directory is wide and its children are in `wides[first & !WIDE]`.
/// Node ids stay below it.
const WIDE: u32 = 1 << 31;
/// A directory with more children than this gets a name index; up to it, lookups scan the list.
const LIST_MAX: usize = 32;
/// A wide directory that falls under this many children goes back to a list.
const LIST_BACK: usize = LIST_MAX / 2;
/// Maximum loads of the tables, in eighths: the wd table (Fibonacci hashing of mostly
/// consecutive wds spreads them evenly) and the name indexes (each probe compares a name).
const WD_LOAD: usize = 7;
const NAME_LOAD: usize = 6;
/// Below these sizes nothing is compacted or trimmed (small in the unit tests, so that their
/// small trees are compacted and trimmed often).
const MIN_GARBAGE: usize = if cfg!(test) { 64 } else { 4096 };
const MIN_FREE: usize = if cfg!(test) { 16 } else { 1024 };

#[derive(Clone, Copy, Debug)]
struct Node {
    /// The parent; `NIL` for a free slot. The root is its own parent.
    parent: u32,
    /// Offset of the name in `Tree::names`.
    name: u32,
    /// The watch descriptor, or -1; a node with a wd is in `Tree::by_wd`.
    wd: i32,
    /// The first child of the list, `NIL`, or `WIDE | index` of the name index.
    first: u32,
    /// The next sibling in the parent's list (`NIL` in a wide parent); for a free slot, the
    /// next free slot.
    next: u32,
}

const FREE_NODE: Node = Node {
    parent: NIL,
    name: 0,
    wd: -1,
    first: NIL,
    next: NIL,
};

fn wide(first: u32) -> Option<usize> {
    (first != NIL && first & WIDE != 0).then_some((first & !WIDE) as usize)
}

/// The name stored at `off`: a LEB128 length, then the bytes.
#[inline]
fn name_at(names: &[u8], off: u32) -> &[u8] {
    let i = off as usize;
    let b = names[i];
    if b < 0x80 {
        return &names[i + 1..i + 1 + b as usize];
    }
    name_at_long(names, i)
}

#[cold]
fn name_at_long(names: &[u8], mut i: usize) -> &[u8] {
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let b = names[i];
        i += 1;
        len |= ((b & 0x7f) as usize) << shift;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    &names[i..i + len]
}

/// The arena bytes a name of `len` bytes takes.
fn entry_len(len: usize) -> usize {
    let mut n = 1;
    let mut l = len >> 7;
    while l > 0 {
        n += 1;
        l >>= 7;
    }
    n + len
}

fn push_entry(names: &mut Vec<u8>, name: &[u8]) {
    let mut l = name.len();
    while l >= 0x80 {
        names.push((l as u8 & 0x7f) | 0x80);
        l >>= 7;
    }
    names.push(l as u8);
    names.extend_from_slice(name);
}

/// Makes room for `more` elements, growing by a quarter at a time (not doubling): the slack a
/// growing tree leaves unused stays under 25%.
fn grow<T>(v: &mut Vec<T>, more: usize, min_step: usize) {
    if v.capacity() - v.len() < more {
        v.reserve_exact(more.max(v.len() / 4).max(min_step));
    }
}

fn wd_hash(wd: i32) -> u64 {
    (wd as u32 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// An open-addressing set of node ids (linear probing, backward-shift deletion, no tombstones).
/// The keys are not stored: `hash` recomputes a member's hash from the node it names, and
/// lookups compare through the caller's `eq`. The home slot is the hash's top bits.
#[derive(Debug, Default)]
struct IdTable {
    slots: Vec<u32>,
    len: u32,
}

impl IdTable {
    fn home(&self, h: u64) -> usize {
        (h >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(h);
        loop {
            let v = self.slots[i];
            if v == NIL {
                return None;
            }
            if eq(v) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().copied().filter(|&v| v != NIL)
    }

    /// The smallest capacity that holds `len` at no more than half the maximum load.
    fn capacity_for(len: usize, load: usize) -> usize {
        if len == 0 {
            return 0;
        }
        (len * 16).div_ceil(load).next_power_of_two().max(8)
    }

    fn place(&mut self, id: u32, h: u64) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(h);
        while self.slots[i] != NIL {
            i = (i + 1) & mask;
        }
        self.slots[i] = id;
    }

    fn resize(&mut self, cap: usize, hash: &impl Fn(u32) -> u64) {
        let old = std::mem::replace(&mut self.slots, vec![NIL; cap]);
        for v in old.into_iter().filter(|&v| v != NIL) {
            self.place(v, hash(v));
        }
    }

    /// Adds `id`, which is not in the table, under hash `h`.
    fn insert(&mut self, id: u32, h: u64, load: usize, hash: impl Fn(u32) -> u64) {
        let len = self.len as usize + 1;
        if len * 8 > self.slots.len() * load {
            self.resize(Self::capacity_for(len, load), &hash);
        }
        self.place(id, h);
        self.len += 1;
    }

    /// Empties slot `i`; shrinks the table once it is under a quarter of its maximum load.
    fn remove_at(&mut self, i: usize, load: usize, hash: impl Fn(u32) -> u64) {
        let mask = self.slots.len() - 1;
        let (mut hole, mut j) = (i, i);
        loop {
            j = (j + 1) & mask;
            let v = self.slots[j];
            if v == NIL {
                break;
            }
            // `v` moves back into the hole unless its home lies (cyclically) after the hole.
            let home = self.home(hash(v));
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = v;
                hole = j;
            }
        }
        self.slots[hole] = NIL;
        self.len -= 1;
        let len = self.len as usize;
        if (len * 8 * 4 < self.slots.len() * load && self.slots.len() > 8) || len == 0 {
            self.resize(Self::capacity_for(len, load), &hash);
        }
    }
}

#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
    /// The free slots of `nodes`, linked through `next`, lowest ids first after a trim.
    free: u32,
    free_len: usize,
    /// Nodes freed since the last trim: the next one waits for an eighth of the slots, so
    /// that its pass over them is paid for.
    freed: usize,
    /// Live nodes, the root included.
    live: usize,
    /// The name arena, and how many of its bytes no live node points at.
    names: Vec<u8>,
    garbage: usize,
    by_wd: IdTable,
    /// The name indexes of the wide directories; an empty table is a free entry.
    wides: Vec<IdTable>,
    wides_free: Vec<u32>,
    /// Keys the name hash: names come from whoever can write in the tree.
    hasher: RandomState,
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
            ..FREE_NODE
        };
        Tree {
            nodes: vec![root],
            free: NIL,
            free_len: 0,
            freed: 0,
            live: 1,
            // The root's empty name.
            names: vec![0],
            garbage: 0,
            by_wd: IdTable::default(),
            wides: Vec::new(),
            wides_free: Vec::new(),
            hasher: RandomState::new(),
        }
    }

    fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize).filter(|n| n.parent != NIL)
    }

    fn name(&self, id: NodeId) -> &[u8] {
        name_at(&self.names, self.nodes[id as usize].name)
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn watched(&self) -> usize {
        self.by_wd.len as usize
    }

    pub fn exists(&self, id: NodeId) -> bool {
        self.node(id).is_some()
    }

    /// The child of `p` named `name`; and, for a listed directory, how many children were
    /// scanned (all of them when it is not found).
    fn find_child(&self, p: &Node, name: &[u8]) -> (Option<NodeId>, usize) {
        let (nodes, names) = (&self.nodes, &self.names);
        if let Some(w) = wide(p.first) {
            let h = self.hasher.hash_one(name);
            let slot = self.wides[w].find(h, |v| name_at(names, nodes[v as usize].name) == name);
            return (slot.map(|s| self.wides[w].slots[s]), 0);
        }
        let (mut c, mut n) = (p.first, 0);
        while c != NIL {
            let cn = &nodes[c as usize];
            if name_at(names, cn.name) == name {
                return (Some(c), n);
            }
            n += 1;
            c = cn.next;
        }
        (None, n)
    }

    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        self.find_child(self.node(parent)?, name).0
    }

    /// Adds (or finds) the directory `name` under `parent`.
    pub fn add(&mut self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        let p = *self.node(parent)?;
        let (found, listed) = self.find_child(&p, name);
        if found.is_some() {
            return found;
        }
        let id = self.alloc(parent, name)?;
        self.link(parent, id, listed);
        Some(id)
    }

    /// Appends `name` to the arena; `None` if the arena would pass 4 GiB.
    fn push_name(&mut self, name: &[u8]) -> Option<u32> {
        let need = entry_len(name.len());
        if self.names.len() + need > u32::MAX as usize && self.garbage > 0 {
            self.compact_names();
        }
        let off = u32::try_from(self.names.len()).ok()?;
        if off as usize + need > u32::MAX as usize {
            return None;
        }
        grow(&mut self.names, need, 256);
        push_entry(&mut self.names, name);
        Some(off)
    }

    /// A new node `name` under `parent`, not linked yet: a free slot if there is one.
    fn alloc(&mut self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        if self.free == NIL && self.nodes.len() >= WIDE as usize {
            return None;
        }
        let node = Node {
            parent,
            name: self.push_name(name)?,
            ..FREE_NODE
        };
        let id = if self.free != NIL {
            let id = self.free;
            self.free = self.nodes[id as usize].next;
            self.free_len -= 1;
            self.nodes[id as usize] = node;
            id
        } else {
            grow(&mut self.nodes, 1, 64);
            self.nodes.push(node);
            (self.nodes.len() - 1) as NodeId
        };
        self.live += 1;
        Some(id)
    }

    /// Links `id` into `parent`'s children; `listed` is how many a list holds (if it is one).
    fn link(&mut self, parent: NodeId, id: NodeId, listed: usize) {
        let first = self.nodes[parent as usize].first;
        if wide(first).is_none() && listed < LIST_MAX {
            self.nodes[id as usize].next = first;
            self.nodes[parent as usize].first = id;
            return;
        }
        let w = match wide(first) {
            Some(w) => w,
            None => self.widen(parent),
        };
        let (nodes, names, hasher) = (&self.nodes, &self.names, &self.hasher);
        let hash = |v: u32| hasher.hash_one(name_at(names, nodes[v as usize].name));
        self.wides[w].insert(id, hash(id), NAME_LOAD, hash);
    }

    /// Moves the list of `parent`'s children into a new name index; returns its index.
    fn widen(&mut self, parent: NodeId) -> usize {
        let mut table = IdTable::default();
        let mut c = std::mem::replace(&mut self.nodes[parent as usize].first, NIL);
        while c != NIL {
            let next = std::mem::replace(&mut self.nodes[c as usize].next, NIL);
            let (nodes, names, hasher) = (&self.nodes, &self.names, &self.hasher);
            let hash = |v: u32| hasher.hash_one(name_at(names, nodes[v as usize].name));
            table.insert(c, hash(c), NAME_LOAD, hash);
            c = next;
        }
        let w = match self.wides_free.pop() {
            Some(w) => {
                self.wides[w as usize] = table;
                w as usize
            }
            None => {
                self.wides.push(table);
                self.wides.len() - 1
            }
        };
        self.nodes[parent as usize].first = WIDE | w as u32;
        w
    }

    /// Moves a wide directory's children back into a list and frees its index.
    fn narrow(&mut self, parent: NodeId, w: usize) {
        let table = std::mem::take(&mut self.wides[w]);
        self.wides_free.push(w as u32);
        let mut first = NIL;
        for c in table.iter() {
            self.nodes[c as usize].next = first;
            first = c;
        }
        self.nodes[parent as usize].first = first;
    }

    /// Takes `id` out of its parent's children.
    fn unlink(&mut self, id: NodeId) {
        let Node { parent, next, .. } = self.nodes[id as usize];
        let first = self.nodes[parent as usize].first;
        if let Some(w) = wide(first) {
            let (nodes, names, hasher) = (&self.nodes, &self.names, &self.hasher);
            let hash = |v: u32| hasher.hash_one(name_at(names, nodes[v as usize].name));
            if let Some(slot) = self.wides[w].find(hash(id), |v| v == id) {
                self.wides[w].remove_at(slot, NAME_LOAD, hash);
            }
            if (self.wides[w].len as usize) < LIST_BACK {
                self.narrow(parent, w);
            }
        } else if first == id {
            self.nodes[parent as usize].first = next;
        } else {
            let mut c = first;
            while c != NIL {
                let cn = self.nodes[c as usize].next;
                if cn == id {
                    self.nodes[c as usize].next = next;
                    break;
                }
                c = cn;
            }
        }
        self.nodes[id as usize].next = NIL;
    }

    /// Records the watch of `id`; a wd the kernel reuses for another inode is taken from its old
    /// owner, which returns that node's id.
    /// A negative `wd` clears the watch of `id`.
    pub fn set_wd(&mut self, id: NodeId, wd: i32) -> Option<NodeId> {
        if wd < 0 {
            if self.exists(id) {
                self.unmap_wd(id);
            }
            return None;
        }
        let old = match self.by_wd(wd) {
            Some(o) if o == id => return None,
            Some(o) => {
                self.unmap_wd(o);
                Some(o)
            }
            None => None,
        };
        if self.exists(id) {
            self.unmap_wd(id);
            self.nodes[id as usize].wd = wd;
            let nodes = &self.nodes;
            self.by_wd
                .insert(id, wd_hash(wd), WD_LOAD, |v| wd_hash(nodes[v as usize].wd));
        }
        old
    }

    /// Takes `id`'s wd (if any) out of `by_wd`.
    fn unmap_wd(&mut self, id: NodeId) -> Option<i32> {
        let wd = self.nodes[id as usize].wd;
        if wd < 0 {
            return None;
        }
        let nodes = &self.nodes;
        let hash = |v: u32| wd_hash(nodes[v as usize].wd);
        let slot = self.by_wd.find(wd_hash(wd), |v| v == id);
        if let Some(slot) = slot {
            self.by_wd.remove_at(slot, WD_LOAD, hash);
        }
        self.nodes[id as usize].wd = -1;
        slot.map(|_| wd)
    }

    pub fn by_wd(&self, wd: i32) -> Option<NodeId> {
        if wd < 0 {
            return None;
        }
        let nodes = &self.nodes;
        let slot = self
            .by_wd
            .find(wd_hash(wd), |v| nodes[v as usize].wd == wd)?;
        Some(self.by_wd.slots[slot])
    }

    /// The kernel dropped this watch (IN_IGNORED).
    pub fn forget_wd(&mut self, wd: i32) {
        if let Some(id) = self.by_wd(wd) {
            self.unmap_wd(id);
        }
    }

    /// `path(id)`, then `/extra` if `extra` is given (no slash after the root).
    fn path_with(&self, id: NodeId, extra: Option<&[u8]>) -> Vec<u8> {
        let mut len = 0;
        let mut cur = id;
        while cur != ROOT && self.exists(cur) {
            len += self.name(cur).len() + 1;
            cur = self.nodes[cur as usize].parent;
        }
        let base = len.saturating_sub(1);
        let total = match extra {
            Some(e) if base > 0 => base + 1 + e.len(),
            Some(e) => e.len(),
            None => base,
        };
        let mut v = vec![b'/'; total];
        let mut end = base;
        cur = id;
        while cur != ROOT && self.exists(cur) {
            let name = self.name(cur);
            v[end - name.len()..end].copy_from_slice(name);
            end = (end - name.len()).saturating_sub(1);
            cur = self.nodes[cur as usize].parent;
        }
        if let Some(e) = extra {
            v[total - e.len()..].copy_from_slice(e);
        }
        v
    }

    pub fn path(&self, id: NodeId) -> RelPath {
        RelPath(self.path_with(id, None))
    }

    /// `path(id)/name` without building intermediate strings twice.
    pub fn child_path(&self, id: NodeId, name: &[u8]) -> RelPath {
        RelPath(self.path_with(id, Some(name)))
    }

    /// The directory at `path` (relative, `/`-separated; the root is empty), if known.
    pub fn lookup(&self, path: &[u8]) -> Option<NodeId> {
        let mut id = ROOT;
        for name in path.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
            id = self.child(id, name)?;
        }
        Some(id)
    }

    /// Pushes the children of `n` on `out`.
    fn push_children(&self, n: &Node, out: &mut Vec<NodeId>) {
        match wide(n.first) {
            Some(w) => out.extend(self.wides[w].iter()),
            None => {
                let mut c = n.first;
                while c != NIL {
                    out.push(c);
                    c = self.nodes[c as usize].next;
                }
            }
        }
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
                self.push_children(node, &mut stack);
                // Every node waiting on the stack counts too.
                if seen + stack.len() > limit {
                    return false;
                }
            }
        }
        true
    }

    /// The children of `id`: in the order they were added while the directory is narrow (at
    /// most `LIST_MAX` = 32 children), in no particular order when it is wider.
    pub fn children(&self, id: NodeId) -> Vec<NodeId> {
        let mut out = Vec::new();
        if let Some(n) = self.node(id) {
            self.push_children(n, &mut out);
            if wide(n.first).is_none() {
                out.reverse();
            }
        }
        out
    }

    /// Moves `id` to `new_parent` under `new_name` (a rename within the tree: watches stay valid).
    /// A directory already there under that name is replaced; its watches are returned.
    pub fn rename(&mut self, id: NodeId, new_parent: NodeId, new_name: &[u8]) -> Vec<i32> {
        if id == ROOT
            || !self.exists(id)
            || !self.exists(new_parent)
            || self.is_ancestor(id, new_parent)
        {
            return Vec::new();
        }
        let mut dropped = Vec::new();
        if let Some(existing) = self.child(new_parent, new_name) {
            if existing != id {
                dropped = self.remove(existing);
                // `existing` held `id` (a rename onto an ancestor): gone with it.
                if !self.exists(id) {
                    return dropped;
                }
            }
        }
        // Out of the old parent's index while the node still has the name it is hashed under.
        self.unlink(id);
        let old = self.nodes[id as usize].name;
        if name_at(&self.names, old) != new_name {
            let Some(off) = self.push_name(new_name) else {
                // No room for the name (a 4 GiB arena): forget the directory instead.
                let parent = self.nodes[id as usize].parent;
                let listed = self.list_len(parent);
                self.link(parent, id, listed);
                dropped.extend(self.remove(id));
                return dropped;
            };
            // Re-read: pushing may have compacted the arena.
            let old = self.nodes[id as usize].name;
            self.garbage += entry_len(name_at(&self.names, old).len());
            self.nodes[id as usize].name = off;
        }
        self.nodes[id as usize].parent = new_parent;
        let listed = self.list_len(new_parent);
        self.link(new_parent, id, listed);
        self.tidy();
        dropped
    }

    /// How many children a listed directory has, counted up to `LIST_MAX`.
    fn list_len(&self, id: NodeId) -> usize {
        let mut c = self.nodes[id as usize].first;
        let mut n = 0;
        if wide(c).is_some() {
            return n;
        }
        while c != NIL && n < LIST_MAX {
            n += 1;
            c = self.nodes[c as usize].next;
        }
        n
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
        if id == ROOT || !self.exists(id) {
            return Vec::new();
        }
        self.unlink(id);
        let mut wds = Vec::new();
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            let n = self.nodes[cur as usize];
            self.push_children(&n, &mut stack);
            if let Some(w) = wide(n.first) {
                self.wides[w] = IdTable::default();
                self.wides_free.push(w as u32);
            }
            wds.extend(self.unmap_wd(cur));
            self.garbage += entry_len(self.name(cur).len());
            self.nodes[cur as usize] = Node {
                next: self.free,
                ..FREE_NODE
            };
            self.free = cur;
            self.free_len += 1;
            self.freed += 1;
            self.live -= 1;
        }
        self.tidy();
        wds
    }

    /// Returns memory after removals: compacts the name arena once more than half of it is
    /// garbage (and at least 4 KiB), releases the trailing free node slots once more than half the slots are free,
    /// and drops freed name indexes at the end of `wides`. Node ids do not change.
    fn tidy(&mut self) {
        // The pass visits every slot: it waits for at least as many garbage bytes.
        if self.garbage >= MIN_GARBAGE.max(self.nodes.len()) && self.garbage * 2 > self.names.len()
        {
            self.compact_names();
        }
        if self.free_len >= MIN_FREE
            && self.free_len > self.live
            && self.freed >= self.nodes.len() / 8
        {
            self.trim_nodes();
        }
        if self.wides.last().is_some_and(|t| t.slots.is_empty()) {
            while self.wides.last().is_some_and(|t| t.slots.is_empty()) {
                self.wides.pop();
            }
            let n = self.wides.len() as u32;
            self.wides_free.retain(|&w| w < n);
            if self.wides.capacity() > 2 * self.wides.len() {
                self.wides.shrink_to_fit();
                self.wides_free.shrink_to_fit();
            }
        }
    }

    /// Copies the live names into a new arena, in node order.
    fn compact_names(&mut self) {
        let mut out = Vec::with_capacity(self.names.len() - self.garbage);
        for n in self.nodes.iter_mut().filter(|n| n.parent != NIL) {
            let name = name_at(&self.names, n.name);
            n.name = out.len() as u32;
            push_entry(&mut out, name);
        }
        self.names = out;
        self.garbage = 0;
    }

    /// Drops the free slots at the end of `nodes` and rebuilds the free list, lowest id first.
    fn trim_nodes(&mut self) {
        let keep = self
            .nodes
            .iter()
            .rposition(|n| n.parent != NIL)
            .unwrap_or(0)
            + 1;
        self.nodes.truncate(keep);
        self.nodes.shrink_to_fit();
        self.free = NIL;
        self.free_len = 0;
        for (i, n) in self.nodes.iter_mut().enumerate().rev() {
            if n.parent == NIL {
                n.next = self.free;
                self.free = i as u32;
                self.free_len += 1;
            }
        }
        self.freed = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    impl Tree {
        /// Checks every invariant of the layout.
        fn check(&self) {
            let mut live = 0;
            let mut name_bytes = 0;
            let mut wds = 0;
            let mut linked = 0;
            for (i, n) in self.nodes.iter().enumerate() {
                if n.parent == NIL {
                    continue;
                }
                let id = i as NodeId;
                live += 1;
                name_bytes += entry_len(self.name(id).len());
                if id != ROOT {
                    assert!(self.exists(n.parent), "parent of {id} is live");
                    // Found under its name: in its parent's list or index.
                    assert_eq!(self.child(n.parent, self.name(id)), Some(id));
                    assert!(!self.is_ancestor(id, n.parent), "cycle at {id}");
                }
                // Each node is some node's child once: the children add up.
                let mut kids = Vec::new();
                self.push_children(n, &mut kids);
                linked += kids.len();
                for &c in &kids {
                    assert_eq!(self.nodes[c as usize].parent, id);
                }
                match wide(n.first) {
                    Some(w) => {
                        let t = &self.wides[w];
                        assert!(t.len as usize >= LIST_BACK);
                        assert_eq!(t.iter().count(), t.len as usize);
                    }
                    None => assert!(kids.len() <= LIST_MAX),
                }
                if n.wd >= 0 {
                    wds += 1;
                    assert_eq!(self.by_wd(n.wd), Some(id));
                }
            }
            assert_eq!(live, self.live);
            assert_eq!(linked, live - 1);
            assert_eq!(wds, self.watched());
            assert_eq!(self.by_wd.iter().count(), self.watched());
            assert_eq!(name_bytes + self.garbage, self.names.len());
            let (mut f, mut count) = (self.free, 0);
            while f != NIL {
                assert_eq!(self.nodes[f as usize].parent, NIL);
                count += 1;
                f = self.nodes[f as usize].next;
            }
            assert_eq!(count, self.free_len);
            assert_eq!(live + count, self.nodes.len());
        }
    }

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
        assert_eq!(t.child_path(c, b"f").as_bytes(), b"a/b/c d/f");
        assert_eq!(t.child_path(ROOT, b"f").as_bytes(), b"f");
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
        t.check();
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
        t.check();
    }

    #[test]
    fn rename_onto_an_ancestor_removes_the_directory_with_it() {
        let mut t = Tree::new();
        let a = t.add(ROOT, b"a").unwrap();
        let b = t.add(a, b"b").unwrap();
        let c = t.add(b, b"c").unwrap();
        t.set_wd(b, 1);
        t.set_wd(c, 2);
        let mut dropped = t.rename(c, a, b"b");
        dropped.sort();
        assert_eq!(dropped, vec![1, 2]);
        assert!(!t.exists(b) && !t.exists(c));
        assert!(t.children(a).is_empty());
        t.check();
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
        // A new wd for a watched node replaces its old one.
        assert_eq!(t.set_wd(b, 6), None);
        assert_eq!(t.by_wd(5), None);
        assert_eq!(t.by_wd(6), Some(b));
        assert_eq!(t.watched(), 1);
        t.forget_wd(6);
        assert_eq!(t.by_wd(6), None);
        assert_eq!(t.watched(), 0);
        t.check();
    }

    #[test]
    fn removing_a_subtree_returns_every_wd_below_it() {
        let mut t = Tree::new();
        let top = t.add(ROOT, b"top").unwrap();
        let keep = t.add(ROOT, b"keep").unwrap();
        t.set_wd(keep, 1);
        let mut want = Vec::new();
        let mut wd = 10;
        // Three levels: a narrow level, then a wide one (40 children), then leaves; some
        // directories unwatched.
        for i in 0..5 {
            let a = t.add(top, format!("a{i}").as_bytes()).unwrap();
            t.set_wd(a, wd);
            want.push(wd);
            wd += 1;
            for j in 0..40 {
                let b = t.add(a, format!("b{j}").as_bytes()).unwrap();
                if j % 3 != 0 {
                    t.set_wd(b, wd);
                    want.push(wd);
                    wd += 1;
                }
                let c = t.add(b, b"c").unwrap();
                t.set_wd(c, wd);
                want.push(wd);
                wd += 1;
            }
        }
        t.check();
        assert_eq!(t.watched(), want.len() + 1);
        let mut gone = t.remove(top);
        gone.sort();
        assert_eq!(gone, want);
        for wd in want {
            assert_eq!(t.by_wd(wd), None);
        }
        assert_eq!(t.watched(), 1);
        assert_eq!(t.len(), 2);
        assert_eq!(t.by_wd(1), Some(keep));
        assert!(t.remove(top).is_empty(), "a removed node is gone");
        t.check();
    }

    #[test]
    fn removed_nodes_are_reused() {
        let mut t = Tree::new();
        let a = t.add(ROOT, b"a").unwrap();
        let b = t.add(a, b"b").unwrap();
        let c = t.add(ROOT, b"c").unwrap();
        let slots = t.nodes.len();
        t.remove(a);
        assert!(!t.exists(a) && !t.exists(b));
        let x = t.add(c, b"x").unwrap();
        let y = t.add(x, b"y").unwrap();
        let mut reused = vec![x, y];
        reused.sort();
        let mut freed = vec![a, b];
        freed.sort();
        assert_eq!(reused, freed);
        assert_eq!(t.nodes.len(), slots);
        assert_eq!(t.path(y).as_bytes(), b"c/x/y");
        assert_eq!(t.lookup(b"a"), None);
        assert_eq!(t.lookup(b"c/x/y"), Some(y));
        t.check();
    }

    #[test]
    fn compaction_keeps_every_path() {
        let mut t = Tree::new();
        let mut ids = Vec::new();
        for i in 0..3000usize {
            let parent = if i < 10 { ROOT } else { ids[(i - 10) / 10] };
            let id = t.add(parent, format!("dir-{i:06}").as_bytes()).unwrap();
            t.set_wd(id, i as i32 + 1);
            ids.push(id);
        }
        // Rename a third of the leaves (garbage in the arena), then remove 9 of the 10 top
        // subtrees.
        for &id in ids.iter().skip(2000).step_by(3) {
            let p = t.nodes[id as usize].parent;
            let name = [t.name(id), b".renamed"].concat();
            assert!(t.rename(id, p, &name).is_empty());
        }
        t.check();
        let want: Vec<(usize, NodeId, Vec<u8>)> = (ids.iter().enumerate())
            .map(|(i, &id)| (i, id, t.path(id).0))
            .collect();
        let (arena, slots) = (t.names.len(), t.nodes.len());
        for &top in &ids[..9] {
            t.remove(top);
        }
        t.check();
        assert!(t.names.len() < arena / 2, "the arena was compacted");
        assert!(
            t.nodes.len() < slots / 2,
            "trailing node slots were released"
        );
        let verify = |t: &Tree, extra: usize| {
            let mut left = 0;
            for (i, id, path) in &want {
                if !path.starts_with(b"dir-000009") {
                    assert!(t.lookup(path).is_none());
                    continue;
                }
                left += 1;
                assert_eq!(&t.path(*id).0, path);
                assert_eq!(t.lookup(path), Some(*id));
                assert_eq!(t.by_wd(*i as i32 + 1), Some(*id));
            }
            assert_eq!(left, t.len() - 1 - extra);
        };
        verify(&t, 0);
        t.compact_names();
        verify(&t, 0);
        assert_eq!(t.garbage, 0);
        // New directories reuse free slots.
        let slots = t.nodes.len();
        let n = t.add(ROOT, b"new").unwrap();
        assert!((n as usize) < slots);
        assert_eq!(t.path(n).as_bytes(), b"new");
        verify(&t, 1);
        t.check();
    }

    #[test]
    fn a_10k_wide_directory() {
        let mut t = Tree::new();
        let d = t.add(ROOT, b"wide").unwrap();
        let ids: Vec<NodeId> = (0..10_000)
            .map(|i| t.add(d, format!("{i}").as_bytes()).unwrap())
            .collect();
        assert!(wide(t.nodes[d as usize].first).is_some());
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(t.child(d, format!("{i}").as_bytes()), Some(id));
            assert_eq!(t.add(d, format!("{i}").as_bytes()), Some(id));
        }
        assert_eq!(t.lookup(b"wide/9999"), Some(ids[9999]));
        assert_eq!(t.child(d, b"10000"), None);
        assert_eq!(t.children(d).len(), 10_000);
        assert!(!t.subtree_at_most(d, 10_000));
        assert!(t.subtree_at_most(d, 10_001));
        t.check();
        // Remove all but a few: the index shrinks, then goes back to a list.
        for &id in &ids[..9_995] {
            t.remove(id);
        }
        assert_eq!(wide(t.nodes[d as usize].first), None);
        assert!(t.wides.is_empty());
        let mut left = t.children(d);
        left.sort();
        assert_eq!(left, ids[9_995..]);
        for (i, &id) in ids.iter().enumerate().skip(9_995) {
            assert_eq!(t.child(d, format!("{i}").as_bytes()), Some(id));
        }
        t.check();
    }

    #[test]
    fn names_with_any_bytes() {
        let long = vec![b'L'; 300];
        let names: Vec<&[u8]> = vec![
            b"new\nline",
            b"100%",
            b"%INCLUDE-LIST%",
            b"-rf",
            b"--delete",
            b"\xff\xfe\x80",
            b"caf\xc3\xa9",
            b" space ",
            b"\t",
            b"*",
            b"a\\b",
            &long,
        ];
        for width in [1, 40] {
            let mut t = Tree::new();
            let d = t.add(ROOT, b"d").unwrap();
            for i in 0..width {
                t.add(d, format!("filler{i}").as_bytes()).unwrap();
            }
            let mut ids = Vec::new();
            for name in &names {
                let id = t.add(d, name).unwrap();
                let inner = t.add(id, name).unwrap();
                assert_eq!(t.path(inner).0, [b"d/", *name, b"/", *name].concat());
                assert_eq!(t.child(d, name), Some(id));
                assert_eq!(t.lookup(&t.path(inner).0), Some(inner));
                ids.push(id);
            }
            // Near-misses do not match.
            assert_eq!(t.child(d, b"new"), None);
            assert_eq!(t.child(d, &long[..299]), None);
            assert_eq!(t.child(d, b"\xff\xfe"), None);
            let mut all: Vec<NodeId> = ids.clone();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), names.len());
            t.check();
        }
    }

    /// Random operations against a plain model (parent, name, wd per live id).
    #[test]
    fn random_operations_match_a_model() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut t = Tree::new();
        let mut model: HashMap<NodeId, (NodeId, Vec<u8>, i32)> = HashMap::new();
        let mut next_wd = 1;
        fn model_path(m: &HashMap<NodeId, (NodeId, Vec<u8>, i32)>, mut id: NodeId) -> Vec<u8> {
            let mut parts = Vec::new();
            while id != ROOT {
                let (p, name, _) = &m[&id];
                parts.push(name.clone());
                id = *p;
            }
            parts.reverse();
            parts.join(&b'/')
        }
        fn subtree(m: &HashMap<NodeId, (NodeId, Vec<u8>, i32)>, id: NodeId) -> Vec<NodeId> {
            let mut out = vec![id];
            let mut i = 0;
            while i < out.len() {
                let cur = out[i];
                out.extend(m.iter().filter(|(_, v)| v.0 == cur).map(|(k, _)| *k));
                i += 1;
            }
            out
        }
        for step in 0..10_000 {
            let mut live: Vec<NodeId> = model.keys().copied().collect();
            live.sort();
            live.push(ROOT);
            let pick = |r: usize| live[r % live.len()];
            match rnd(20) {
                0..=11 => {
                    // Few names per level, many children under the root's first dirs: both
                    // lists and wide indexes.
                    let parent = if rnd(3) == 0 {
                        live[rnd(live.len().min(3))]
                    } else {
                        pick(rnd(1 << 20))
                    };
                    let name =
                        format!("n{}", rnd(if parent == ROOT { 60 } else { 30 })).into_bytes();
                    let known = model
                        .iter()
                        .find(|(_, v)| v.0 == parent && v.1 == name)
                        .map(|(k, _)| *k);
                    let id = t.add(parent, &name).unwrap();
                    match known {
                        Some(k) => assert_eq!(k, id),
                        None => {
                            assert!(!model.contains_key(&id));
                            model.insert(id, (parent, name, -1));
                        }
                    }
                }
                12 => {
                    let id = pick(rnd(1 << 20));
                    let gone = t.remove(id);
                    if id == ROOT {
                        assert!(gone.is_empty());
                    } else {
                        let sub = subtree(&model, id);
                        let mut want: Vec<i32> =
                            sub.iter().map(|s| model[s].2).filter(|&w| w >= 0).collect();
                        want.sort();
                        let mut gone = gone;
                        gone.sort();
                        assert_eq!(gone, want);
                        for s in sub {
                            model.remove(&s);
                        }
                    }
                }
                13 | 14 => {
                    let (id, to) = (pick(rnd(1 << 20)), pick(rnd(1 << 20)));
                    let name = format!("n{}", rnd(30)).into_bytes();
                    let mut dropped = t.rename(id, to, &name);
                    dropped.sort();
                    let cycle = {
                        let mut b = to;
                        loop {
                            if b == id {
                                break true;
                            }
                            if b == ROOT {
                                break false;
                            }
                            b = model[&b].0;
                        }
                    };
                    if id == ROOT || cycle {
                        assert!(dropped.is_empty());
                    } else {
                        let existing = model
                            .iter()
                            .find(|(k, v)| v.0 == to && v.1 == name && **k != id)
                            .map(|(k, _)| *k);
                        let mut want = Vec::new();
                        if let Some(e) = existing {
                            for s in subtree(&model, e) {
                                if model[&s].2 >= 0 {
                                    want.push(model[&s].2);
                                }
                                model.remove(&s);
                            }
                        }
                        if let Some(m) = model.get_mut(&id) {
                            m.0 = to;
                            m.1 = name;
                        }
                        want.sort();
                        assert_eq!(dropped, want);
                    }
                }
                15..=17 => {
                    let id = pick(rnd(1 << 20));
                    if id != ROOT {
                        // Sometimes an old wd again (the kernel reusing it).
                        let wd = if rnd(4) == 0 && next_wd > 1 {
                            1 + rnd(next_wd as usize - 1) as i32
                        } else {
                            next_wd
                        };
                        next_wd += 1;
                        let owner = model.iter().find(|(_, v)| v.2 == wd).map(|(k, _)| *k);
                        let old = t.set_wd(id, wd);
                        assert_eq!(old, owner.filter(|&o| o != id));
                        if let Some(o) = owner {
                            model.get_mut(&o).unwrap().2 = -1;
                        }
                        model.get_mut(&id).unwrap().2 = wd;
                    }
                }
                _ => {
                    let wd = 1 + rnd(next_wd as usize) as i32;
                    t.forget_wd(wd);
                    for v in model.values_mut().filter(|v| v.2 == wd) {
                        v.2 = -1;
                    }
                }
            }
            assert_eq!(t.len(), model.len() + 1);
            if step % 250 == 0 {
                t.check();
                for (&id, (_, _, wd)) in &model {
                    assert_eq!(t.path(id).0, model_path(&model, id));
                    assert_eq!(t.lookup(&model_path(&model, id)), Some(id));
                    if *wd >= 0 {
                        assert_eq!(t.by_wd(*wd), Some(id));
                    }
                }
                let watched: HashSet<i32> =
                    model.values().map(|v| v.2).filter(|&w| w >= 0).collect();
                assert_eq!(t.watched(), watched.len());
            }
        }
        t.check();
    }
}
