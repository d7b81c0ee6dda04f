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
//!
//! It also holds more providers per key than libp2p's default, which keeps the
//! first twenty to arrive and ignores the rest. A skill held by a few hundred
//! agents would otherwise be known by twenty of them only: every agent looking
//! for its topic's mesh would ask those twenty, whose meshes fill up and prune the
//! rest. The bounds still cap what a peer flooding provider records can cost.

use std::{
    borrow::Cow,
    sync::atomic::{AtomicUsize, Ordering},
};

use libp2p::{
    PeerId,
    kad::{
        ProviderRecord, Record, RecordKey,
        store::{MemoryStore, MemoryStoreConfig, RecordStore, Result},
    },
};

/// Providers held per key (libp2p's default: twenty).
pub const MAX_PROVIDERS_PER_KEY: usize = 256;
/// Keys held providers of (libp2p's default: 1,024). With
/// [`MAX_PROVIDERS_PER_KEY`], at most 65,536 provider records, about 13 MB, however
/// many records peers send.
pub const MAX_PROVIDED_KEYS: usize = 256;

/// [`MemoryStore`], answering providers in turn (see the module docs).
pub struct RotatingStore {
    inner: MemoryStore,
    /// Reads of provider lists so far: the rotation of the next one.
    reads: AtomicUsize,
}

impl RotatingStore {
    /// An empty store for the node `local`.
    pub fn new(local: PeerId) -> RotatingStore {
        let config = MemoryStoreConfig {
            max_providers_per_key: MAX_PROVIDERS_PER_KEY,
            max_provided_keys: MAX_PROVIDED_KEYS,
            ..MemoryStoreConfig::default()
        };
        RotatingStore {
            inner: MemoryStore::with_config(local, config),
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

    /// A skill with more holders than libp2p's default keeps: every one of them is
    /// stored, and answers of six name each in turn; beyond the bound, new ones are
    /// ignored.
    #[test]
    fn a_popular_skill_keeps_hundreds_of_providers_and_names_them_all() {
        let mut store = RotatingStore::new(PeerId::random());
        let key = RecordKey::new(&"/starling/skill/s");
        let providers: Vec<PeerId> = (0..MAX_PROVIDERS_PER_KEY + 10)
            .map(|_| PeerId::random())
            .collect();
        for p in &providers {
            store
                .add_provider(ProviderRecord::new(key.clone(), *p, Vec::new()))
                .unwrap();
        }
        assert_eq!(store.providers(&key).len(), MAX_PROVIDERS_PER_KEY);
        let mut named = std::collections::HashSet::new();
        for _ in 0..MAX_PROVIDERS_PER_KEY {
            named.extend(
                store
                    .providers(&key)
                    .into_iter()
                    .take(6)
                    .map(|r| r.provider),
            );
        }
        assert_eq!(named.len(), MAX_PROVIDERS_PER_KEY, "every stored one named");
        assert!(
            providers[..MAX_PROVIDERS_PER_KEY]
                .iter()
                .all(|p| named.contains(p)),
            "the first to arrive are the ones kept"
        );
    }
}
