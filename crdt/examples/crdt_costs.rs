//! Measures what group documents cost: apply-change throughput, bytes per membership
//! change and per sync round, and heap per member, for groups of 3, 10 and 50.
//!
//! Run with `cargo run --release -p starling-crdt --example crdt_costs`.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ed25519_dalek::SigningKey;
use starling_crdt::{
    AgentKey, GroupDoc, GroupSpec, Limits, SignedChange, SkillNeed, TaskOutcome, TaskStatus,
};

/// Counts live heap bytes so the example can report heap per member.
struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only keeps a count.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const T0: u64 = 1_700_000_000_000;
const PROGRESS_REPORTS: u8 = 5;

fn key(n: u32) -> SigningKey {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    SigningKey::from_bytes(&seed)
}

struct Run {
    initiator: GroupDoc,
    members: Vec<GroupDoc>,
    membership_changes: Vec<SignedChange>,
}

/// A group of `n` members on one skill, through its whole life.
fn build(n: u32) -> Run {
    let spec = GroupSpec {
        group_id: format!("task-{n}").into_bytes(),
        initiator: AgentKey::of(&key(0)),
        skills: vec![SkillNeed {
            name: "work".into(),
            count: n,
        }],
        max_group_size: n,
        created_at_ms: T0,
    };
    let (mut init, genesis) = GroupDoc::create(key(0), &spec, Limits::default()).unwrap();
    let mut membership_changes = Vec::new();
    let mut members: Vec<GroupDoc> = (1..=n)
        .map(|i| {
            let mut r = GroupDoc::replica(
                key(i),
                spec.group_id.clone(),
                spec.initiator,
                Limits::default(),
            )
            .unwrap();
            r.apply([genesis.clone()]);
            r
        })
        .collect();
    for m in &members {
        membership_changes.push(init.invite(m.me(), "work", 0.5, T0 + 1).unwrap());
    }
    let invites = init.all_changes();
    for m in members.iter_mut() {
        m.apply(invites.clone());
        let c = m.accept("work", T0 + 2).unwrap();
        membership_changes.push(c.clone());
        init.apply([c]);
    }
    init.set_status(TaskStatus::Running, T0 + 3).unwrap();
    for m in members.iter_mut() {
        for step in 1..=PROGRESS_REPORTS {
            m.report_progress(
                f64::from(step) / 10.0,
                Some(&[step; 32]),
                T0 + 10 + u64::from(step),
            )
            .unwrap();
        }
        m.record_result(true, b"result bytes", T0 + 20).unwrap();
        init.apply(m.all_changes());
    }
    init.set_outcome(&TaskOutcome::Completed, T0 + 30).unwrap();
    init.set_status(TaskStatus::Dissolved, T0 + 31).unwrap();
    Run {
        initiator: init,
        members,
        membership_changes,
    }
}

fn main() {
    println!(
        "{:>5} {:>8} {:>12} {:>12} {:>14} {:>14} {:>12} {:>12} {:>14}",
        "group",
        "changes",
        "apply/s",
        "µs/change",
        "B/membership",
        "B/sync-round",
        "B/full-sync",
        "saved B",
        "heap B/member"
    );
    for n in [3u32, 10, 50] {
        let run = build(n);
        let history = run.initiator.all_changes();
        let spec_id = run.initiator.group_id().to_vec();
        let initiator = run.initiator.initiator();

        // Apply throughput: the whole history into fresh replicas (signature checks,
        // permission checks and automerge apply), best of 5.
        let mut best = f64::MAX;
        for _ in 0..5 {
            let mut fresh =
                GroupDoc::replica(key(999), spec_id.clone(), initiator, Limits::default()).unwrap();
            let start = Instant::now();
            let report = fresh.apply(history.clone());
            let secs = start.elapsed().as_secs_f64();
            assert!(report.is_clean() && fresh.heads() == run.initiator.heads());
            best = best.min(secs);
        }
        let per_change_us = best * 1e6 / history.len() as f64;

        let membership_bytes = run
            .membership_changes
            .iter()
            .map(|c| c.bytes.len() + 96)
            .sum::<usize>()
            / run.membership_changes.len();

        // One sync round: a member that missed each other member's last progress report.
        let mut behind =
            GroupDoc::replica(key(1000), spec_id.clone(), initiator, Limits::default()).unwrap();
        let skip: std::collections::BTreeSet<_> =
            run.members.iter().map(|m| m.heads()[0]).collect();
        behind.apply(
            history
                .iter()
                .filter(|c| {
                    let h = automerge::Change::from_bytes(c.bytes.clone())
                        .unwrap()
                        .hash();
                    !skip.contains(&h)
                })
                .cloned()
                .collect::<Vec<_>>(),
        );
        let opening = behind.sync_message(None);
        let mut round_bytes = opening.encode().len();
        let mut ahead = GroupDoc::load(key(0), &run.initiator.save(), Limits::default()).unwrap();
        let (_, reply) = ahead.receive_sync(opening);
        let reply = reply.expect("the initiator has changes the member lacks");
        round_bytes += reply.encode().len();

        // A full sync from empty.
        let empty =
            GroupDoc::replica(key(1001), spec_id.clone(), initiator, Limits::default()).unwrap();
        let full = ahead.sync_message(Some(&empty.heads())).encode().len();

        let saved = run.initiator.save().len();

        // Heap: one replica holding the whole dissolved group, per member.
        drop(run);
        let before = LIVE.load(Ordering::Relaxed);
        let mut holder =
            GroupDoc::replica(key(1002), spec_id.clone(), initiator, Limits::default()).unwrap();
        holder.apply(history.clone());
        let heap = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        drop(holder);

        println!(
            "{:>5} {:>8} {:>12.0} {:>12.1} {:>14} {:>14} {:>12} {:>12} {:>14}",
            n,
            history.len(),
            history.len() as f64 / best,
            per_change_us,
            membership_bytes,
            round_bytes,
            full,
            saved,
            heap / n as usize
        );
    }
    println!(
        "\nchanges: genesis + per member an invite, an accept, {PROGRESS_REPORTS} progress reports with a\n32-byte checkpoint and a result, + 3 status changes. B/membership includes the 96-byte\nsigner+signature framing. B/sync-round: a member missing every other member's last\nchange opens a sync and gets its answer. Heap: one replica holding the whole history."
    );
}
