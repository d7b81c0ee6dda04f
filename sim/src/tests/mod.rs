//! Smoke runs of the whole simulation: a handful of real nodes, a few tasks, with and
//! without faults. They check outcomes, never speed.

use std::time::Duration;

use crate::{Report, SimError, SimOptions};

/// One simulation at a time: each starts its own two-thread runtime sized like the
/// machine, and two at once would starve each other's timers.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(opts: &SimOptions) -> Result<Report, SimError> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    crate::run(opts)
}

fn small(agents: usize, tasks: usize) -> SimOptions {
    SimOptions {
        agents,
        tasks,
        rate: 240.0,
        skills: 4,
        group_size: 3,
        work_ms: 200,
        failure_rate: Some(0.0),
        drain: Duration::from_secs(60),
        progress: false,
        ..SimOptions::default()
    }
}

#[test]
fn a_small_mesh_completes_every_task_once_and_reports_it() {
    let report = run(&small(8, 12)).unwrap();
    assert_eq!(report.tasks, 12, "every task was announced");
    assert_eq!(report.completed, 12, "{}", report.table());
    assert_eq!((report.lost, report.duplicated, report.failed), (0, 0, 0));
    assert_eq!(report.formation_ms.count, 12);
    assert!(report.formation_ms.p50 <= report.formation_ms.p99);
    assert!(report.completion_ms.p50 >= report.formation_ms.p50);
    // Tasks the directory (filled from cards) can staff are invited, not announced,
    // so there may be no announcement to time; every task invites someone.
    let invites = report.deliveries_by_kind.get("group_invite").copied();
    assert!(
        invites.unwrap_or(0.0) >= 1.0,
        "every task invited its members: {:?}",
        report.deliveries_by_kind
    );
    assert!(report.delivered > 0 && report.messages_per_task > 0.0);
    assert!(
        (report.verifications_per_delivery - 1.0).abs() < 0.05,
        "each message verified once: {}",
        report.verifications_per_delivery
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["completed"], 12);
    assert!(json["formation_ms"]["p99"].is_number());
}

#[test]
fn hostile_agents_are_refused_and_honest_tasks_still_complete() {
    let mut opts = small(12, 10);
    opts.byzantine = 2;
    let report = run(&opts).unwrap();
    assert!(report.faults.refused > 0, "forgeries were refused");
    assert_eq!(report.lost, 0, "{}", report.table());
    assert_eq!(report.duplicated, 0);
    // The agent claiming skills it lacks fails the parts it gets; those are retried
    // with others, so every task still ends, and nearly all complete.
    assert_eq!(report.completed + report.failed, report.tasks);
}

#[test]
fn crashed_agents_parts_are_reassigned_and_nothing_is_lost() {
    let mut opts = small(12, 16);
    opts.work_ms = 1_500;
    opts.kill_pct = 25.0;
    opts.kill_at = Duration::from_secs(2);
    let report = run(&opts).unwrap();
    assert_eq!(report.faults.killed, 3);
    assert_eq!(report.lost, 0, "{}", report.table());
    assert_eq!(report.duplicated, 0);
    assert_eq!(
        report.completed + report.orphaned,
        report.tasks,
        "{}",
        report.table()
    );
}
