//! The JSON-lines sink: one event per line on the event stream (stdout in the daemon).

use std::io::{self, Write};

use serde::Serialize;

use super::{Line, Sink};

/// Writes events as JSON lines.
pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        JsonLines { out }
    }

    /// Writes one event and its newline (buffered until [`JsonLines::flush`]).
    pub fn write(&mut self, event: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, event).map_err(io::Error::other)?;
        self.out.write_all(b"\n")
    }

    /// Hands what was written to the reader.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// What was written (for tests that write to memory).
    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

/// Every line, kills, findings and losses alike.
impl<W: Write> Sink for JsonLines<W> {
    fn emit(&mut self, line: Line<'_>) -> io::Result<()> {
        self.write(&line)
    }

    fn flush(&mut self) -> io::Result<()> {
        JsonLines::flush(self)
    }
}
