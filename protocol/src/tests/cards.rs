//! Agent cards: a directory filled from cards staffs the first task without an
//! announcement; a card is taken only when newer, current and genuine; a joining
//! agent gets the cards a peer holds, and only answers it asked for.

use super::mesh::*;
use crate::{
    Audience, CardNews, Event, Input, Level, Message, Outcome, SignedCard, card::CARD_TTL_MS,
};

fn kinds_for(mesh: &Mesh, kind: &str, task: crate::TaskId) -> usize {
    mesh.delivered
        .iter()
        .filter(|(_, _, _, m)| m.kind() == kind && m.task_id() == Some(task))
        .count()
}

#[test]
fn cards_staff_the_first_task_without_an_announcement() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let workers: Vec<_> = (10..16)
        .map(|s| mesh.worker(s, "x", Level::Expert))
        .collect();
    let now = mesh.now;
    for w in &workers {
        let card = mesh.card(*w);
        let news = mesh.agents.get_mut(&init).unwrap().learn_card(now, card);
        assert_eq!(news.unwrap(), CardNews::Fresh);
    }
    assert_eq!(mesh.agent(init).cards_known(), 6);
    let task = mesh.announce(init, spec(&[("x", Level::Novice, 2)]));
    assert!(mesh.run_until(10_000, |m| m.finished(task).is_some()));
    assert_eq!(mesh.finished(task).unwrap().1, Outcome::Completed);
    assert_eq!(
        kinds_for(&mesh, "task_announce", task),
        0,
        "nobody was asked"
    );
    assert_eq!(kinds_for(&mesh, "skill_offer", task), 0);
    assert_eq!(kinds_for(&mesh, "group_invite", task), 2, "one per place");

    // Without cards the same first task goes to the mesh.
    let mut cold = Mesh::new();
    let init = cold.add(1, &[], 1, Exec::Manual, |_| {});
    for s in 10..16 {
        cold.worker(s, "x", Level::Expert);
    }
    let task = cold.announce(init, spec(&[("x", Level::Novice, 2)]));
    assert!(cold.run_until(10_000, |m| m.finished(task).is_some()));
    assert_eq!(kinds_for(&cold, "task_announce", task), 6);
}

#[test]
fn a_card_is_taken_only_when_newer_current_and_genuine() {
    let mut mesh = Mesh::new();
    let me = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let w = mesh.worker(10, "x", Level::Expert);
    let older = mesh.card(w);
    mesh.now += 1_000;
    let newer = mesh.card(w);
    let now = mesh.now;
    let learn =
        |mesh: &mut Mesh, c: SignedCard| mesh.agents.get_mut(&me).unwrap().learn_card(now, c);
    assert_eq!(learn(&mut mesh, newer.clone()).unwrap(), CardNews::Fresh);
    assert_eq!(learn(&mut mesh, newer.clone()).unwrap(), CardNews::Known);
    assert_eq!(learn(&mut mesh, older).unwrap(), CardNews::Stale);
    // A newer card whose signature does not verify is an error, and not taken.
    mesh.now += 1_000;
    let mut forged = mesh.card(w).as_bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged = SignedCard::from_bytes(forged).unwrap();
    assert!(learn(&mut mesh, forged.clone()).is_err());
    assert_eq!(
        learn(&mut mesh, newer).unwrap(),
        CardNews::Known,
        "still the old one"
    );
    // One from the future and this agent's own: not taken.
    let fresh_later = mesh.card(w);
    let early = now - 60_000;
    let got = mesh
        .agents
        .get_mut(&me)
        .unwrap()
        .learn_card(early, fresh_later.clone());
    assert_eq!(got.unwrap(), CardNews::Stale, "from the future");
    let own = mesh.card(me);
    let got = mesh.agents.get_mut(&me).unwrap().learn_card(mesh.now, own);
    assert_eq!(got.unwrap(), CardNews::Stale, "its own");
    assert_eq!(mesh.agent(me).cards_known(), 1);
    // Past its lifetime: not taken, and the one held is no longer current either.
    let stale_now = now + CARD_TTL_MS + 2_000;
    let got = mesh
        .agents
        .get_mut(&me)
        .unwrap()
        .learn_card(stale_now, fresh_later);
    assert_eq!(got.unwrap(), CardNews::Stale, "past its lifetime");
    assert_eq!(mesh.agent(me).cards_known(), 0);
}

#[test]
fn a_joining_agent_gets_a_peers_cards_once_and_only_answers_it_asked_for() {
    let mut mesh = Mesh::new();
    let old = mesh.add(1, &[("y", Level::Expert)], 1, Exec::Manual, |_| {});
    let newcomer = mesh.add(2, &[], 1, Exec::Manual, |_| {});
    let bystander = mesh.add(3, &[], 1, Exec::Manual, |_| {});
    let workers: Vec<_> = (10..13)
        .map(|s| mesh.worker(s, "x", Level::Expert))
        .collect();
    let now = mesh.now;
    for w in &workers {
        let card = mesh.card(*w);
        mesh.agents
            .get_mut(&old)
            .unwrap()
            .learn_card(now, card)
            .unwrap();
    }
    let own = mesh.card(old);
    mesh.agents.get_mut(&old).unwrap().set_own_card(own);

    mesh.ask_for_cards(newcomer, old);
    mesh.run_for(100);
    assert_eq!(
        mesh.agent(newcomer).cards_known(),
        4,
        "the three it held and its own"
    );
    // Asked again within the minute: no second answer.
    mesh.ask_for_cards(newcomer, old);
    mesh.run_for(100);
    assert_eq!(mesh.sent_by(old, "cards").len(), 1);

    // An answer nobody asked for is not taken.
    let cards = vec![mesh.card(workers[0])];
    let key = mesh.key(old);
    mesh.inject(
        &key,
        bystander,
        Audience::Agent(bystander),
        &Message::Cards { cards },
    );
    mesh.run_for(100);
    assert_eq!(mesh.agent(bystander).cards_known(), 0);

    // A forged card in an answer marks its relayer as misbehaving; the genuine
    // cards beside it are taken.
    let liar = mesh.add(4, &[], 1, Exec::Manual, |_| {});
    mesh.ask_for_cards(bystander, liar);
    let mut forged = mesh.card(workers[1]).as_bytes().to_vec();
    forged[0] ^= 1;
    let cards = vec![
        SignedCard::from_bytes(forged).unwrap(),
        mesh.card(workers[2]),
    ];
    mesh.feed(
        bystander,
        Input::Received {
            from: liar,
            message: Message::Cards { cards },
        },
    );
    let flagged = mesh.events_where(|a, e| {
        *a == bystander && matches!(e, Event::Misbehaviour { peer, .. } if *peer == liar)
    });
    assert!(
        !flagged.is_empty(),
        "the relayer of a forged card is flagged"
    );
    assert_eq!(
        mesh.agent(bystander).cards_known(),
        1,
        "the genuine one is taken"
    );
}

#[test]
fn an_asker_gets_only_the_cards_it_lacks_or_holds_older_and_no_answer_if_none() {
    let mut mesh = Mesh::new();
    let old = mesh.add(1, &[("y", Level::Expert)], 1, Exec::Manual, |_| {});
    let asker = mesh.add(2, &[("y", Level::Novice)], 1, Exec::Manual, |_| {});
    let workers: Vec<_> = (10..14)
        .map(|s| mesh.worker(s, "x", Level::Expert))
        .collect();
    let first: Vec<_> = workers.iter().map(|w| mesh.card(*w)).collect();
    let now = mesh.now;
    // The old agent holds every worker's card; the asker holds the first two.
    for card in &first {
        mesh.agents
            .get_mut(&old)
            .unwrap()
            .learn_card(now, card.clone())
            .unwrap();
    }
    for card in &first[..2] {
        mesh.agents
            .get_mut(&asker)
            .unwrap()
            .learn_card(now, card.clone())
            .unwrap();
    }
    let own = mesh.card(old);
    mesh.agents.get_mut(&old).unwrap().set_own_card(own);
    // Later, the second worker's card is renewed, and only the old agent hears.
    mesh.now += 1_000;
    let renewed = mesh.card(workers[1]);
    let later = mesh.now;
    mesh.agents
        .get_mut(&old)
        .unwrap()
        .learn_card(later, renewed)
        .unwrap();

    mesh.ask_for_cards(asker, old);
    mesh.run_for(100);
    let answers = mesh.sent_by(old, "cards");
    assert_eq!(answers.len(), 1);
    let Message::Cards { cards } = &answers[0].1 else {
        panic!("not a cards answer: {:?}", answers[0]);
    };
    let mut sent: Vec<_> = cards.iter().map(|c| c.peek().unwrap().id).collect();
    sent.sort();
    let mut want = vec![old, workers[1], workers[2], workers[3]];
    want.sort();
    assert_eq!(sent, want, "its own, the renewed one and the two lacking");
    assert_eq!(mesh.agent(asker).cards_known(), 5);

    // A minute later (past the answer rate limit) it lacks nothing the old agent
    // holds: no answer at all.
    mesh.now += 61_000;
    mesh.ask_for_cards(asker, old);
    mesh.run_for(100);
    assert_eq!(
        mesh.sent_by(old, "cards").len(),
        1,
        "nothing to send, nothing sent"
    );
}

#[test]
fn holders_of_a_skill_are_the_other_agents_whose_current_card_lists_it() {
    let mut mesh = Mesh::new();
    let me = mesh.worker(1, "x", Level::Novice);
    let x: Vec<_> = (10..13)
        .map(|s| mesh.worker(s, "x", Level::Expert))
        .collect();
    let y = mesh.worker(20, "y", Level::Expert);
    let now = mesh.now;
    for a in x.iter().chain([&y, &me]) {
        let card = mesh.card(*a);
        let _ = mesh.agents.get_mut(&me).unwrap().learn_card(now, card);
    }
    let mut holders = mesh.agent(me).skill_holders("x");
    holders.sort();
    let mut want = x.clone();
    want.sort();
    assert_eq!(holders, want, "its own card is not among them, nor y's");
    assert_eq!(mesh.agent(me).skill_holders("y"), vec![y]);
    assert!(mesh.agent(me).skill_holders("z").is_empty());
    // Once the cards are out of date, nobody is named from them.
    mesh.now += CARD_TTL_MS + 1;
    let later = mesh.now;
    let _ = mesh.agents.get_mut(&me).unwrap().handle(later, Input::Tick);
    assert!(mesh.agent(me).skill_holders("x").is_empty());
}
