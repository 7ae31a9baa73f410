//! Starvation: an instance whose ring holds data the host has not read from for longer than
//! [`starved_after`](super::SupervisorConfig::starved_after).
//!
//! The monitor thread looks at every live instance's plugin-written ring (a source's ring, a
//! function's reply ring; the host writes a sink's) a few times per threshold. A look takes the
//! ring's published positions ([`Ring::positions`]) and the handle's count of tuples taken
//! (`tuples_out`). The host counts as having read if either moved since the last look; the
//! ring holds data if its write position is ahead of its read position. Both positions sit in
//! memory the plugin can write, so they are hints: odd values count as "nothing to read", and
//! the worst a plugin can do is spoil its own instance's report.
//!
//! An episode starts when the ring held data without the host reading for the threshold; it
//! is counted and logged once (a `warn` naming the plugin, symbol, instance and how long), and
//! ends when the host reads again or the ring empties (logged at `info`). The consumer
//! publishes its read position in batches, and always when it finds the ring empty; a reader
//! that stops receiving right after taking the last tuple of a burst may therefore be reported
//! until it receives again, even though nothing is left: the report means "the host has not
//! come back for this ring".

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmplug_transport::Ring;

use super::slot::Slot;
use super::state::Supervision;
use crate::error::SymbolKind;

/// The least and most time between two looks.
const LOOK_BOUNDS: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// How often the monitor looks, for a threshold of `starved_after`: a quarter of it, within
/// [`LOOK_BOUNDS`]; `None` when the look is off ([`Duration::MAX`]).
pub(crate) fn look_interval(starved_after: Duration) -> Option<Duration> {
    (starved_after != Duration::MAX)
        .then(|| (starved_after / 4).clamp(LOOK_BOUNDS.0, LOOK_BOUNDS.1))
}

/// What one look saw of an instance's plugin-written ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    /// The process generation the ring belongs to (a new ring starts a new watch).
    pub generation: u64,
    /// The ring's published read position.
    pub read: u64,
    /// Tuples the handle took so far.
    pub taken: u64,
    /// The ring held data (consistent positions, write ahead of read).
    pub unread: bool,
}

/// What a look changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// An episode began: no read for this long while the ring held data.
    Starved(Duration),
    /// The episode ended after this long.
    Fed(Duration),
}

/// One instance's watch, kept in its [`Slot`] and updated by the monitor thread only.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// The last look: when, and what it saw.
    last: Option<(Instant, Sample)>,
    /// Since when the ring held data without a read (at least since then).
    stalled_since: Option<Instant>,
    /// The current stall was reported as an episode.
    reported: bool,
    /// Episodes so far.
    episodes: u64,
}

impl Watch {
    /// Takes a look at `now`: `sample` of the live ring, or `None` when the instance has no
    /// live ring (starting, switching): then any episode ends without a word.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        sample: Option<Sample>,
        threshold: Duration,
    ) -> Option<Change> {
        let Some(sample) = sample else {
            self.last = None;
            self.stalled_since = None;
            self.reported = false;
            return None;
        };
        let previous = self.last.replace((now, sample));
        let stalled_from = match previous {
            Some((at, before))
                if before.generation == sample.generation
                    && before.read == sample.read
                    && before.taken == sample.taken
                    && sample.unread =>
            {
                // Nothing read since the last look; the data was there then too, or came
                // since.
                Some(if before.unread { at } else { now })
            }
            _ => None,
        };
        let Some(from) = stalled_from else {
            let since = self.stalled_since.take();
            if std::mem::take(&mut self.reported) {
                let lasted = since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
                return Some(Change::Fed(lasted));
            }
            return None;
        };
        let since = *self.stalled_since.get_or_insert(from);
        let stalled = now.saturating_duration_since(since);
        if !self.reported && stalled >= threshold {
            self.reported = true;
            self.episodes += 1;
            return Some(Change::Starved(stalled));
        }
        None
    }

    /// How long the current episode has lasted at `now`, if one is on.
    pub(crate) fn starved_for(&self, now: Instant) -> Option<Duration> {
        self.stalled_since
            .filter(|_| self.reported)
            .map(|since| now.saturating_duration_since(since))
    }

    /// Episodes so far.
    pub(crate) fn episodes(&self) -> u64 {
        self.episodes
    }
}

/// The ring of an instance of `kind` that the plugin writes and the host reads.
fn watched(kind: SymbolKind, rings: &[Ring]) -> Option<&Ring> {
    match kind {
        SymbolKind::Source => rings.first(),
        SymbolKind::Function => rings.get(1),
        SymbolKind::Sink => None,
    }
}

/// A sample of `ring` for `slot`, in process `generation`.
fn sample(slot: &Slot, ring: &Ring, generation: u64) -> Sample {
    let positions = ring.positions();
    Sample {
        generation,
        read: positions.read,
        taken: slot.traffic.tuples_out.load(Ordering::Relaxed),
        unread: positions.unread().is_some_and(|n| n > 0),
    }
}

impl Supervision {
    /// Looks at every instance's plugin-written ring (see the module docs) and logs the
    /// episodes that begin or end.
    pub(crate) fn look_for_starvation(&self) {
        let threshold = self.config.starved_after;
        let now = Instant::now();
        let mut changes: Vec<(Arc<Slot>, Change)> = Vec::new();
        {
            let state = self.lock();
            for instance in state.instances.values() {
                let sample = watched(instance.kind, &instance.rings)
                    .filter(|_| instance.live)
                    .map(|ring| sample(&instance.slot, ring, instance.generation));
                if let Some(change) = instance.slot.watch().observe(now, sample, threshold) {
                    changes.push((instance.slot.clone(), change));
                }
            }
        }
        for (slot, change) in changes {
            let ids = &slot.ids;
            match change {
                Change::Starved(stalled) => tracing::warn!(
                    plugin = %ids.plugin,
                    symbol = %ids.symbol,
                    instance = ids.instance,
                    "{} `{}` (instance {}) is starved: its ring has held data the host has not \
                     read for {stalled:.1?} (more than {threshold:?}); is its reader served?",
                    ids.kind,
                    ids.symbol,
                    ids.instance
                ),
                Change::Fed(lasted) => tracing::info!(
                    plugin = %ids.plugin,
                    symbol = %ids.symbol,
                    instance = ids.instance,
                    "{} `{}` (instance {}) is read again after {lasted:.1?} starved",
                    ids.kind,
                    ids.symbol,
                    ids.instance
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(100);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn s(read: u64, taken: u64, unread: bool) -> Option<Sample> {
        Some(Sample {
            generation: 1,
            read,
            taken,
            unread,
        })
    }

    #[test]
    fn an_unread_ring_starves_once_per_episode() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert_eq!(w.observe(at(t0, 0), s(0, 0, true), T), None);
        assert_eq!(w.observe(at(t0, 50), s(0, 0, true), T), None);
        assert_eq!(w.starved_for(at(t0, 50)), None);
        // Stalled since the first look, which already saw data.
        assert_eq!(
            w.observe(at(t0, 100), s(0, 0, true), T),
            Some(Change::Starved(T))
        );
        assert_eq!(w.observe(at(t0, 150), s(0, 0, true), T), None);
        assert_eq!(w.starved_for(at(t0, 200)), Some(Duration::from_millis(200)));
        assert_eq!(w.episodes(), 1);
        // A read (the handle's count moved) ends it.
        assert_eq!(
            w.observe(at(t0, 250), s(0, 1, true), T),
            Some(Change::Fed(Duration::from_millis(250)))
        );
        assert_eq!(w.starved_for(at(t0, 250)), None);
        // A second stall is a second episode.
        assert_eq!(w.observe(at(t0, 300), s(0, 1, true), T), None);
        assert!(matches!(
            w.observe(at(t0, 400), s(0, 1, true), T),
            Some(Change::Starved(_))
        ));
        assert_eq!(w.episodes(), 2);
    }

    #[test]
    fn reading_or_an_empty_ring_is_not_starvation() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        for i in 0..20 {
            // The read position moves, the handle's count does not (or the other way round).
            let sample = if i % 2 == 0 {
                s(i, 0, true)
            } else {
                s(i - 1, i, true)
            };
            assert_eq!(w.observe(at(t0, i * 60), sample, T), None);
        }
        let mut idle = Watch::default();
        for i in 0..20 {
            assert_eq!(idle.observe(at(t0, i * 60), s(7, 7, false), T), None);
        }
        assert_eq!(w.episodes() + idle.episodes(), 0);
    }

    #[test]
    fn data_that_arrives_counts_from_the_look_that_saw_it() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert_eq!(w.observe(at(t0, 0), s(0, 0, false), T), None);
        assert_eq!(w.observe(at(t0, 90), s(0, 0, true), T), None);
        assert_eq!(w.observe(at(t0, 180), s(0, 0, true), T), None);
        assert!(matches!(
            w.observe(at(t0, 190), s(0, 0, true), T),
            Some(Change::Starved(d)) if d == T
        ));
    }

    #[test]
    fn a_new_ring_or_no_ring_starts_over() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        w.observe(at(t0, 0), s(0, 0, true), T);
        assert!(w.observe(at(t0, 200), s(0, 0, true), T).is_some());
        // The process restarted: the instance has no live ring, then a new one.
        assert_eq!(w.observe(at(t0, 250), None, T), None);
        assert_eq!(w.starved_for(at(t0, 250)), None);
        let new = Some(Sample {
            generation: 2,
            read: 0,
            taken: 0,
            unread: true,
        });
        assert_eq!(w.observe(at(t0, 300), new, T), None);
        assert_eq!(w.observe(at(t0, 350), new, T), None);
        assert_eq!(w.episodes(), 1);
    }

    #[test]
    fn look_interval_is_a_quarter_within_bounds() {
        assert_eq!(
            look_interval(Duration::from_secs(1)),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            look_interval(Duration::ZERO),
            Some(Duration::from_millis(10))
        );
        assert_eq!(
            look_interval(Duration::from_secs(60)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(look_interval(Duration::MAX), None);
    }
}
