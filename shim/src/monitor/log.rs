//! The container log: one JSON object a line, like Docker's json-file driver
//! (`{"log":"hi\n","stream":"stdout","time":"…"}`), so `logs` can replay each stream apart.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which of the container's outputs a line came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of container output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub log: String,
    pub stream: Stream,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// Appends container output to the log file, one entry per complete line.
pub struct LogWriter {
    file: File,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: &Path) -> std::io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogWriter {
            file,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Records a chunk of output; complete lines are written at once, the rest waits.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let slot = stream as usize;
        self.pending[slot].extend_from_slice(data);
        while let Some(end) = self.pending[slot].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending[slot].drain(..=end).collect();
            self.append(stream, &line)?;
        }
        Ok(())
    }

    /// Writes out any partial lines (at exit).
    pub fn flush(&mut self) -> std::io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream as usize]);
            if !rest.is_empty() {
                self.append(stream, &rest)?;
            }
        }
        Ok(())
    }

    fn append(&mut self, stream: Stream, bytes: &[u8]) -> std::io::Result<()> {
        let entry = Entry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream,
            time: chrono::Utc::now(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// Reads entries from a log file, starting at a byte offset; returns them and the new offset.
/// A last line still being written (no newline yet) is left for the next read.
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<Entry>, u64)> {
    use std::io::{Seek, SeekFrom};
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut position = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        position += n as u64;
        if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
            entries.push(entry);
        }
    }
    Ok((entries, position))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_per_stream_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::open(&path).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"lo\nwor").unwrap();
        let (entries, offset) = read_from(&path, 0).unwrap();
        let got: Vec<_> = entries.iter().map(|e| (e.stream, e.log.as_str())).collect();
        assert_eq!(
            got,
            [(Stream::Stderr, "oops\n"), (Stream::Stdout, "hello\n")]
        );
        w.flush().unwrap();
        let (more, _) = read_from(&path, offset).unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].log, "wor");
    }

    #[test]
    fn a_missing_log_reads_as_empty() {
        let (entries, offset) = read_from(Path::new("/nonexistent/log"), 0).unwrap();
        assert!(entries.is_empty());
        assert_eq!(offset, 0);
    }
}
