//! Incremental Server-Sent Events parser.
//!
//! Bytes may be fed split at any point (inside a field name, between `\r` and
//! `\n`, inside a multi-byte UTF-8 character); events come out once their
//! terminating blank line has been seen. Line ends may be `\n`, `\r\n` or `\r`.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// The parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// A new parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes, returns the events completed by them.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            match self.buf[i] {
                b'\n' => {
                    let line = self.buf[start..i].to_vec();
                    self.line(&line, &mut out);
                    i += 1;
                    start = i;
                }
                b'\r' => {
                    if i + 1 >= self.buf.len() {
                        // Might be the first half of "\r\n": wait for more.
                        break;
                    }
                    let line = self.buf[start..i].to_vec();
                    self.line(&line, &mut out);
                    i += if self.buf[i + 1] == b'\n' { 2 } else { 1 };
                    start = i;
                }
                _ => i += 1,
            }
        }
        self.buf.drain(..start);
        out
    }

    /// Ends the input: a trailing `\r` ends its line, and an event that was
    /// not followed by a blank line is dropped, as the SSE spec says.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.buf.last() == Some(&b'\r') {
            let line = self.buf[..self.buf.len() - 1].to_vec();
            self.buf.clear();
            self.line(&line, &mut out);
        }
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: self.event.take(),
                    data,
                });
            }
            self.event = None;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => self.event = Some(value.into_owned()),
            b"data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            _ => {}
        }
    }
}

/// Formats one `data:` event.
pub fn data_event(out: &mut Vec<u8>, data: &str) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_split_and_multiline() {
        let input = b"event: a\r\ndata: x\r\ndata: y\r\n\r\n: comment\n\ndata:z\r\r";
        for split in 0..input.len() {
            let mut p = SseParser::new();
            let mut ev = p.feed(&input[..split]);
            ev.extend(p.feed(&input[split..]));
            ev.extend(p.finish());
            assert_eq!(
                ev,
                vec![
                    SseEvent {
                        event: Some("a".into()),
                        data: "x\ny".into()
                    },
                    SseEvent {
                        event: None,
                        data: "z".into()
                    }
                ],
                "split at {split}"
            );
        }
    }
}
