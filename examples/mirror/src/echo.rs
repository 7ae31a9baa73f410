//! The `echo` function.

use shmplug_sdk::{Answer, Arg, Function, FunctionContext, PluginError, ValueView};

/// `echo(x)`: returns its one argument unchanged, whatever its type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Function for Echo {
    /// One argument, checked when a pipeline is loaded.
    fn validate_args(&self, args: &[Arg<'_>]) -> Result<(), PluginError> {
        arity(args.len())
    }

    fn validate(&self, args: &[ValueView<'_>]) -> Result<(), PluginError> {
        arity(args.len())
    }

    /// Answers with the argument where it lies, in the call's record: nothing is copied out.
    fn exec_ref<'a>(
        &'a mut self,
        _: &FunctionContext,
        args: &[ValueView<'a>],
    ) -> Result<Answer<'a>, PluginError> {
        Ok(Answer::View(args[0]))
    }
}

fn arity(n: usize) -> Result<(), PluginError> {
    if n != 1 {
        return Err(PluginError::new(format!(
            "echo function only supports 1 parameter but got {n}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shmplug_sdk::testing::call_function;

    use super::*;
    use shmplug_sdk::Value;

    #[test]
    fn echo_returns_its_argument() {
        let nested = Value::List(vec![
            Value::Int(1),
            Value::Map(BTreeMap::from([(
                "k".to_owned(),
                Value::Bytes(vec![0, 255]),
            )])),
        ]);
        for value in [
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Float(2.5),
            Value::from("text"),
            Value::Bytes(vec![1, 2, 3]),
            Value::Timestamp(1_700_000_000_000_000_000),
            nested,
        ] {
            assert_eq!(
                call_function(&mut Echo, std::slice::from_ref(&value)).unwrap(),
                value
            );
        }
    }

    #[test]
    fn echo_refuses_other_argument_lists_at_load() {
        assert!(Echo.validate_args(&[Arg::Field("value")]).is_ok());
        let e = Echo
            .validate_args(&[Arg::Field("a"), Arg::Field("b")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "echo function only supports 1 parameter but got 2"
        );
    }

    #[test]
    fn echo_takes_exactly_one_argument() {
        for args in [vec![], vec![Value::Int(1), Value::Int(2)]] {
            let e = call_function(&mut Echo, &args).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "echo function only supports 1 parameter but got {}",
                    args.len()
                )
            );
        }
    }
}
