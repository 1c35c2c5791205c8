use super::*;
use crate::record::{Kind, Target};

fn rec(id: &str) -> Revocation {
    Revocation {
        id: id.into(),
        kind: Kind::Revoke,
        target: Target::Accessor(format!("acc-{id}")),
        reason: String::new(),
        issued_at_ms: 1_000,
        expires_ms: 100_000,
        lifted: false,
    }
}

fn peers() -> Vec<Peer> {
    let mut v = Vec::new();
    for cell in ["eu", "us", "ap"] {
        for n in 0..10 {
            v.push(Peer {
                id: format!("{cell}-{n}"),
                cell: cell.into(),
            });
        }
    }
    v
}

#[test]
fn a_new_record_seeds_every_cell_then_spreads_for_bounded_rounds() {
    let mut node = Node::new("eu-0", "eu", Settings::default());
    let mut rng = SplitMix64::new(7);
    assert_eq!(node.learn(rec("r1"), true), Ok(Applied::New));
    assert_eq!(node.learn(rec("r1"), true), Ok(Applied::Known));
    let peers = peers();
    let first = node.tick(&peers, &mut rng);
    let cells: BTreeSet<&str> = first.iter().map(|(p, _)| p.cell.as_str()).collect();
    assert_eq!(cells, BTreeSet::from(["eu", "us", "ap"]));
    let ids: BTreeSet<&str> = first.iter().map(|(p, _)| p.id.as_str()).collect();
    assert_eq!(ids.len(), first.len(), "no peer twice in a round");
    assert!(first.iter().all(|(p, _)| p.id != "eu-0"));
    assert!(
        first
            .iter()
            .all(|(_, m)| *m == Message::Rumours(vec![rec("r1")]))
    );
    // 2 local + 2 remote, plus one seed in each other cell (which may
    // coincide with a remote pick).
    assert!((4..=6).contains(&first.len()), "{}", first.len());

    let rounds = Settings::default().rounds(peers.len());
    let mut sent_rounds = 1;
    while !node.tick(&peers, &mut rng).is_empty() {
        sent_rounds += 1;
        assert!(sent_rounds <= rounds, "rumour mongering stops");
    }
    assert_eq!(sent_rounds, rounds);
    assert_eq!(node.spreading(), 0);
    assert!(node.filter().get("r1").is_some(), "still enforced");
}

#[test]
fn rounds_grow_with_the_log_of_the_mesh() {
    let s = Settings::default();
    assert_eq!(s.rounds(0), 2);
    assert_eq!(s.rounds(9), 2);
    assert_eq!(s.rounds(10), 4);
    assert_eq!(s.rounds(999), 6);
    assert_eq!(s.rounds(1_000), 8);
}

#[test]
fn duplicates_are_dropped_and_lifts_are_news() {
    let mut node = Node::new("us-0", "us", Settings::default());
    let out = node.receive(Message::Rumours(vec![rec("a"), rec("b"), rec("a")]));
    assert_eq!(out.applied.len(), 2);
    let out = node.receive(Message::Rumours(vec![rec("a")]));
    assert!(out.applied.is_empty());
    let mut q = rec("q");
    q.kind = Kind::Quarantine;
    node.receive(Message::Rumours(vec![q.clone()]));
    let before = node.digest().clone();
    q.lifted = true;
    let out = node.receive(Message::Rumours(vec![q.clone()]));
    assert_eq!(out.applied, vec![q]);
    assert_ne!(
        node.digest(),
        &before,
        "the digest tells a lifted record apart"
    );
}

#[test]
fn anti_entropy_reconciles_two_nodes_in_one_exchange() {
    let mut a = Node::new("eu-0", "eu", Settings::default());
    let mut b = Node::new("us-0", "us", Settings::default());
    for i in 0..200 {
        let r = rec(&format!("r{i}"));
        if i % 3 != 0 {
            a.learn(r.clone(), false).expect("valid");
        }
        if i % 5 != 0 {
            b.learn(r, false).expect("valid");
        }
    }
    assert_ne!(a.digest(), b.digest());
    let mut rng = SplitMix64::new(1);
    let (_, digest) = a
        .anti_entropy(
            &[Peer {
                id: "b".into(),
                cell: "us".into(),
            }],
            &mut rng,
        )
        .expect("a peer");
    let reply = b.receive(digest).reply.expect("b differs");
    let back = a.receive(reply);
    assert!(!back.applied.is_empty(), "a learnt what b had");
    let done = b.receive(back.reply.expect("a answers what b wants"));
    assert!(done.reply.is_none(), "the exchange ends");
    assert_eq!(a.digest(), b.digest());
    // Every record either held: all but multiples of 15.
    assert_eq!(a.filter().len(), 200 - 14);
    // Equal digests: no repair at all.
    assert!(
        b.receive(Message::Digest(a.digest().clone()))
            .reply
            .is_none()
    );
}

#[test]
fn expiry_keeps_the_digest_in_step() {
    let mut a = Node::new("eu-0", "eu", Settings::default());
    let mut b = Node::new("eu-0", "eu", Settings::default());
    let mut short = rec("short");
    short.expires_ms = 2_000;
    a.learn(short, false).expect("valid");
    a.learn(rec("long"), false).expect("valid");
    b.learn(rec("long"), false).expect("valid");
    assert_eq!(a.expire(2_000), 1);
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn malformed_messages_are_refused_whole() {
    let good = Message::Rumours(vec![rec("a")]);
    assert_eq!(Message::decode(&good.encode()), Ok(good));
    assert!(matches!(
        Message::decode(&[0xff, 0xff, 0xff]),
        Err(MessageError::Decode(_))
    ));
    let mut bad = rec("b");
    bad.expires_ms = 0;
    let m = Message::Rumours(vec![rec("a"), bad]);
    assert!(matches!(
        Message::decode(&m.encode()),
        Err(MessageError::Record(RecordError::Expiry))
    ));
    let m = Message::Digest(Digest {
        counts: vec![0; 3],
        hashes: vec![0; 3],
    });
    assert_eq!(Message::decode(&m.encode()), Err(MessageError::Digest));
    let m = Message::Repair {
        records: vec![],
        want: vec![BUCKETS as u16],
    };
    assert_eq!(Message::decode(&m.encode()), Err(MessageError::Range));
    assert!(matches!(
        Message::decode(&vec![0u8; MAX_MESSAGE_BYTES + 1]),
        Err(MessageError::TooLarge(_))
    ));
}

#[test]
fn aimed_anti_entropy_goes_only_to_peers_that_differ() {
    let mut a = Node::new("a/1", "a", Settings::default());
    let mut rng = SplitMix64::new(5);
    let others: Vec<Peer> = peers().into_iter().filter(|p| p.id != "a/1").collect();
    let same = a.digest().summary();
    // Everyone agrees (and a's own entry is never chosen): no exchange.
    let mut view: Vec<(Peer, Option<u64>)> =
        others.iter().map(|p| (p.clone(), Some(same))).collect();
    view.push((
        Peer {
            id: "a/1".into(),
            cell: "a".into(),
        },
        Some(0),
    ));
    assert!(a.anti_entropy_towards(&view, &mut rng).is_none());
    // a learns a record: now every peer differs; digests are equal again
    // once a peer publishes the same summary.
    a.learn(rec("r1"), false).expect("valid");
    let mut b = Node::new("b/1", "b", Settings::default());
    b.learn(rec("r1"), false).expect("valid");
    assert_eq!(a.digest().summary(), b.digest().summary());
    assert_ne!(a.digest().summary(), same);
    let target = &others[2];
    for (p, s) in &mut view {
        if p.id == target.id {
            *s = None; // not yet published: worth an exchange
        } else if p.id != "a/1" {
            *s = Some(b.digest().summary());
        }
    }
    for _ in 0..20 {
        let (p, msg) = a
            .anti_entropy_towards(&view, &mut rng)
            .expect("one differs");
        assert_eq!(p.id, target.id);
        assert!(matches!(msg, Message::Digest(d) if d == *a.digest()));
    }
}
