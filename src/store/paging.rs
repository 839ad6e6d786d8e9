//! Walking a tree: the engine is read a page at a time (a scan resumes after
//! the last key it returned), so no walk holds an engine-wide iterator or reads
//! a whole tree at once.

use std::ops::Bound;

use super::engine::Tree;
use super::{Store, StoreError};

/// Keys per page when the store walks a tree.
const PAGE: usize = 512;

/// Every entry of a tree from a start bound on, read a page at a time; each
/// step refused once the store has stopped.
pub(super) struct Entries<'a> {
    store: &'a Store,
    tree: Tree,
    from: Bound<Vec<u8>>,
    page: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl Iterator for Entries<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.store.usable() {
            self.done = true;
            return Some(Err(e));
        }
        if let Some(kv) = self.page.next() {
            return Some(Ok(kv));
        }
        if self.done {
            return None;
        }
        let range = (self.from.clone(), Bound::Unbounded);
        match self.store.engine.scan(self.tree, range, PAGE, false) {
            Ok(page) => {
                self.done = page.len() < PAGE;
                if let Some((k, _)) = page.last() {
                    self.from = Bound::Excluded(k.clone());
                }
                self.page = page.into_iter();
                let next = self.page.next();
                if next.is_none() {
                    self.done = true;
                }
                next.map(Ok)
            }
            Err(e) => {
                self.done = true;
                Some(Err(e.into()))
            }
        }
    }
}

impl Store {
    /// Every entry of `tree`, in key order.
    pub(super) fn entries(&self, tree: Tree) -> Entries<'_> {
        self.entries_from(tree, Bound::Unbounded)
    }

    pub(super) fn entries_from(&self, tree: Tree, from: Bound<Vec<u8>>) -> Entries<'_> {
        Entries {
            store: self,
            tree,
            from,
            page: Vec::new().into_iter(),
            done: false,
        }
    }
}
