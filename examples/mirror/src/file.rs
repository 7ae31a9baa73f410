//! The `file` sink.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmplug_sdk::{PluginError, Props, PropsExt, Sink, SinkContext, TupleView};

/// The `file` sink: appends each tuple's fields (the eKuiper message) to a file as one line of
/// JSON, as eKuiper's mirror example does.
///
/// | property | default | meaning |
/// | --- | --- | --- |
/// | `path` | `"cache"` | the file, created if missing, appended to; a relative path is relative to the plugin's working directory (under `shmplug run`, the pipeline file's directory) |
/// | `interval` | `1000` | write buffered lines out when a tuple arrives this long (milliseconds or a duration string) after the last write (the clock is read every 64 lines); `0` writes every line at once |
///
/// Lines are buffered and always written out when the sink closes. The sink says it buffers
/// ([`Sink::buffers`]), so the runtime acknowledges a tuple to the host only once its line was
/// written to the file: a plugin killed with lines in its buffer loses none of them, the host
/// writes them again to the restarted process (at least once).
#[derive(Debug, Default)]
pub struct FileSink {
    path: PathBuf,
    interval: Duration,
    out: Option<BufWriter<File>>,
    last_flush: Option<Instant>,
    /// Lines buffered since the clock was last read.
    unclocked: u32,
}

/// A busy sink reads the clock once per this many lines (a clock read costs about what
/// writing a short line does), so a line waits at most this many lines past `interval`; a
/// stream that pauses is flushed by the runtime after a millisecond anyway.
const LINES_PER_CLOCK: u32 = 64;

impl FileSink {
    fn write_out(&mut self) -> Result<(), PluginError> {
        if let Some(out) = &mut self.out {
            out.flush().map_err(|e| {
                PluginError::new(format!(
                    "file sink cannot write to {}: {e}",
                    self.path.display()
                ))
            })?;
        }
        self.last_flush = Some(Instant::now());
        Ok(())
    }
}

impl Sink for FileSink {
    fn configure(&mut self, props: &Props) -> Result<(), PluginError> {
        self.path = props
            .path("path")?
            .unwrap_or_else(|| PathBuf::from("cache"));
        self.interval = props
            .duration("interval")?
            .unwrap_or(Duration::from_secs(1));
        Ok(())
    }

    fn open(&mut self, _: &SinkContext) -> Result<(), PluginError> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                PluginError::new(format!(
                    "file sink cannot open {} for appending: {e}; check the `path` property and \
                     that the directory exists and is writable",
                    self.path.display()
                ))
            })?;
        // A process killed in the middle of writing out its buffer leaves a partial line:
        // start on a line of our own, so that the lines written again after it stay whole.
        if !ends_a_line(&mut file).map_err(|e| {
            PluginError::new(format!(
                "file sink cannot read {}: {e}",
                self.path.display()
            ))
        })? {
            file.write_all(b"\n").map_err(|e| {
                PluginError::new(format!(
                    "file sink cannot write to {}: {e}",
                    self.path.display()
                ))
            })?;
        }
        tracing::debug!(path = %self.path.display(), "file sink opened");
        // 64 KiB: one write per few hundred lines rather than per 8 KiB.
        self.out = Some(BufWriter::with_capacity(1 << 16, file));
        self.last_flush = Some(Instant::now());
        Ok(())
    }

    fn collect(&mut self, _: &SinkContext, tuple: &TupleView<'_>) -> Result<(), PluginError> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| PluginError::new("the file sink collected before open"))?;
        let written = serde_json::to_writer(&mut *out, &tuple.fields())
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(e) = written {
            return Err(PluginError::new(format!(
                "file sink cannot write to {}: {e}",
                self.path.display()
            )));
        }
        if self.interval.is_zero() {
            return self.write_out();
        }
        self.unclocked += 1;
        if self.unclocked >= LINES_PER_CLOCK {
            self.unclocked = 0;
            if self.last_flush.is_none_or(|t| t.elapsed() >= self.interval) {
                self.write_out()?;
            }
        }
        Ok(())
    }

    /// Lines wait in a 64 KiB buffer: the runtime acknowledges their tuples to the host only
    /// after [`flush`](Sink::flush) wrote them to the file.
    fn buffers(&self) -> bool {
        true
    }

    fn flush(&mut self, _: &SinkContext) -> Result<(), PluginError> {
        self.write_out()
    }

    fn close(&mut self, _: &SinkContext) -> Result<(), PluginError> {
        self.write_out()?;
        if let Some(out) = self.out.take() {
            out.into_inner()
                .map_err(|e| PluginError::new(format!("file sink: {e}")))?
                .sync_all()
                .map_err(|e| {
                    PluginError::new(format!(
                        "file sink cannot sync {}: {e}",
                        self.path.display()
                    ))
                })?;
        }
        Ok(())
    }
}

/// True if `file` is empty or ends with a newline.
fn ends_a_line(file: &mut File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shmplug_sdk::Tuple;
    use shmplug_sdk::testing::feed_sink;

    use super::*;

    #[test]
    fn writes_one_json_line_per_tuple_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let tuples: Vec<Tuple> = (0..100i64)
            .map(|n| {
                Tuple::new(n)
                    .with_field("n", n)
                    .with_field("name", format!("t{n}"))
                    .with_field("raw", vec![1u8, 2])
            })
            .collect();
        let props = json!({"path": path, "interval": "1h"});
        feed_sink(FileSink::default(), props.clone(), &tuples[..60]).unwrap();
        feed_sink(FileSink::default(), props, &tuples[60..]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 100);
        for (n, line) in lines.iter().enumerate() {
            assert_eq!(
                line,
                &json!({"n": n, "name": format!("t{n}"), "raw": "AQI="})
            );
        }
    }

    #[test]
    fn a_partial_last_line_is_ended_before_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"n\":1}\n{\"n\":").unwrap();
        let tuples = [Tuple::new(2).with_field("n", 2i64)];
        feed_sink(FileSink::default(), json!({"path": path}), &tuples).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"n\":1}\n{\"n\":\n{\"n\":2}\n");
    }

    #[test]
    fn an_unwritable_path_fails_open_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("out.jsonl");
        let e = feed_sink(FileSink::default(), json!({"path": path}), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot open") && e.contains("missing-dir"),
            "{e}"
        );
    }
}
