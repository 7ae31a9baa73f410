//! The `random` source.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use shmplug_sdk::{
    Emitter, Next, PluginError, PolledSource, Props, PropsExt, SourceContext, Tuple, TupleBuilder,
    Value, ValueRef,
};

/// The `random` source: every `interval`, emits `pattern` with a random whole number added to
/// each of its numeric fields, as eKuiper's mirror example does.
///
/// | property | default | meaning |
/// | --- | --- | --- |
/// | `pattern` | required | a JSON object: the message to emit |
/// | `interval` | `1000` | milliseconds, or a duration string (`"250ms"`, `"1.5s"`); `0` emits as fast as the host reads |
/// | `seed` | `100` | each numeric field `v` is emitted as `int(v) + r`, `r` uniform in `0 .. seed` (eKuiper's meaning of `seed`) |
/// | `count` | unlimited | stop after this many tuples: the stream ends |
/// | `deduplicate` | `0` | skip a message equal to one of the last `n` emitted; negative: to any emitted; `0`: off |
/// | `rngSeed` | from the clock | seeds the random generator, for reproducible streams |
/// | `format` | `"json"` | only `json` is accepted, as in eKuiper |
///
/// Fields that are not numbers (strings, booleans, lists, objects) are emitted unchanged;
/// eKuiper's example stops at the first of them, which makes its output depend on map order.
///
/// It is a [`PolledSource`]: its instances share the plugin's few executor threads, so a
/// thousand rules reading it cost a thousand small values, not a thousand threads.
#[derive(Debug, Default)]
pub struct RandomSource {
    config: Option<Config>,
    run: Option<Run>,
}

/// Messages one poll emits at most (with `interval` 0) before the next instance's turn.
const BATCH: usize = 64;

/// What an open source keeps between polls.
#[derive(Debug)]
struct Run {
    rng: fastrand::Rng,
    /// Every field is a scalar: tuples borrow from the pattern.
    borrowed: bool,
    /// The random part of the message being emitted, one per field.
    values: Vec<i64>,
    builder: TupleBuilder,
    recent: VecDeque<Vec<i64>>,
    /// When the next message is due; `None` before the first.
    next_tick: Option<Instant>,
    emitted: u64,
    /// `values` hold a message not yet emitted.
    drawn: bool,
}

#[derive(Debug)]
struct Config {
    interval: Duration,
    seed: i64,
    count: Option<u64>,
    deduplicate: i64,
    rng_seed: Option<u64>,
    /// The pattern's fields in name order.
    fields: Vec<(String, Field)>,
}

#[derive(Debug)]
enum Field {
    /// A number: emitted as `base + r`.
    Random(i64),
    /// Anything else: emitted as it is.
    Fixed(Value),
}

impl PolledSource for RandomSource {
    fn configure(&mut self, _data_source: &str, props: &Props) -> Result<(), PluginError> {
        let interval = props
            .duration("interval")?
            .unwrap_or(Duration::from_secs(1));
        let seed = props.integer_in("seed", 1..=i64::MAX)?.unwrap_or(100);
        let count = props.integer_in("count", 0..=i64::MAX)?.map(|n| n as u64);
        let deduplicate = props.integer("deduplicate")?.unwrap_or(0);
        let rng_seed = props.integer_in("rngSeed", 0..=i64::MAX)?.map(|n| n as u64);
        // Only `json`, as in eKuiper.
        props.one_of("format", &["json"])?;
        let pattern = match props.get("pattern") {
            Some(Json::Object(pattern)) => pattern,
            Some(other) => {
                return Err(PluginError::property(
                    "pattern",
                    format!("expected a JSON object such as {{\"count\": 50}}, got {other}"),
                ));
            }
            None => {
                return Err(PluginError::missing(
                    "pattern",
                    "the JSON object to emit, such as {\"count\": 50}",
                ));
            }
        };
        let mut fields = Vec::with_capacity(pattern.len());
        for (name, value) in pattern {
            let field = match value {
                Json::Number(n) => Field::Random(
                    n.as_i64()
                        .or_else(|| n.as_f64().map(|f| f as i64))
                        .unwrap_or(0),
                ),
                other => Field::Fixed(Value::from_json(other).map_err(|e| {
                    PluginError::property("pattern", format!("field `{name}`: {e}"))
                })?),
            };
            fields.push((name.clone(), field));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        self.config = Some(Config {
            interval,
            seed,
            count,
            deduplicate,
            rng_seed,
            fields,
        });
        Ok(())
    }

    fn open(&mut self, _: &SourceContext) -> Result<(), PluginError> {
        let config = self
            .config
            .as_ref()
            .ok_or_else(|| PluginError::new("the random source was opened before configure"))?;
        tracing::info!(
            interval = ?config.interval,
            seed = config.seed,
            count = ?config.count,
            "open random source"
        );
        let rng = match config.rng_seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        // Scalars are written straight from the pattern; a pattern with lists or objects goes
        // through an owned tuple.
        let borrowed = config.fields.iter().all(|(_, f)| scalar_ref(f).is_some());
        self.run = Some(Run {
            rng,
            borrowed,
            values: vec![0; config.fields.len()],
            builder: TupleBuilder::with_capacity(config.fields.len()),
            recent: VecDeque::new(),
            next_tick: None,
            emitted: 0,
            drawn: false,
        });
        Ok(())
    }

    fn poll(&mut self, _: &SourceContext, emitter: &mut Emitter) -> Result<Next, PluginError> {
        let (Some(config), Some(run)) = (&self.config, &mut self.run) else {
            return Err(PluginError::new("the random source was polled before open"));
        };
        for _ in 0..BATCH {
            if config.count.is_some_and(|count| run.emitted >= count) {
                emitter.flush();
                tracing::info!(emitted = run.emitted, "random source reached its count");
                return Ok(Next::Done);
            }
            if !config.interval.is_zero() {
                let now = Instant::now();
                let due = *run.next_tick.get_or_insert(now);
                if due > now {
                    return Ok(Next::At(due));
                }
            }
            // A message drawn but not emitted (the ring was full) is emitted as it is, so
            // that a seeded stream does not depend on how fast the host reads.
            if !run.drawn {
                for (value, (_, field)) in run.values.iter_mut().zip(&config.fields) {
                    if let Field::Random(base) = field {
                        *value = base.saturating_add(run.rng.i64(0..config.seed));
                    }
                }
                if config.deduplicate != 0 {
                    if run.recent.contains(&run.values) {
                        tracing::debug!("skipping a duplicate");
                        // Publish what is deferred: the next emit may be far off.
                        emitter.flush();
                        continue;
                    }
                    if config.deduplicate > 0 && run.recent.len() >= config.deduplicate as usize {
                        run.recent.pop_front();
                    }
                    run.recent.push_back(run.values.clone());
                }
                run.drawn = true;
            }
            let timestamp = shmplug_sdk::now_nanos();
            if run.borrowed {
                let mut tuple = run.builder.tuple(timestamp);
                for (value, (name, field)) in run.values.iter().zip(&config.fields) {
                    let v = match field {
                        Field::Random(_) => ValueRef::Int(*value),
                        fixed => scalar_ref(fixed).unwrap_or(ValueRef::Null),
                    };
                    tuple.field(name, v);
                }
                if config.interval.is_zero() {
                    emitter.emit_deferred(&tuple.as_tuple_ref())?;
                } else {
                    emitter.emit(&tuple.as_tuple_ref())?;
                }
            } else {
                let mut tuple = Tuple::new(timestamp);
                for (value, (name, field)) in run.values.iter().zip(&config.fields) {
                    let v = match field {
                        Field::Random(_) => Value::Int(*value),
                        Field::Fixed(fixed) => fixed.clone(),
                    };
                    tuple.fields.insert(name.clone(), v);
                }
                emitter.emit_owned(&tuple)?;
            }
            run.drawn = false;
            run.emitted += 1;
            if let Some(due) = run.next_tick {
                // Like Go's ticker: a late tick is not made up for with a burst.
                run.next_tick = Some((due + config.interval).max(Instant::now()));
            }
        }
        Ok(Next::Now)
    }
}

/// A fixed field as a borrowed scalar; `None` for lists and maps.
fn scalar_ref(field: &Field) -> Option<ValueRef<'_>> {
    let Field::Fixed(value) = field else {
        return Some(ValueRef::Int(0));
    };
    value.as_ref()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;
    use shmplug_sdk::Blocking;
    use shmplug_sdk::testing::run_source;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn run(props: Json, max: usize) -> Result<Vec<Tuple>, PluginError> {
        run_source(Blocking(RandomSource::default()), "", props, max, WAIT)
    }

    #[test]
    fn emits_the_pattern_with_random_offsets_up_to_count() {
        let tuples = run(
            json!({"interval": 0, "count": 1000, "seed": 10,
                   "pattern": {"temperature": 20, "humidity": 50.7, "room": "kitchen", "on": true}}),
            5000,
        )
        .unwrap();
        assert_eq!(tuples.len(), 1000);
        let mut seen = BTreeSet::new();
        for tuple in &tuples {
            let Value::Int(t) = tuple.fields["temperature"] else {
                panic!("{tuple:?}")
            };
            let Value::Int(h) = tuple.fields["humidity"] else {
                panic!("{tuple:?}")
            };
            assert!((20..30).contains(&t) && (50..60).contains(&h), "{tuple:?}");
            assert_eq!(tuple.fields["room"], Value::from("kitchen"));
            assert_eq!(tuple.fields["on"], Value::Bool(true));
            assert!(tuple.timestamp > 0);
            seen.insert(t);
        }
        // 1000 draws from ten values hit every one.
        assert_eq!(seen, (20..30).collect());
    }

    #[test]
    fn a_seeded_generator_repeats_its_stream() {
        let props =
            json!({"interval": 0, "count": 50, "rngSeed": 7, "pattern": {"a": 0, "b": 100}});
        let fields = |tuples: Vec<Tuple>| tuples.into_iter().map(|t| t.fields).collect::<Vec<_>>();
        let first = fields(run(props.clone(), 100).unwrap());
        assert_eq!(first.len(), 50);
        assert_eq!(first, fields(run(props, 100).unwrap()));
    }

    #[test]
    fn paced_emission_stops_at_max_tuples() {
        let tuples = run(json!({"interval": "1ms", "pattern": {"a": 1}}), 3).unwrap();
        assert_eq!(tuples.len(), 3);
        assert!(tuples.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    }

    #[test]
    fn nested_pattern_fields_are_emitted_unchanged() {
        let tuples = run(
            json!({"interval": 0, "count": 2, "seed": 1,
                   "pattern": {"n": 5, "tags": ["a", "b"], "pos": {"x": 1}}}),
            10,
        )
        .unwrap();
        assert_eq!(tuples.len(), 2);
        assert_eq!(tuples[0].fields["n"], Value::Int(5));
        assert_eq!(
            tuples[0].fields["tags"],
            Value::List(vec![Value::from("a"), Value::from("b")])
        );
        assert_eq!(
            tuples[1].to_json_message(),
            json!({"n": 5, "tags": ["a", "b"], "pos": {"x": 1}})
        );
    }

    #[test]
    fn deduplicate_skips_recent_repeats() {
        // Two possible messages; with deduplication over the whole stream only two come out,
        // and the source keeps drawing duplicates until it is stopped.
        let tuples = run_source(
            Blocking(RandomSource::default()),
            "",
            json!({"interval": 0, "seed": 2, "deduplicate": -1, "rngSeed": 1, "pattern": {"a": 0}}),
            3,
            Duration::from_millis(200),
        )
        .unwrap();
        let values: BTreeSet<i64> = tuples
            .iter()
            .filter_map(|t| match t.fields["a"] {
                Value::Int(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(tuples.len(), 2);
        assert_eq!(values, BTreeSet::from([0, 1]));
    }

    #[test]
    fn bad_properties_are_named() {
        let cases = [
            (json!({}), "property `pattern`: is required"),
            (
                json!({"pattern": [1]}),
                "property `pattern`: expected a JSON object",
            ),
            (
                json!({"pattern": {}, "interval": "soon"}),
                "property `interval`: expected milliseconds",
            ),
            (
                json!({"pattern": {}, "seed": 0}),
                "property `seed`: expected a whole number of at least 1, got 0",
            ),
            (json!({"pattern": {}, "count": -1}), "property `count`"),
            (
                json!({"pattern": {}, "format": "csv"}),
                "property `format`: expected one of `json`, got \"csv\"",
            ),
        ];
        for (props, expected) in cases {
            let e = run(props.clone(), 1).unwrap_err().to_string();
            assert!(e.starts_with(expected), "{props}: {e}");
        }
    }
}
