//! Opening a pipeline's stages on running plugin processes, one way for `shmplug run` and
//! `shmplug serve`. Before anything opens, every stage's symbol is checked against its
//! plugin's hello, every aggregate function must have a count window (and no other function
//! may), and every function's argument list is checked by its plugin
//! (`Function::validate_args`). Then the functions open (each with its [`Step`]), then the
//! source, and the sink last, with its `delivery`. The source opens before the sink so that a
//! source that cannot start (its `configure` or `open` fails) leaves the sink untouched: a
//! failed start never truncates, rewrites or closes an output as a normal end would.

use shmplug_host::{FunctionClient, InstanceSpec, Plugin, SinkWriter, SourceReader, SymbolKind};

use shmplug_host::transport::control::ArgShape;

use crate::error::Error;
use crate::pipeline::Pipeline;
use crate::pump::Step;

/// A pipeline's open instances.
#[derive(Debug)]
pub(crate) struct Stages {
    /// Each function's client and what it reads and fills, in pipeline order.
    pub calls: Vec<(FunctionClient, Step)>,
    pub source: SourceReader,
    pub sink: SinkWriter,
}

/// Opens `pipeline`'s instances, as part of rule `rule_id`, on the processes `plugin` finds by
/// name.
///
/// # Errors
/// Before anything opens: a stage whose plugin has no running process or does not offer its
/// symbol, an aggregate function without a `window` (or not last) or a `window` on another
/// function, a function that refuses its argument list ([`Error::Stage`]). After: an instance
/// that could not start (the host's error names it).
pub(crate) fn open<'p>(
    pipeline: &Pipeline,
    plugin: impl Fn(&str) -> Option<&'p Plugin>,
    rule_id: &str,
) -> crate::error::Result<Stages> {
    check_symbols(pipeline, &plugin)?;
    // `check_symbols` found every plugin; a lookup that fails now (a plugin removed since)
    // is still an error, not a panic.
    let get = |name: &str| {
        plugin(name).ok_or_else(|| shmplug_host::Error::Unavailable {
            plugin: name.to_owned(),
            reason: "it has no running process".into(),
        })
    };
    let in_rule = |mut spec: InstanceSpec| {
        spec.rule_id = rule_id.to_owned();
        spec
    };
    check_windows(pipeline, &plugin)?;
    for (index, call) in pipeline.functions.iter().enumerate() {
        let args = call
            .args
            .iter()
            .map(|name| ArgShape::Field { name: name.clone() })
            .collect();
        get(&call.plugin)?
            .validate_function(&call.symbol, args)
            .map_err(|e| Error::Stage {
                stage: stage_name(index, &call.output),
                detail: e.to_string(),
            })?;
    }
    let mut calls = Vec::with_capacity(pipeline.functions.len());
    let mut steps: Vec<Step> = Vec::with_capacity(pipeline.functions.len());
    for (index, call) in pipeline.functions.iter().enumerate() {
        let mut step = Step::new(call.args.clone(), call.output.clone(), &steps);
        if let Some(size) = call.window {
            // At most MAX_WINDOW, checked when the file was read.
            step = step.with_window(usize::try_from(size).unwrap_or(usize::MAX));
        }
        steps.push(step.clone());
        let client = get(&call.plugin)?.function(in_rule(call.spec(index)))?;
        calls.push((client, step));
    }
    let source = get(&pipeline.source.plugin)?.source(in_rule(pipeline.source.spec()))?;
    let mut sink = get(&pipeline.sink.plugin)?.sink(in_rule(pipeline.sink.spec()))?;
    if let Some(choice) = pipeline.sink.delivery {
        sink.set_delivery(choice.delivery());
    }
    Ok(Stages {
        calls,
        source,
        sink,
    })
}

/// Checks that every aggregate function (as its plugin's hello says) has a `window` and is
/// the last function, and that no other function has one.
fn check_windows<'p>(
    pipeline: &Pipeline,
    plugin: impl Fn(&str) -> Option<&'p Plugin>,
) -> crate::error::Result<()> {
    let last = pipeline.functions.len().saturating_sub(1);
    for (index, call) in pipeline.functions.iter().enumerate() {
        let aggregate = plugin(&call.plugin)
            .and_then(Plugin::hello)
            .is_some_and(|hello| hello.aggregates.contains(&call.symbol));
        let function = format!("function `{}` of plugin `{}`", call.symbol, call.plugin);
        let detail = match (aggregate, call.window) {
            (true, None) => format!(
                "{function} is an aggregate function (it takes a window's values): give the \
                 stage a count window, `window = N` (tuples per call)"
            ),
            (false, Some(_)) => format!(
                "{function} is not an aggregate function: remove `window` (only an aggregate \
                 function takes a window)"
            ),
            (true, Some(_)) if index != last => format!(
                "{function} is an aggregate function, which must be the pipeline's last \
                 function (the functions after it would see one tuple per window): move it to \
                 the end"
            ),
            _ => continue,
        };
        return Err(Error::Stage {
            stage: stage_name(index, &call.output),
            detail,
        });
    }
    Ok(())
}

/// How an error names function stage `index` (0-based) that fills `output`.
fn stage_name(index: usize, output: &str) -> String {
    format!("{} (functions[{index}], fills `{output}`)", index + 1)
}

/// Checks that each stage's plugin offers its symbol (as its hello said), naming what it
/// offers otherwise.
fn check_symbols<'p>(
    pipeline: &Pipeline,
    plugin: impl Fn(&str) -> Option<&'p Plugin>,
) -> crate::error::Result<()> {
    let stages = std::iter::once((
        SymbolKind::Source,
        &pipeline.source.plugin,
        &pipeline.source.symbol,
    ))
    .chain(
        pipeline
            .functions
            .iter()
            .map(|f| (SymbolKind::Function, &f.plugin, &f.symbol)),
    )
    .chain(std::iter::once((
        SymbolKind::Sink,
        &pipeline.sink.plugin,
        &pipeline.sink.symbol,
    )));
    for (kind, name, symbol) in stages {
        let Some(hello) = plugin(name).and_then(Plugin::hello) else {
            return Err(shmplug_host::Error::Unavailable {
                plugin: name.clone(),
                reason: "it has no running process to ask for its symbols".into(),
            }
            .into());
        };
        let offered = match kind {
            SymbolKind::Source => hello.sources,
            SymbolKind::Sink => hello.sinks,
            SymbolKind::Function => hello.functions,
        };
        if !offered.contains(symbol) {
            return Err(shmplug_host::Error::UnknownSymbol {
                plugin: name.clone(),
                kind,
                symbol: symbol.clone(),
                offered,
            }
            .into());
        }
    }
    Ok(())
}
