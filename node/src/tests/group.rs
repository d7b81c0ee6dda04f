//! A task forms a group across five nodes and completes with the synthetic handler.

use starling_protocol::{Level, Outcome, Priority, SkillRequirement, TaskSpec};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_forms_a_group_across_five_nodes_and_completes() {
    // The offer window closes early once two offers per slot are in; the long bound
    // only keeps a slow machine from closing it before the better offer arrives.
    //
    // This is the announce-and-offer path: with the workers' cards the hub would
    // invite them directly (`cards.rs` tests that), so it does not staff from them.
    let mut hub_config = config(10, &[], &[]);
    hub_config.agent.offer_window_ms = 2_000;
    hub_config.agent.directed_formation = false;
    let hub = start_with(hub_config).await;
    let boot = vec![hub.listen_addrs()[0].clone()];
    let workers = [
        start(11, &[("parse", Level::Expert)], &boot).await,
        start(12, &[("parse", Level::Novice)], &boot).await,
        start(13, &[("index", Level::Advanced)], &boot).await,
        start(14, &[("index", Level::Intermediate)], &boot).await,
    ];
    // Announce once the hub knows every worker's subscription: the announcement
    // goes to the subscribers the hub knows of, and a worker connected but not yet
    // known to subscribe would miss it (and its better offer with it).
    let skill_of = ["parse", "parse", "index", "index"];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let peers = hub.peers().await.unwrap();
        let known = workers.iter().zip(skill_of).all(|(w, skill)| {
            peers.iter().any(|p| {
                p.id == w.id() && p.topics.contains(&starling_protocol::skill_topic(skill))
            })
        });
        if known {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub never learned every worker's subscription: {peers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let spec = TaskSpec {
        description: "parse and index".into(),
        required: vec![
            SkillRequirement {
                name: "parse".into(),
                min_level: Level::Novice,
                count: 1,
            },
            SkillRequirement {
                name: "index".into(),
                min_level: Level::Novice,
                count: 1,
            },
        ],
        priority: Priority::Normal,
        deadline_ms: Some(60_000),
        max_group_size: None,
        depends_on: Vec::new(),
        payload: b"doc".to_vec(),
        consensus: false,
    };
    let (task_id, done) = hub.announce(spec).await.unwrap();
    let finished = tokio::time::timeout(std::time::Duration::from_secs(60), done)
        .await
        .expect("the task finished in time")
        .expect("the node reported it");
    assert_eq!(finished.task_id, task_id);
    assert_eq!(finished.outcome, Outcome::Completed);
    let mut members: Vec<_> = finished
        .results
        .iter()
        .map(|r| (r.skill.clone(), r.member))
        .collect();
    members.sort();
    // The best offer per skill was chosen.
    assert_eq!(
        members,
        vec![
            ("index".to_string(), workers[2].id()),
            ("parse".to_string(), workers[0].id())
        ]
    );
    assert!(
        finished
            .results
            .iter()
            .all(|r| r.success && r.output.ends_with(b"done"))
    );
    // Metrics: the hub formed one group and completed one task; a worker verified
    // the announcement; libp2p's own metrics are in the same registry.
    let text = hub.metrics_text();
    assert!(text.contains("starling_groups_formed_total 1"), "{text}");
    assert!(text.contains("starling_tasks_completed_total 1"), "{text}");
    assert!(text.contains("libp2p_"), "libp2p metrics missing");
    let worker_text = workers[0].metrics_text();
    assert!(
        worker_text.contains(r#"starling_messages_in_total{kind="task_announce"}"#),
        "{worker_text}"
    );
    assert!(
        worker_text.contains(r#"starling_messages_out_total{kind="skill_offer"}"#),
        "{worker_text}"
    );
    // The hub lists the task as finished; a worker still holds (or held) its group.
    let tasks = hub.tasks().await.unwrap();
    assert!(
        tasks
            .iter()
            .any(|t| t.task_id == task_id && t.outcome == Some(Outcome::Completed))
    );
    let groups = hub.groups().await.unwrap();
    // The hub keeps the document for a while after the end, to answer stragglers.
    let g = groups
        .iter()
        .find(|g| g.task_id == task_id)
        .expect("the hub holds the group");
    assert_eq!(g.coordinator, hub.id());
    assert!(g.complete);
    assert_eq!(g.members.len(), 2);
}
