//! Who may write where: checked on every remote change before it is applied.
//!
//! The reducer ([`crate::view`]) enforces the same rules again when reading, so a
//! document that somehow holds a forbidden write (for instance one loaded from
//! elsewhere) still cannot make the view trust it. Checking on apply as well keeps
//! forged writes out of the document altogether, so they cannot even hide an honest
//! value by overwriting it.
//!
//! Rules for a change by actor A that is not the genesis change:
//! 1. It must not touch the root object (the root is written once, by the genesis).
//! 2. In a container (`members`, `invites`, `verdicts`, `coord`) it may only write
//!    the key equal to A's own hex id.
//! 3. It must not touch any other object created by the genesis (the task spec is
//!    frozen).
//! 4. Anywhere else it may only write into objects A itself created.

use automerge::legacy::{Key, ObjectId};

use crate::{AgentKey, CrdtError, Result, signed::VerifiedChange};

/// Object ids (`counter`, creator) the rules need, taken from the genesis change.
#[derive(Debug, Clone)]
pub(crate) struct GenesisObjects {
    /// The initiator (author of the genesis).
    pub(crate) initiator: AgentKey,
    /// Last op counter used by the genesis change: objects with a counter up to this
    /// and created by the initiator belong to the genesis.
    pub(crate) max_op: u64,
    /// Op counters of the four containers, in `schema::CONTAINERS` order.
    pub(crate) containers: [u64; 4],
}

impl GenesisObjects {
    pub(crate) fn check(&self, v: &VerifiedChange) -> Result<()> {
        let actor = v.actor();
        let own_key = actor.to_hex();
        let forbid = |reason: String| Err(CrdtError::ForbiddenWrite { actor, reason });
        for op in v.change.decode().operations {
            let ObjectId::Id(obj) = &op.obj else {
                return forbid("writes the root object".into());
            };
            let Some(creator) = AgentKey::from_actor(&obj.1) else {
                return forbid("writes into an object of an unknown actor".into());
            };
            let counter = obj.0;
            if creator == self.initiator && counter <= self.max_op {
                if !self.containers.contains(&counter) {
                    return forbid("writes the frozen task spec".into());
                }
                match &op.key {
                    Key::Map(k) if k.as_str() == own_key => {}
                    Key::Map(k) => return forbid(format!("writes another agent's slot {k}")),
                    Key::Seq(_) => return forbid("uses a container as a list".into()),
                }
            } else if creator != actor {
                return forbid(format!("writes into an object created by {creator}"));
            }
        }
        Ok(())
    }
}
