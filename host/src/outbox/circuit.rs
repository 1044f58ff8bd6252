//! One circuit per destination (`scheme://host:port`): after a run of
//! failures it opens and no job goes there until a cool-down passes; then
//! one job probes, and the circuit closes on an answer or opens again for
//! longer. A dead helpdesk is asked once per cool-down, not once per job.

use std::collections::HashMap;

use serde::Serialize;

/// Failures in a row that open a circuit.
pub const FAILURES_TO_OPEN: u32 = 5;
/// First cool-down of an open circuit; each reopening doubles it.
pub const FIRST_COOL_DOWN_MS: u64 = 1_000;

/// The circuits of every destination.
#[derive(Default)]
pub struct Circuits {
    by_destination: HashMap<String, Circuit>,
}

/// The state of one destination, as admins see it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Circuit {
    /// Failures in a row.
    pub failures: u32,
    /// While open: no job goes there before this time (ms since the epoch).
    pub open_until: Option<u64>,
    /// How long it stays open when it opens next.
    pub cool_down_ms: u64,
    /// A probe is out: no other job goes there until it returns.
    pub probing: bool,
}

impl Circuits {
    /// Whether a job may go to `destination` at `now`; if the circuit is
    /// open and its cool-down over, this job is the probe. Otherwise, when
    /// to look again.
    pub fn admit(&mut self, destination: &str, now: u64) -> Result<(), Option<u64>> {
        let Some(circuit) = self.by_destination.get_mut(destination) else {
            return Ok(());
        };
        if circuit.probing {
            return Err(None);
        }
        match circuit.open_until {
            Some(until) if until > now => Err(Some(until)),
            Some(_) => {
                circuit.probing = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// `destination` answered (or an admin retries): its circuit closes.
    pub fn success(&mut self, destination: &str) {
        self.by_destination.remove(destination);
    }

    /// A job to `destination` failed at `now` (no answer, or one worth retrying);
    /// `max_ms` bounds the cool-down.
    pub fn failure(&mut self, destination: &str, now: u64, max_ms: u64) {
        let circuit = self
            .by_destination
            .entry(destination.to_owned())
            .or_insert_with(|| Circuit {
                cool_down_ms: FIRST_COOL_DOWN_MS.min(max_ms),
                ..Circuit::default()
            });
        circuit.failures += 1;
        let was_probe = std::mem::take(&mut circuit.probing);
        if was_probe || circuit.failures >= FAILURES_TO_OPEN {
            if was_probe {
                circuit.cool_down_ms = (circuit.cool_down_ms * 2).min(max_ms);
            }
            circuit.open_until = Some(now + circuit.cool_down_ms);
        }
    }

    /// Every destination that failed lately, by name.
    pub fn snapshot(&self) -> Vec<(String, Circuit)> {
        let mut all: Vec<_> = self
            .by_destination
            .iter()
            .map(|(d, c)| (d.clone(), c.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "http://127.0.0.1:9";

    #[test]
    fn a_circuit_opens_after_failures_then_probes_once() {
        let mut circuits = Circuits::default();
        for n in 0..FAILURES_TO_OPEN {
            assert!(circuits.admit(D, 0).is_ok(), "closed before failure {n}");
            circuits.failure(D, 0, 60_000);
        }
        assert_eq!(circuits.admit(D, 10), Err(Some(FIRST_COOL_DOWN_MS)), "open");
        assert!(circuits.admit(D, FIRST_COOL_DOWN_MS).is_ok(), "the probe");
        assert_eq!(
            circuits.admit(D, FIRST_COOL_DOWN_MS),
            Err(None),
            "one probe at a time"
        );
        circuits.failure(D, 2_000, 60_000);
        assert_eq!(
            circuits.admit(D, 2_001),
            Err(Some(2_000 + 2 * FIRST_COOL_DOWN_MS)),
            "a failed probe opens it for longer"
        );
        assert!(circuits.admit(D, 4_000).is_ok());
        circuits.success(D);
        assert!(circuits.admit(D, 4_001).is_ok(), "closed again");
        assert!(circuits.snapshot().is_empty());
    }

    #[test]
    fn the_cool_down_is_bounded() {
        let mut circuits = Circuits::default();
        let mut now = 0;
        for _ in 0..40 {
            while let Err(Some(until)) = circuits.admit(D, now) {
                now = until;
            }
            circuits.failure(D, now, 5_000);
        }
        assert!(circuits.snapshot()[0].1.cool_down_ms <= 5_000);
    }
}
