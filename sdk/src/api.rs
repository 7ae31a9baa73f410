//! The plugin traits, in the shape of eKuiper's portable plugin API: [`Source`], [`Sink`],
//! [`Function`].

use shmplug_transport::tuple::{FieldValue, Offset};
use shmplug_transport::{TupleView, Value, ValueRef, ValueView};

use crate::context::{FunctionContext, SinkContext, SourceContext};
use crate::emitter::Emitter;
use crate::error::PluginError;

/// Configuration properties, as the host sends them: a source's stream and configuration-key
/// properties, a sink's action properties (eKuiper's `map[string]interface{}`).
pub type Props = serde_json::Map<String, serde_json::Value>;

/// A source: produces tuples for a rule.
///
/// One value is made (by its factory) per instance the host starts, on the instance's own
/// thread; the runtime calls [`configure`](Self::configure), then [`open`](Self::open), then
/// [`close`](Self::close), all on that thread.
pub trait Source {
    /// Reads the properties. An error fails the rule's start with its text.
    ///
    /// `data_source` is the stream's `DATASOURCE` (a topic, a path, ...), empty when the
    /// stream has none.
    ///
    /// # Errors
    /// Any [`PluginError`]; name the property and what would be accepted
    /// ([`PluginError::property`]).
    fn configure(&mut self, data_source: &str, props: &Props) -> Result<(), PluginError>;

    /// Produces tuples with `emitter` until the instance is stopped
    /// ([`ctx.is_cancelled()`](crate::StreamContext::is_cancelled), or an `emit*` or
    /// [`ctx.sleep`](crate::StreamContext::sleep) returning [`PluginError::Cancelled`]) or the
    /// source has nothing more to produce. Returning ends the stream: the host sees the end of
    /// the ring after the last tuple.
    ///
    /// # Errors
    /// [`PluginError::Cancelled`] and [`PluginError::Closed`] are a normal end; any other
    /// error is logged against the instance.
    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError>;

    /// Releases what `open` (or `configure`) acquired. Called once `open` has returned.
    ///
    /// # Errors
    /// Any [`PluginError`]; it is logged against the instance.
    fn close(&mut self, ctx: &SourceContext) -> Result<(), PluginError> {
        let _ = ctx;
        Ok(())
    }

    /// The source as a [`Rewindable`] one, if it is: what
    /// [`PluginConfig::rewindable_source`](crate::PluginConfig::rewindable_source) arranges.
    /// Leave the default.
    #[doc(hidden)]
    fn as_rewindable(&mut self) -> Option<&mut dyn Rewindable> {
        None
    }
}

/// A source that can go back to an offset: eKuiper's `Rewindable` contract, so that a plugin
/// restart neither loses nor repeats what the host had handed on.
///
/// The source gives each tuple's offset as it emits it ([`Emitter::emit_at`]): where it
/// stands once that tuple is out (eKuiper's `GetOffset` after it), as up to
/// [`MAX_OFFSET_LEN`](crate::transport::tuple::MAX_OFFSET_LEN) bytes only it interprets (a
/// sequence number with [`Offset::from_u64`], a file position, a message id). The host
/// remembers the offset of the last tuple it handed on; when the plugin's process dies and is
/// started again, the new instance is configured, then rewound to that offset with
/// [`rewind`](Self::rewind) before its `open`, and the host drops what the dead process had
/// emitted after it, so the stream goes on with the next tuple. An instance that had handed
/// nothing on starts as new (no `rewind`). A tuple emitted without an offset (with
/// [`Emitter::emit`]) leaves the last offset as it was.
///
/// Register it with [`PluginConfig::rewindable_source`](crate::PluginConfig::rewindable_source).
///
/// # Examples
/// ```
/// use shmplug_sdk::transport::tuple::Offset;
/// use shmplug_sdk::{Emitter, PluginError, Props, Rewindable, Source, SourceContext, Tuple};
///
/// /// Emits 0, 1, 2, ... from where it was rewound to.
/// #[derive(Default)]
/// struct Counter {
///     next: u64,
/// }
///
/// impl Source for Counter {
///     fn configure(&mut self, _: &str, _: &Props) -> Result<(), PluginError> {
///         Ok(())
///     }
///
///     fn open(&mut self, _: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
///         loop {
///             let n = self.next;
///             emitter.emit_at(&Offset::from_u64(n), &Tuple::new(0).with_field("n", n as i64))?;
///             self.next += 1;
///         }
///     }
/// }
///
/// impl Rewindable for Counter {
///     fn rewind(&mut self, offset: &Offset) -> Result<(), PluginError> {
///         let last = offset.as_u64().ok_or("the offset is not a counter")?;
///         self.next = last + 1;
///         Ok(())
///     }
/// }
/// ```
pub trait Rewindable: Source {
    /// Moves the source to `offset`, the offset it gave with a tuple it emitted in an earlier
    /// run: the next tuple it emits is the one that came after that tuple. Called after
    /// [`configure`](Source::configure) and before [`open`](Source::open).
    ///
    /// # Errors
    /// Any [`PluginError`] (the offset is no longer available, say): the start fails with
    /// its text, and the host reports the instance gone instead of losing or repeating
    /// tuples silently.
    fn rewind(&mut self, offset: &Offset) -> Result<(), PluginError>;
}

/// A sink: consumes a rule's tuples.
///
/// One value is made per instance, on the instance's own thread; the runtime calls
/// [`configure`](Self::configure) and [`open`](Self::open), then
/// [`collect`](Self::collect) for every tuple, in order, until the instance is stopped or the
/// host ends the stream, then [`close`](Self::close).
pub trait Sink {
    /// Reads the properties. An error fails the rule's start with its text.
    ///
    /// # Errors
    /// Any [`PluginError`]; name the property and what would be accepted.
    fn configure(&mut self, props: &Props) -> Result<(), PluginError>;

    /// Connects to whatever the sink writes to. An error fails the rule's start with its text.
    ///
    /// # Errors
    /// Any [`PluginError`].
    fn open(&mut self, ctx: &SinkContext) -> Result<(), PluginError> {
        let _ = ctx;
        Ok(())
    }

    /// Handles one tuple, read in place from shared memory: the view borrows the ring's
    /// record, which is released when `collect` returns. Copy out
    /// ([`TupleView::to_owned`]) only what must outlive the call.
    ///
    /// # Errors
    /// Any [`PluginError`]; it is logged against the instance (at most about once a second,
    /// with a count), and the sink goes on with the next tuple, as eKuiper does.
    fn collect(&mut self, ctx: &SinkContext, tuple: &TupleView<'_>) -> Result<(), PluginError>;

    /// Flushes and releases what the sink holds. Called once, after the last `collect`.
    ///
    /// # Errors
    /// Any [`PluginError`]; it is logged against the instance.
    fn close(&mut self, ctx: &SinkContext) -> Result<(), PluginError> {
        let _ = ctx;
        Ok(())
    }

    /// True if `collect` may leave tuples in a buffer of the sink's own (a `BufWriter`, a
    /// batch for a remote service) that only [`flush`](Self::flush) writes out. The runtime
    /// then acknowledges tuples to the host only after a `flush` returned `Ok`, so that a
    /// host delivering at least once writes what was still buffered again to a restarted
    /// process instead of losing it. Asked once, after [`open`](Self::open).
    ///
    /// The runtime flushes when no tuple has come for a millisecond, after 1024 tuples or a
    /// quarter of the ring, every 100 ms while tuples keep coming, and before `close`.
    fn buffers(&self) -> bool {
        false
    }

    /// Writes out what the sink buffers: every tuple given to `collect` so far is then
    /// delivered. Called only if [`buffers`](Self::buffers) is true.
    ///
    /// # Errors
    /// Any [`PluginError`]; it is logged against the instance, the tuples stay
    /// unacknowledged, and the next flush tries again.
    fn flush(&mut self, ctx: &SinkContext) -> Result<(), PluginError> {
        let _ = ctx;
        Ok(())
    }
}

/// A function callable from a rule's SQL.
///
/// One value is made per instance the host starts; calls are served in order on the
/// instance's thread. Each call is first [`validate`](Self::validate)d, then
/// [`exec`](Self::exec)uted; the result or the error's text is the call's reply.
///
/// Before any of that, when a pipeline (a rule) that calls the function is loaded, the host
/// asks [`validate_args`](Self::validate_args) whether the argument list is right, on a value
/// made for the purpose and dropped after: a refusal fails the pipeline's start, before
/// anything opens, with the function's message.
pub trait Function {
    /// Checks the argument list a rule gives the function, once, when the rule is loaded and
    /// before any tuple flows (eKuiper validates a rule's function calls when it parses the
    /// rule). Each [`Arg`] says what the argument will be; the values themselves are not known
    /// yet. Check the number of arguments here, and anything else the list alone tells.
    ///
    /// # Errors
    /// Any [`PluginError`] saying what the function expects: the rule's start fails with its
    /// text, naming the function.
    ///
    /// # Examples
    /// ```
    /// use shmplug_sdk::{Arg, Function, FunctionContext, PluginError, Value, ValueView};
    ///
    /// struct Echo;
    ///
    /// impl Function for Echo {
    ///     fn validate_args(&self, args: &[Arg<'_>]) -> Result<(), PluginError> {
    ///         match args {
    ///             [_] => Ok(()),
    ///             _ => Err(format!("echo takes 1 argument, got {}", args.len()).into()),
    ///         }
    ///     }
    ///
    ///     fn exec(&mut self, _: &FunctionContext, args: &[ValueView<'_>]) -> Result<Value, PluginError> {
    ///         Ok(args[0].to_owned())
    ///     }
    /// }
    /// ```
    fn validate_args(&self, args: &[Arg<'_>]) -> Result<(), PluginError> {
        let _ = args;
        Ok(())
    }

    /// Checks the arguments' number and types, per call: the shmplug runtime calls it before
    /// every [`exec`](Self::exec), with the call's values, so `exec` may rely on it. (What can
    /// be checked before any tuple flows belongs in [`validate_args`](Self::validate_args).)
    ///
    /// # Errors
    /// Any [`PluginError`] saying what the function expects: the call fails with its text.
    fn validate(&self, args: &[ValueView<'_>]) -> Result<(), PluginError> {
        let _ = args;
        Ok(())
    }

    /// Computes the result. The arguments are read in place from shared memory.
    ///
    /// Implement this or [`exec_ref`](Self::exec_ref) (each defaults to the other; a function
    /// that implements neither fails every call with an error that says so).
    ///
    /// # Errors
    /// Any [`PluginError`]: the call fails with its text.
    fn exec(
        &mut self,
        ctx: &FunctionContext,
        args: &[ValueView<'_>],
    ) -> Result<Value, PluginError> {
        if DEFAULT_EXEC_REF.replace(false) {
            // Called from the default `exec_ref`: neither is implemented.
            return Err(PluginError::new(
                "the function implements neither `exec` nor `exec_ref`",
            ));
        }
        self.exec_ref(ctx, args).map(|answer| answer.to_owned())
    }

    /// As [`exec`](Self::exec), but the answer may borrow from the arguments or from the
    /// function itself (a buffer it keeps): the runtime writes it into the reply record from
    /// where it lies, so answering allocates nothing. This is what the runtime calls.
    ///
    /// # Errors
    /// As [`exec`](Self::exec).
    ///
    /// # Examples
    /// ```
    /// use shmplug_sdk::{Answer, Function, FunctionContext, PluginError, ValueView};
    ///
    /// /// `first(list)`: the first item of a list, or null.
    /// struct First;
    ///
    /// impl Function for First {
    ///     fn exec_ref<'a>(
    ///         &'a mut self,
    ///         _: &FunctionContext,
    ///         args: &[ValueView<'a>],
    ///     ) -> Result<Answer<'a>, PluginError> {
    ///         let first = args.first().and_then(|l| l.as_list()).and_then(|l| l.get(0));
    ///         Ok(Answer::View(first.unwrap_or(ValueView::Null)))
    ///     }
    /// }
    /// ```
    fn exec_ref<'a>(
        &'a mut self,
        ctx: &FunctionContext,
        args: &[ValueView<'a>],
    ) -> Result<Answer<'a>, PluginError> {
        DEFAULT_EXEC_REF.set(true);
        let answer = self.exec(ctx, args);
        DEFAULT_EXEC_REF.set(false);
        answer.map(Answer::Value)
    }

    /// True for an aggregate function (eKuiper's `IsAggregate`): one that takes a whole
    /// window's values. The runtime asks once, at start, and announces the answer in its
    /// hello; a pipeline then gives the function's stage a count window (`window = N`), and
    /// the host calls it once per window, each argument a list of the window's `N` values
    /// (in arrival order), and sends one tuple on per window.
    fn is_aggregate(&self) -> bool {
        false
    }
}

/// One argument of a function call, as a rule gives it, for
/// [`Function::validate_args`]: what the argument will be, before any value is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Arg<'a> {
    /// The value of this field of each tuple (or of an earlier function's answer of that
    /// name): known only per tuple.
    Field(&'a str),
}

impl<'a> Arg<'a> {
    /// The field's name.
    pub fn field(&self) -> Option<&'a str> {
        match *self {
            Arg::Field(name) => Some(name),
        }
    }
}

thread_local! {
    /// Set while the default [`Function::exec_ref`] calls [`Function::exec`], so that the
    /// default `exec` can tell that neither is implemented instead of recursing.
    static DEFAULT_EXEC_REF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A function's answer ([`Function::exec_ref`]): an owned value, or one borrowed from the
/// arguments or from the function.
#[derive(Clone, Debug)]
pub enum Answer<'a> {
    /// An owned value.
    Value(Value),
    /// A value read from the arguments (or any other received tuple).
    View(ValueView<'a>),
    /// A borrowed value (from a buffer the function keeps, say).
    Ref(ValueRef<'a>),
}

impl Answer<'_> {
    /// The answer as an owned value.
    pub fn to_owned(&self) -> Value {
        match self {
            Answer::Value(v) => v.clone(),
            Answer::View(v) => v.to_owned(),
            Answer::Ref(v) => ref_to_owned(v),
        }
    }

    /// The answer as the transport writes it, unless it is owned.
    pub(crate) fn as_field(&self) -> Option<FieldValue<'_>> {
        match self {
            Answer::Value(_) => None,
            Answer::View(v) => Some(FieldValue::View(*v)),
            Answer::Ref(v) => Some(FieldValue::Ref(*v)),
        }
    }
}

fn ref_to_owned(v: &ValueRef<'_>) -> Value {
    match *v {
        ValueRef::Null => Value::Null,
        ValueRef::Bool(b) => Value::Bool(b),
        ValueRef::Int(i) => Value::Int(i),
        ValueRef::Float(f) => Value::Float(f),
        ValueRef::String(s) => Value::from(s),
        ValueRef::Bytes(b) => Value::from(b),
        ValueRef::List(items) => Value::List(items.iter().map(ref_to_owned).collect()),
        ValueRef::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ref_to_owned(v)))
                .collect(),
        ),
        ValueRef::Timestamp(t) => Value::Timestamp(t),
    }
}

// Forwarding impls, so that a `&mut` to a plugin value (kept for inspection in a test) or a
// box of one can stand in for it.

impl<S: Source + ?Sized> Source for &mut S {
    fn configure(&mut self, data_source: &str, props: &Props) -> Result<(), PluginError> {
        (**self).configure(data_source, props)
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        (**self).open(ctx, emitter)
    }

    fn close(&mut self, ctx: &SourceContext) -> Result<(), PluginError> {
        (**self).close(ctx)
    }
    fn as_rewindable(&mut self) -> Option<&mut dyn Rewindable> {
        (**self).as_rewindable()
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn configure(&mut self, data_source: &str, props: &Props) -> Result<(), PluginError> {
        (**self).configure(data_source, props)
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        (**self).open(ctx, emitter)
    }

    fn close(&mut self, ctx: &SourceContext) -> Result<(), PluginError> {
        (**self).close(ctx)
    }
    fn as_rewindable(&mut self) -> Option<&mut dyn Rewindable> {
        (**self).as_rewindable()
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn configure(&mut self, props: &Props) -> Result<(), PluginError> {
        (**self).configure(props)
    }

    fn open(&mut self, ctx: &SinkContext) -> Result<(), PluginError> {
        (**self).open(ctx)
    }

    fn collect(&mut self, ctx: &SinkContext, tuple: &TupleView<'_>) -> Result<(), PluginError> {
        (**self).collect(ctx, tuple)
    }

    fn close(&mut self, ctx: &SinkContext) -> Result<(), PluginError> {
        (**self).close(ctx)
    }

    fn buffers(&self) -> bool {
        (**self).buffers()
    }

    fn flush(&mut self, ctx: &SinkContext) -> Result<(), PluginError> {
        (**self).flush(ctx)
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn configure(&mut self, props: &Props) -> Result<(), PluginError> {
        (**self).configure(props)
    }

    fn open(&mut self, ctx: &SinkContext) -> Result<(), PluginError> {
        (**self).open(ctx)
    }

    fn collect(&mut self, ctx: &SinkContext, tuple: &TupleView<'_>) -> Result<(), PluginError> {
        (**self).collect(ctx, tuple)
    }

    fn close(&mut self, ctx: &SinkContext) -> Result<(), PluginError> {
        (**self).close(ctx)
    }

    fn buffers(&self) -> bool {
        (**self).buffers()
    }

    fn flush(&mut self, ctx: &SinkContext) -> Result<(), PluginError> {
        (**self).flush(ctx)
    }
}

impl<F: Function + ?Sized> Function for &mut F {
    fn validate_args(&self, args: &[Arg<'_>]) -> Result<(), PluginError> {
        (**self).validate_args(args)
    }

    fn validate(&self, args: &[ValueView<'_>]) -> Result<(), PluginError> {
        (**self).validate(args)
    }

    fn exec(
        &mut self,
        ctx: &FunctionContext,
        args: &[ValueView<'_>],
    ) -> Result<Value, PluginError> {
        (**self).exec(ctx, args)
    }

    fn exec_ref<'a>(
        &'a mut self,
        ctx: &FunctionContext,
        args: &[ValueView<'a>],
    ) -> Result<Answer<'a>, PluginError> {
        (**self).exec_ref(ctx, args)
    }

    fn is_aggregate(&self) -> bool {
        (**self).is_aggregate()
    }
}

impl<F: Function + ?Sized> Function for Box<F> {
    fn validate_args(&self, args: &[Arg<'_>]) -> Result<(), PluginError> {
        (**self).validate_args(args)
    }

    fn validate(&self, args: &[ValueView<'_>]) -> Result<(), PluginError> {
        (**self).validate(args)
    }

    fn exec(
        &mut self,
        ctx: &FunctionContext,
        args: &[ValueView<'_>],
    ) -> Result<Value, PluginError> {
        (**self).exec(ctx, args)
    }

    fn exec_ref<'a>(
        &'a mut self,
        ctx: &FunctionContext,
        args: &[ValueView<'a>],
    ) -> Result<Answer<'a>, PluginError> {
        (**self).exec_ref(ctx, args)
    }

    fn is_aggregate(&self) -> bool {
        (**self).is_aggregate()
    }
}

/// A [`Rewindable`] source as a plain [`Source`] that still offers its rewind
/// ([`Source::as_rewindable`]): what [`PluginConfig::rewindable_source`](crate::PluginConfig::rewindable_source) registers.
pub(crate) struct Rewinding<S>(pub S);

impl<S: Rewindable> Source for Rewinding<S> {
    fn configure(&mut self, data_source: &str, props: &Props) -> Result<(), PluginError> {
        self.0.configure(data_source, props)
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        self.0.open(ctx, emitter)
    }

    fn close(&mut self, ctx: &SourceContext) -> Result<(), PluginError> {
        self.0.close(ctx)
    }

    fn as_rewindable(&mut self) -> Option<&mut dyn Rewindable> {
        Some(self)
    }
}

impl<S: Rewindable> Rewindable for Rewinding<S> {
    fn rewind(&mut self, offset: &Offset) -> Result<(), PluginError> {
        self.0.rewind(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::call_function;

    /// Implements neither `exec` nor `exec_ref`.
    struct Neither;

    impl Function for Neither {}

    /// Implements `exec` only.
    struct Outer;

    impl Function for Outer {
        fn exec(
            &mut self,
            _: &FunctionContext,
            args: &[ValueView<'_>],
        ) -> Result<Value, PluginError> {
            Ok(Value::Int(args.len() as i64))
        }
    }

    #[test]
    fn a_function_that_implements_neither_fails_its_calls_instead_of_recursing() {
        let error = call_function(&mut Neither, &[Value::Int(1)]).unwrap_err();
        assert!(
            error.to_string().contains("neither `exec` nor `exec_ref`"),
            "{error}"
        );
        // The guard is per call: the next call fails the same way, and a function that does
        // implement `exec` is unaffected.
        assert!(call_function(&mut Neither, &[]).is_err());
        assert_eq!(
            call_function(&mut Outer, &[Value::Null, Value::Null]).unwrap(),
            Value::Int(2)
        );
    }
}
