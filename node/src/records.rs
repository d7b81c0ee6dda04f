//! The Kademlia record store: libp2p's in-memory store, with providers answered in
//! turn.
//!
//! Kademlia answers a provider lookup with at most a replication factor's worth of
//! providers per peer asked, taken from the front of the stored list — and a
//! provider joins that list at the back. A skill with more providers than that
//! would only ever show its first ones: an agent that joined later would stay
//! invisible to every lookup. This store rotates the list by one on every read, so
//! each answer leaves out a different few, and repeated lookups (and the several
//! holders one lookup asks) between them name every provider held.

use std::{
    borrow::Cow,
    sync::atomic::{AtomicUsize, Ordering},
};

use libp2p::{
    PeerId,
    kad::{
        ProviderRecord, Record, RecordKey,
        store::{MemoryStore, RecordStore, Result},
    },
};

/// [`MemoryStore`], answering providers in turn (see the module docs).
pub struct RotatingStore {
    inner: MemoryStore,
    /// Reads of provider lists so far: the rotation of the next one.
    reads: AtomicUsize,
}

impl RotatingStore {
    /// An empty store for the node `local`.
    pub fn new(local: PeerId) -> RotatingStore {
        RotatingStore {
            inner: MemoryStore::new(local),
            reads: AtomicUsize::new(0),
        }
    }
}

impl RecordStore for RotatingStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(k)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        self.inner.put(r)
    }

    fn remove(&mut self, k: &RecordKey) {
        self.inner.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        self.inner.add_provider(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut providers = self.inner.providers(key);
        if !providers.is_empty() {
            let turn = self.reads.fetch_add(1, Ordering::Relaxed);
            let n = providers.len();
            providers.rotate_left(turn % n);
        }
        providers
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.inner.remove_provider(k, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eleven providers, answers of ten: every provider is named within two reads,
    /// and each read leaves out a different one. (The plain store always left out
    /// the last to arrive.)
    #[test]
    fn every_provider_comes_to_the_front_in_turn() {
        let mut store = RotatingStore::new(PeerId::random());
        let key = RecordKey::new(&"/starling/skill/s");
        let providers: Vec<PeerId> = (0..11).map(|_| PeerId::random()).collect();
        for p in &providers {
            store
                .add_provider(ProviderRecord::new(key.clone(), *p, Vec::new()))
                .unwrap();
        }
        let mut left_out = Vec::new();
        for _ in 0..11 {
            let answer: Vec<PeerId> = store
                .providers(&key)
                .into_iter()
                .take(10)
                .map(|r| r.provider)
                .collect();
            let missing: Vec<PeerId> = providers
                .iter()
                .filter(|p| !answer.contains(p))
                .copied()
                .collect();
            assert_eq!(missing.len(), 1);
            left_out.push(missing[0]);
        }
        left_out.sort();
        let mut all = providers.clone();
        all.sort();
        assert_eq!(
            left_out, all,
            "each provider is left out exactly once in 11 reads"
        );
    }
}
