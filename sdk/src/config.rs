//! [`PluginConfig`]: the plugin's name and the factories of its symbols.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use shmplug_transport::EndpointConfig;
use shmplug_transport::control::Hello;

use crate::api::{Function, Rewindable, Rewinding, Sink, Source};
use crate::polled::PolledSource;

/// Makes a fresh source instance.
pub type SourceFactory = Box<dyn Fn() -> Box<dyn Source> + Send + Sync>;
/// Makes a fresh polled source instance.
pub type PolledSourceFactory = Box<dyn Fn() -> Box<dyn PolledSource> + Send + Sync>;
/// Makes a fresh sink instance.
pub type SinkFactory = Box<dyn Fn() -> Box<dyn Sink> + Send + Sync>;
/// Makes a fresh function instance.
pub type FunctionFactory = Box<dyn Fn() -> Box<dyn Function> + Send + Sync>;

/// What a plugin offers, after eKuiper's `PluginConfig{Name, Sources, Sinks, Functions}`: its
/// name and, per symbol, a factory that makes one instance. The runtime calls a factory on the
/// new instance's own thread each time the host starts that symbol, so plugin types need not
/// be `Send`.
///
/// # Examples
/// ```
/// use shmplug_sdk::{Function, FunctionContext, PluginConfig, PluginError, Value, ValueView};
///
/// #[derive(Default)]
/// struct Len;
///
/// impl Function for Len {
///     fn exec(&mut self, _: &FunctionContext, args: &[ValueView<'_>]) -> Result<Value, PluginError> {
///         let s = args.first().and_then(|a| a.as_str()).ok_or("len expects one string")?;
///         Ok(Value::Int(s.chars().count() as i64))
///     }
/// }
///
/// let config = PluginConfig::new("strings").function("len", Len::default);
/// assert_eq!(config.hello().functions, ["len"]);
/// ```
pub struct PluginConfig {
    /// The plugin's name; must equal the `name` of its `{name}.json` manifest.
    pub name: String,
    /// Source symbols and their factories.
    pub sources: BTreeMap<String, SourceFactory>,
    /// [`PolledSource`] symbols and their factories: their instances run on the executor.
    pub polled_sources: BTreeMap<String, PolledSourceFactory>,
    /// How many executor threads run the polled sources' instances; `None`: the
    /// `SHMPLUG_EXECUTOR_THREADS` environment variable if set, else one per CPU
    /// ([`std::thread::available_parallelism`]). The threads start with the first polled
    /// instance.
    pub executor_threads: Option<usize>,
    /// How much later than the instant a polled source asked for ([`Next::At`](crate::Next::At))
    /// an executor thread with nothing else to do may wake it, at most: a tenth of the wait,
    /// up to this. The instances due within it then share one wake-up, so that the plugin and
    /// the host wake far less often when many instances emit sparsely (a thousand instances at
    /// 10 tuples/s: about a third less CPU than with none); their tuples come that much late
    /// (a source ticking every 100 ms, up to 10 ms; every 10 ms, up to 1 ms). Default 10 ms;
    /// `SHMPLUG_EXECUTOR_SLACK_US` (microseconds) overrides it; zero wakes every instance at
    /// its instant (to the millisecond).
    pub executor_timer_slack: Duration,
    /// Sink symbols and their factories.
    pub sinks: BTreeMap<String, SinkFactory>,
    /// Function symbols and their factories.
    pub functions: BTreeMap<String, FunctionFactory>,
    /// Functions not safe to run twice for one call ([`PluginConfig::not_repeatable`]).
    pub not_repeatable: BTreeSet<String>,
    /// Sources registered with [`PluginConfig::rewindable_source`].
    pub rewindable: BTreeSet<String>,
    /// How the plugin's ring endpoints wait: by default they spin for 30 µs, then sleep on a
    /// futex.
    pub endpoint: EndpointConfig,
}

/// The default spin budget of a plugin's ring endpoints.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(30);

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            name: String::new(),
            sources: BTreeMap::new(),
            polled_sources: BTreeMap::new(),
            executor_threads: None,
            executor_timer_slack: std::env::var("SHMPLUG_EXECUTOR_SLACK_US")
                .ok()
                .and_then(|us| us.trim().parse().ok())
                .map_or(crate::runtime::DEFAULT_TIMER_SLACK, Duration::from_micros),
            sinks: BTreeMap::new(),
            functions: BTreeMap::new(),
            not_repeatable: BTreeSet::new(),
            rewindable: BTreeSet::new(),
            endpoint: EndpointConfig::default().with_spin(DEFAULT_SPIN),
        }
    }
}

impl PluginConfig {
    /// A plugin named `name` with no symbols yet.
    pub fn new(name: impl Into<String>) -> PluginConfig {
        PluginConfig {
            name: name.into(),
            ..PluginConfig::default()
        }
    }

    /// Adds the source `symbol`, made by `factory` (a type's `default`, or a closure).
    pub fn source<S, F>(mut self, symbol: impl Into<String>, factory: F) -> PluginConfig
    where
        S: Source + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let symbol = symbol.into();
        let factory: SourceFactory = Box::new(move || Box::new(factory()));
        self.rewindable.remove(&symbol);
        self.polled_sources.remove(&symbol);
        self.sources.insert(symbol, factory);
        self
    }

    /// Adds the [`PolledSource`] `symbol`, made by `factory`: its instances run on the
    /// runtime's executor threads instead of a thread each.
    pub fn polled_source<S, F>(mut self, symbol: impl Into<String>, factory: F) -> PluginConfig
    where
        S: PolledSource + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let symbol = symbol.into();
        let factory: PolledSourceFactory = Box::new(move || Box::new(factory()));
        self.rewindable.remove(&symbol);
        self.sources.remove(&symbol);
        self.polled_sources.insert(symbol, factory);
        self
    }

    /// This configuration with `threads` executor threads (at least one) for the polled
    /// sources' instances, whatever the environment says.
    pub fn with_executor_threads(mut self, threads: usize) -> PluginConfig {
        self.executor_threads = Some(threads.max(1));
        self
    }

    /// Adds the [`Rewindable`] source `symbol`, made by `factory`: the hello declares it
    /// rewindable, so a host asks it for each tuple's offset and rewinds a restarted instance
    /// to the last one it handed on.
    pub fn rewindable_source<S, F>(mut self, symbol: impl Into<String>, factory: F) -> PluginConfig
    where
        S: Rewindable + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let symbol = symbol.into();
        let factory: SourceFactory = Box::new(move || Box::new(Rewinding(factory())));
        self.polled_sources.remove(&symbol);
        self.sources.insert(symbol.clone(), factory);
        self.rewindable.insert(symbol);
        self
    }

    /// Adds the sink `symbol`, made by `factory`.
    pub fn sink<S, F>(mut self, symbol: impl Into<String>, factory: F) -> PluginConfig
    where
        S: Sink + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let factory: SinkFactory = Box::new(move || Box::new(factory()));
        self.sinks.insert(symbol.into(), factory);
        self
    }

    /// Adds the function `symbol`, made by `factory`.
    pub fn function<T, F>(mut self, symbol: impl Into<String>, factory: F) -> PluginConfig
    where
        T: Function + 'static,
        F: Fn() -> T + Send + Sync + 'static,
    {
        let factory: FunctionFactory = Box::new(move || Box::new(factory()));
        self.functions.insert(symbol.into(), factory);
        self
    }

    /// Declares function `symbol` not safe to run twice for one call (it has effects beyond
    /// its answer, say it increments a counter). A host retries the calls that were in flight
    /// when the plugin's process died on the restarted process; for this function it fails
    /// them instead, each with an error that names the crash.
    pub fn not_repeatable(mut self, symbol: impl Into<String>) -> PluginConfig {
        self.not_repeatable.insert(symbol.into());
        self
    }

    /// This configuration with a different ring endpoint configuration (spin budget, parking).
    pub fn with_endpoint(mut self, endpoint: EndpointConfig) -> PluginConfig {
        self.endpoint = endpoint;
        self
    }

    /// The [`Hello`] the runtime sends: this build's protocol version, the name and the
    /// symbols. To list the aggregate functions, it makes one value of each function with its
    /// factory and asks [`Function::is_aggregate`], then drops it.
    pub fn hello(&self) -> Hello {
        let mut hello = Hello::new(self.name.clone());
        let sources: BTreeSet<&String> = self
            .sources
            .keys()
            .chain(self.polled_sources.keys())
            .collect();
        hello.sources = sources.into_iter().cloned().collect();
        hello.sinks = self.sinks.keys().cloned().collect();
        hello.functions = self.functions.keys().cloned().collect();
        hello.not_repeatable = self.not_repeatable.iter().cloned().collect();
        hello.call_batches = true;
        hello.aggregates = self
            .functions
            .iter()
            .filter(|(_, factory)| factory().is_aggregate())
            .map(|(symbol, _)| symbol.clone())
            .collect();
        hello.rewindable = self.rewindable.iter().cloned().collect();
        hello
    }
}

impl fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginConfig")
            .field("name", &self.name)
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .field(
                "polled_sources",
                &self.polled_sources.keys().collect::<Vec<_>>(),
            )
            .field("sinks", &self.sinks.keys().collect::<Vec<_>>())
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FunctionContext, PluginError, Value, ValueView};

    /// Sums a window's values.
    struct Sum;

    impl Function for Sum {
        fn exec(
            &mut self,
            _: &FunctionContext,
            args: &[ValueView<'_>],
        ) -> Result<Value, PluginError> {
            let list = args
                .first()
                .and_then(|a| a.as_list())
                .ok_or("sum takes a list")?;
            Ok(Value::Int(list.iter().filter_map(|v| v.as_i64()).sum()))
        }

        fn is_aggregate(&self) -> bool {
            true
        }
    }

    struct Plain;

    impl Function for Plain {}

    struct Polled;

    impl PolledSource for Polled {
        fn configure(&mut self, _: &str, _: &crate::Props) -> Result<(), PluginError> {
            Ok(())
        }

        fn poll(
            &mut self,
            _: &crate::SourceContext,
            _: &mut crate::Emitter,
        ) -> Result<crate::Next, PluginError> {
            Ok(crate::Next::Done)
        }
    }

    struct Blocking;

    impl Source for Blocking {
        fn configure(&mut self, _: &str, _: &crate::Props) -> Result<(), PluginError> {
            Ok(())
        }

        fn open(
            &mut self,
            _: &crate::SourceContext,
            _: &mut crate::Emitter,
        ) -> Result<(), PluginError> {
            Ok(())
        }
    }

    #[test]
    fn polled_and_blocking_sources_share_one_list_and_the_last_registration_wins() {
        let config = PluginConfig::new("p")
            .polled_source("b", || Polled)
            .source("a", || Blocking)
            .source("c", || Blocking)
            .polled_source("c", || Polled);
        assert_eq!(config.hello().sources, ["a", "b", "c"]);
        assert!(config.polled_sources.contains_key("c") && !config.sources.contains_key("c"));
        let config = config.source("b", || Blocking);
        assert!(!config.polled_sources.contains_key("b") && config.sources.contains_key("b"));
        assert_eq!(config.hello().sources, ["a", "b", "c"]);
        assert_eq!(
            PluginConfig::new("p")
                .with_executor_threads(0)
                .executor_threads,
            Some(1)
        );
    }

    #[test]
    fn the_hello_lists_the_aggregate_functions() {
        let config = PluginConfig::new("p")
            .function("sum", || Sum)
            .function("plain", || Plain);
        let hello = config.hello();
        assert_eq!(hello.functions, ["plain", "sum"]);
        assert_eq!(hello.aggregates, ["sum"]);
    }
}
