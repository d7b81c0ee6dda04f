//! Who this agent shares open work with: the peers its runtime must stay connected
//! to (the coordinator and members of every group it coordinates or works in).

use std::collections::BTreeSet;

use super::Agent;
use crate::AgentId;

impl Agent {
    /// The coordinators and members of every open group this agent coordinates or
    /// belongs to (itself excluded). Finished coordinations (tombstones) do not
    /// count: their peers are no longer needed.
    pub fn group_neighbours(&self) -> BTreeSet<AgentId> {
        let open = self.coordinating.keys().chain(self.memberships.keys());
        let mut peers = BTreeSet::new();
        for task_id in open {
            peers.extend(self.group_peers(*task_id));
        }
        peers
    }
}
