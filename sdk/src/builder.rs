//! [`TupleBuilder`]: a reusable list of borrowed fields, for sources that emit from a buffer
//! they refill.

use shmplug_transport::{TupleRef, ValueRef};

/// A field list kept across tuples whose fields borrow from a buffer the source refills (a
/// line it reads into again and again): the list's memory is reused, tuple after tuple,
/// although each tuple's borrows end before the buffer is refilled.
///
/// A plain `Vec<(&str, ValueRef)>` kept outside the loop cannot do this: it would borrow the
/// buffer for as long as it lives, so the buffer could not be refilled. [`TupleBuilder::tuple`]
/// lends the list out for one tuple, with a fresh lifetime, and takes its memory back when the
/// [`TupleDraft`] is dropped. After the first tuples nothing is allocated.
///
/// # Examples
/// A source that reads `name,count` lines and emits one tuple per line:
/// ```
/// use std::io::BufRead;
/// use shmplug_sdk::{Emitter, PluginError, SourceContext, TupleBuilder, ValueRef};
///
/// fn emit_lines(
///     input: &mut impl BufRead,
///     ctx: &SourceContext,
///     emitter: &mut Emitter,
/// ) -> Result<(), PluginError> {
///     let mut line = String::new();
///     let mut builder = TupleBuilder::new();
///     while !ctx.is_cancelled() {
///         line.clear(); // refilling the buffer: no tuple may borrow it now
///         if input.read_line(&mut line)? == 0 {
///             break;
///         }
///         let Some((name, count)) = line.trim_end().split_once(',') else {
///             continue;
///         };
///         let count: i64 = count.parse().map_err(|_| PluginError::new(format!("bad count in {line:?}")))?;
///         let mut tuple = builder.tuple(shmplug_sdk::now_nanos());
///         tuple.field("name", ValueRef::String(name)).field("count", ValueRef::Int(count));
///         emitter.emit_deferred(&tuple.as_tuple_ref())?;
///     }
///     emitter.flush();
///     Ok(())
/// }
///
/// // In a test, through the SDK's harness:
/// # use shmplug_sdk::{Props, Source, Tuple, testing};
/// # struct Lines;
/// # impl Source for Lines {
/// #     fn configure(&mut self, _: &str, _: &Props) -> Result<(), PluginError> { Ok(()) }
/// #     fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
/// #         emit_lines(&mut "a,1\nb,2\n".as_bytes(), ctx, emitter)
/// #     }
/// # }
/// let tuples = testing::run_source(Lines, "", serde_json::Value::Null, 10, std::time::Duration::from_secs(5))?;
/// assert_eq!(tuples.len(), 2);
/// assert_eq!(tuples[1].fields["name"], "b".into());
/// # Ok::<(), PluginError>(())
/// ```
#[derive(Debug, Default)]
pub struct TupleBuilder {
    /// Always empty between tuples; only its capacity matters.
    spare: Vec<(&'static str, ValueRef<'static>)>,
}

impl TupleBuilder {
    /// A builder with no memory yet; it grows to the largest tuple built.
    pub fn new() -> TupleBuilder {
        TupleBuilder::default()
    }

    /// A builder with room for `fields` fields.
    pub fn with_capacity(fields: usize) -> TupleBuilder {
        TupleBuilder {
            spare: Vec::with_capacity(fields),
        }
    }

    /// Starts a tuple stamped `timestamp` (nanoseconds since the Unix epoch), with no fields,
    /// in the builder's memory. Its fields may borrow anything that outlives the draft.
    pub fn tuple<'a>(&mut self, timestamp: i64) -> TupleDraft<'_, 'a> {
        TupleDraft {
            fields: recycle(std::mem::take(&mut self.spare)),
            home: &mut self.spare,
            timestamp,
        }
    }

    /// How many fields the builder has room for without allocating.
    pub fn capacity(&self) -> usize {
        self.spare.capacity()
    }
}

/// A tuple being built in a [`TupleBuilder`]'s memory; dropping it gives the memory back.
#[derive(Debug)]
pub struct TupleDraft<'b, 'a> {
    home: &'b mut Vec<(&'static str, ValueRef<'static>)>,
    fields: Vec<(&'a str, ValueRef<'a>)>,
    timestamp: i64,
}

impl<'a> TupleDraft<'_, 'a> {
    /// Appends the field `name` (names should be unique: a reader finds the first).
    pub fn field(&mut self, name: &'a str, value: ValueRef<'a>) -> &mut Self {
        self.fields.push((name, value));
        self
    }

    /// The fields so far, in order.
    pub fn fields(&self) -> &[(&'a str, ValueRef<'a>)] {
        &self.fields
    }

    /// Removes every field, keeping the timestamp.
    pub fn clear(&mut self) {
        self.fields.clear();
    }

    /// The tuple, for [`Emitter::emit`](crate::Emitter::emit) and
    /// [`emit_deferred`](crate::Emitter::emit_deferred).
    pub fn as_tuple_ref(&self) -> TupleRef<'_> {
        TupleRef::new(self.timestamp, &self.fields)
    }
}

impl Drop for TupleDraft<'_, '_> {
    fn drop(&mut self) {
        *self.home = recycle(std::mem::take(&mut self.fields));
    }
}

/// The same allocation, emptied, with a new lifetime for its (absent) borrows: collecting an
/// empty vector's `into_iter` into a vector of a type of the same size and alignment reuses
/// its memory (the standard library collects such iterators in place).
fn recycle<'x, 'y>(mut list: Vec<(&'x str, ValueRef<'x>)>) -> Vec<(&'y str, ValueRef<'y>)> {
    list.clear();
    list.into_iter()
        .map(|_| -> (&'y str, ValueRef<'y>) { unreachable!("the list was cleared") })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_is_kept_across_tuples_whose_buffer_is_refilled() {
        let mut builder = TupleBuilder::new();
        let mut line = String::new();
        let mut seen = Vec::new();
        for n in 0..50 {
            line.clear();
            line.push_str(&format!("word{n} {n}"));
            let (word, number) = line.split_once(' ').unwrap();
            let mut tuple = builder.tuple(n);
            tuple
                .field("word", ValueRef::String(word))
                .field("n", ValueRef::Int(number.parse().unwrap()));
            let t = tuple.as_tuple_ref();
            assert_eq!(t.timestamp, n);
            seen.push(format!("{:?}", t.fields));
            if n == 0 {
                continue;
            }
            drop(tuple);
            // Grown once, for the first tuple, and reused since.
            assert_eq!(builder.capacity(), 4, "tuple {n}");
        }
        assert_eq!(seen[7], r#"[("word", String("word7")), ("n", Int(7))]"#);
    }

    #[test]
    fn clear_keeps_the_timestamp() {
        let mut builder = TupleBuilder::with_capacity(8);
        let mut tuple = builder.tuple(5);
        tuple.field("a", ValueRef::Null);
        tuple.clear();
        assert!(tuple.fields().is_empty());
        assert_eq!(tuple.as_tuple_ref().timestamp, 5);
        drop(tuple);
        assert_eq!(builder.capacity(), 8);
    }
}
