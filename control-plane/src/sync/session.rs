//! The serving side of one sync stream, as a pure step function: a request
//! or a local change in, the replies to send out.

use crdts::{CmRDT, CvRDT, Dot, VClock};

use crate::model::CellId;
use crate::replica::{Answer, Digest, Entry, Replica, StateSnapshot};

/// What the caller sends: its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub digest: Digest,
}

/// What the serving node sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Ops the caller lacks, in order per origin.
    Entries(Vec<Entry>),
    /// The whole state: the caller's version vector is older than the logs
    /// reach, or the two replicas diverged.
    State(Box<StateSnapshot>),
    /// The serving replica's digest, for the caller's status and lag.
    Digest(Digest),
}

/// One stream's serving state: what the caller has, as far as this side
/// knows (its last digest, advanced by every op sent since).
#[derive(Clone, Debug)]
pub struct Serving {
    view: Option<VClock<CellId>>,
    batch: usize,
}

impl Serving {
    /// `batch`: the most ops in one [`Reply::Entries`].
    pub fn new(batch: usize) -> Self {
        Self {
            view: None,
            batch: batch.max(1),
        }
    }

    /// The caller's digest arrived: send what it lacks, then our digest.
    /// The digest is authoritative: ops sent before it that the caller did
    /// not apply (they were lost, or refused) are sent again.
    pub fn on_request(&mut self, replica: &Replica, req: &Request) -> Vec<Reply> {
        let mut view = req.digest.applied.clone();
        let mut out = Vec::new();
        if replica.diverged_from(&req.digest) {
            let snapshot = replica.snapshot();
            view.merge(snapshot.applied.clone());
            out.push(Reply::State(Box::new(snapshot)));
        } else {
            self.catch_up(replica, &mut view, &mut out);
        }
        out.push(Reply::Digest(replica.digest()));
        self.view = Some(view);
        out
    }

    /// This side's replica changed: push what the caller now lacks. Nothing
    /// before the caller's first digest.
    pub fn on_change(&mut self, replica: &Replica) -> Vec<Reply> {
        let Some(mut view) = self.view.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        self.catch_up(replica, &mut view, &mut out);
        self.view = Some(view);
        out
    }

    fn catch_up(&self, replica: &Replica, view: &mut VClock<CellId>, out: &mut Vec<Reply>) {
        loop {
            match replica.answer(view, self.batch) {
                Answer::UpToDate => return,
                Answer::Entries(entries) => {
                    for e in &entries {
                        view.apply(Dot::new(e.origin.clone(), e.seq));
                    }
                    out.push(Reply::Entries(entries));
                }
                Answer::Snapshot(snapshot) => {
                    view.merge(snapshot.applied.clone());
                    out.push(Reply::State(snapshot));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Key, PolicyDoc, Value};
    use crate::replica::Limits;

    fn cell(s: &str) -> CellId {
        CellId::new(s).expect("cell")
    }

    fn write(r: &mut Replica, name: &str, now: u64) -> Entry {
        r.originate(
            Key::Policy { name: name.into() },
            Some(Value::Policy(PolicyDoc {
                text: format!("path \"{name}\" {{}}"),
            })),
            now,
        )
        .expect("originate")
    }

    fn entries(replies: &[Reply]) -> Vec<(String, u64)> {
        replies
            .iter()
            .flat_map(|r| match r {
                Reply::Entries(es) => es.clone(),
                _ => Vec::new(),
            })
            .map(|e| (e.origin.to_string(), e.seq))
            .collect()
    }

    #[test]
    fn a_caller_gets_what_it_lacks_in_batches_then_new_ops_as_they_come() {
        let mut a = Replica::new(cell("a"), Limits::default());
        let b = Replica::new(cell("b"), Limits::default());
        for i in 0..5 {
            write(&mut a, &format!("p{i}"), 1_000 + i);
        }
        let mut s = Serving::new(2);
        assert!(s.on_change(&a).is_empty(), "nothing before a digest");
        let replies = s.on_request(&a, &Request { digest: b.digest() });
        assert_eq!(replies.len(), 4, "three batches and a digest: {replies:?}");
        assert!(matches!(&replies[0], Reply::Entries(es) if es.len() == 2));
        assert!(matches!(&replies[3], Reply::Digest(d) if *d == a.digest()));
        assert_eq!(
            entries(&replies),
            (1..=5).map(|s| ("a".into(), s)).collect::<Vec<_>>()
        );

        // Only the new op is pushed; nothing again when nothing changed.
        write(&mut a, "p5", 2_000);
        assert_eq!(entries(&s.on_change(&a)), vec![("a".into(), 6)]);
        assert!(s.on_change(&a).is_empty());
    }

    #[test]
    fn a_digest_behind_what_was_sent_gets_it_again() {
        let mut a = Replica::new(cell("a"), Limits::default());
        let mut b = Replica::new(cell("b"), Limits::default());
        let first = write(&mut a, "p", 1_000);
        let mut s = Serving::new(10);
        s.on_request(&a, &Request { digest: b.digest() });
        // The caller lost the op (its write failed): its next digest still
        // lacks it, so it is sent again.
        let again = s.on_request(&a, &Request { digest: b.digest() });
        assert_eq!(entries(&again), vec![("a".into(), 1)]);
        b.receive(vec![first], 1_000).expect("receive");
        let none = s.on_request(&a, &Request { digest: b.digest() });
        assert_eq!(none, vec![Reply::Digest(a.digest())]);
    }

    #[test]
    fn a_caller_behind_the_logs_or_diverged_gets_the_whole_state() {
        let limits = Limits {
            log_per_origin: 2,
            ..Limits::default()
        };
        let mut a = Replica::new(cell("a"), limits);
        let mut b = Replica::new(cell("b"), limits);
        for i in 0..4 {
            write(&mut a, &format!("p{i}"), 1_000 + i);
        }
        let mut s = Serving::new(10);
        let replies = s.on_request(&a, &Request { digest: b.digest() });
        let Some(Reply::State(state)) = replies.first() else {
            panic!("expected the whole state: {replies:?}");
        };
        b.merge_snapshot((**state).clone(), 2_000).expect("merge");
        assert_eq!(b.state(), a.state());
        // Nothing more to send after the state.
        assert!(s.on_change(&a).is_empty());

        // Same version vectors, different states: the whole state again.
        let mut c = Replica::new(cell("c"), limits);
        c.merge_snapshot(a.snapshot(), 2_000).expect("merge");
        let mut forged = c.digest();
        forged.state = [0u8; 32];
        let replies = s.on_request(&a, &Request { digest: forged });
        assert!(
            matches!(replies.first(), Some(Reply::State(_))),
            "{replies:?}"
        );
    }
}
