//! The agent's own randomness: deterministic, from the seed it was given, so a run
//! replays exactly from its seed.

use super::Agent;

impl Agent {
    /// Deterministic pseudo-random numbers from the seed (splitmix64).
    pub(super) fn random(&mut self) -> u64 {
        splitmix(&mut self.rng)
    }

    /// `base` ± 20 %, so agents do not act in lockstep.
    pub(super) fn jittered(&mut self, base: u64) -> u64 {
        let spread = base / 5;
        if spread == 0 {
            return base;
        }
        base - spread + self.random() % (2 * spread + 1)
    }
}

/// The next number of a splitmix64 sequence whose state is `state`.
pub(super) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
