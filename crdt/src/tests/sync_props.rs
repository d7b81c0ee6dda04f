//! Convergence: replicas that edit concurrently over a network that loses, duplicates
//! and reorders messages end with equal heads and equal views after a full sync.

use proptest::prelude::*;

use super::support::*;
use crate::{GroupDoc, SignedChange, SyncMessage, TaskOutcome, TaskStatus};

/// One step of a random run.
#[derive(Debug, Clone)]
enum Step {
    /// Replica `who` makes a local edit of kind `kind` with parameter `param`, and the
    /// change is sent to the replicas in `to` (a bit mask).
    Edit {
        who: usize,
        kind: u8,
        param: u8,
        to: u8,
    },
    /// Deliver (or drop, or duplicate) the queued message at `index`.
    Deliver { index: usize, action: u8 },
    /// `from` opens a sync round with `to`; the messages go through the network.
    Sync {
        from: usize,
        to: usize,
        know_heads: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..7usize, 0..16u8, any::<u8>(), any::<u8>())
            .prop_map(|(who, kind, param, to)| Step::Edit { who, kind, param, to }),
        5 => (any::<usize>(), 0..6u8).prop_map(|(index, action)| Step::Deliver { index, action }),
        1 => (0..7usize, 0..7usize, any::<bool>())
            .prop_map(|(from, to, know_heads)| Step::Sync { from, to, know_heads }),
    ]
}

enum Packet {
    Changes(Vec<SignedChange>),
    Sync(Vec<u8>),
}

struct Network {
    queue: Vec<(usize, usize, Packet)>,
}

/// A local edit that makes sense for `doc`'s role and state; `kind` and `param`
/// choose among them. Returns `None` when the chosen edit is not possible yet.
fn edit(doc: &mut GroupDoc, n: usize, kind: u8, param: u8, now: u64) -> Option<SignedChange> {
    let target = agent(2 + (param as usize % (n - 1)) as u8);
    let view = doc.view().ok()?;
    let me = doc.me();
    let r = if view.is_authority(me) {
        match kind % 8 {
            0..=3 => {
                let skill = if param.is_multiple_of(3) {
                    "sql"
                } else {
                    "rust"
                };
                doc.invite(target, skill, f64::from(param % 10) / 10.0, now)
            }
            4 if param.is_multiple_of(2) => doc.declare_failed(target, "silent", now),
            4 => doc.invite(target, "rust", 0.3, now),
            _ => match param % 3 {
                0 => doc.set_status(TaskStatus::Running, now),
                1 => doc.set_outcome(&TaskOutcome::Completed, now),
                _ => doc.set_outcome(&TaskOutcome::Failed("deadline".into()), now),
            },
        }
    } else {
        let member = view.member(me)?;
        if member.status == crate::MemberStatus::Invited {
            let skill = member.skill.clone();
            doc.accept(&skill, now)
        } else {
            match kind % 8 {
                0 => doc.report_progress(f64::from(param) / 255.0, Some(&[param; 4]), now),
                1 => doc.activate(now),
                2..=4 => doc.suspect(view.coordinator(), now),
                5 => doc.take_over(now),
                6 => doc.record_result(!param.is_multiple_of(3), &[param], now),
                _ if param.is_multiple_of(4) => doc.leave(now),
                _ => doc.take_over(now),
            }
        }
    };
    r.ok()
}

fn run(n: usize, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let members: Vec<u8> = (2..(n as u8 + 1)).collect();
    let (init, _, _) = group(1, &[("rust", 2), ("sql", 1)], 4, &[]);
    let mut docs = vec![init];
    for &m in &members {
        // Members start empty: even the genesis must reach them through the network.
        docs.push(
            GroupDoc::replica(key(m), b"task-1".to_vec(), agent(1), Default::default()).unwrap(),
        );
    }
    let mut net = Network { queue: Vec::new() };
    let mut now = T0;
    for s in steps {
        now += 7;
        match s {
            Step::Edit {
                who,
                kind,
                param,
                to,
            } => {
                let who = who % n;
                if let Some(c) = edit(&mut docs[who], n, kind, param, now) {
                    for dst in (0..n).filter(|d| *d != who && to & (1 << d) != 0) {
                        net.queue.push((who, dst, Packet::Changes(vec![c.clone()])));
                    }
                }
            }
            Step::Deliver { index, action } => {
                if net.queue.is_empty() {
                    continue;
                }
                let i = index % net.queue.len();
                let (from, to, packet) = net.queue.remove(i);
                if action == 0 {
                    continue; // lost
                }
                deliver_packet(&mut docs, &mut net, from, to, &packet)?;
                if action == 1 {
                    net.queue.push((from, to, packet)); // duplicated, delivered again later
                }
            }
            Step::Sync {
                from,
                to,
                know_heads,
            } => {
                let (from, to) = (from % n, to % n);
                if from == to {
                    continue;
                }
                let heads = know_heads.then(|| docs[to].heads());
                let msg = docs[from].sync_message(heads.as_deref());
                net.queue.push((from, to, Packet::Sync(msg.encode())));
            }
        }
    }
    // The network goes quiet; then a full sync between every ordered pair, repeated
    // until nobody has anything to say.
    for _round in 0..n {
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    let (x, y) = pair(&mut docs, a, b);
                    sync_pair(x, y);
                }
            }
        }
    }
    let heads = docs[0].heads();
    let view = docs[0].view().unwrap();
    for d in &docs[1..] {
        prop_assert_eq!(d.heads(), heads.clone());
        prop_assert_eq!(d.view().unwrap(), view.clone());
        prop_assert_eq!(d.pending_count(), 0);
    }
    Ok(())
}

fn deliver_packet(
    docs: &mut [GroupDoc],
    net: &mut Network,
    from: usize,
    to: usize,
    packet: &Packet,
) -> Result<(), TestCaseError> {
    match packet {
        Packet::Changes(changes) => {
            let report = docs[to].apply(changes.clone());
            // Honest replicas never refuse each other's changes, except a full buffer.
            prop_assert!(report.is_clean(), "{:?}", report.rejected);
        }
        Packet::Sync(bytes) => {
            let msg = SyncMessage::decode(bytes, docs[to].limits()).unwrap();
            let (report, reply) = docs[to].receive_sync(msg);
            prop_assert!(report.is_clean(), "{:?}", report.rejected);
            if let Some(reply) = reply {
                net.queue.push((to, from, Packet::Sync(reply.encode())));
            }
        }
    }
    Ok(())
}

fn pair(docs: &mut [GroupDoc], a: usize, b: usize) -> (&mut GroupDoc, &mut GroupDoc) {
    if a < b {
        let (l, r) = docs.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = docs.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_despite_loss_duplication_and_reordering(
        n in 3usize..=7,
        steps in prop::collection::vec(step(), 20..200),
    ) {
        run(n, steps)?;
    }
}
