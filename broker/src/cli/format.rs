//! `fjord consume --format`: kcat-style templates or one JSON object per
//! record.

use std::io::{self, Write};

use fjord_net::client::consumer::ConsumerRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
    KeyLength,
    ValueLength,
}

/// How each record is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Json,
    Template(Vec<Piece>),
}

impl Format {
    /// `json`, or a template; a newline is added at the end unless the
    /// template ends with one.
    pub fn parse(text: &str) -> Result<Format, String> {
        if text == "json" {
            return Ok(Format::Json);
        }
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let piece = match chars.next() {
                        Some('%') => {
                            literal.push(b'%');
                            continue;
                        }
                        Some('t') => Piece::Topic,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('k') => Piece::Key,
                        Some('v') | Some('s') => Piece::Value,
                        Some('T') => Piece::Timestamp,
                        Some('h') => Piece::Headers,
                        Some('K') => Piece::KeyLength,
                        Some('S') => Piece::ValueLength,
                        Some(other) => {
                            return Err(format!(
                                "unknown format placeholder %{other} (known: %t %p %o %k %v %T %h %K %S %%)"
                            ))
                        }
                        None => return Err("format ends with a lone %".to_owned()),
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                }
                '\\' => match chars.next() {
                    Some('n') => literal.push(b'\n'),
                    Some('t') => literal.push(b'\t'),
                    Some('r') => literal.push(b'\r'),
                    Some('0') => literal.push(0),
                    Some('\\') => literal.push(b'\\'),
                    Some(other) => {
                        literal.push(b'\\');
                        let mut buf = [0; 4];
                        literal.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                    None => literal.push(b'\\'),
                },
                other => {
                    let mut buf = [0; 4];
                    literal.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if literal.last() != Some(&b'\n') {
            literal.push(b'\n');
        }
        pieces.push(Piece::Literal(literal));
        Ok(Format::Template(pieces))
    }

    pub fn write(&self, out: &mut impl Write, record: &ConsumerRecord) -> io::Result<()> {
        match self {
            Format::Json => write_json(out, record),
            Format::Template(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Literal(bytes) => out.write_all(bytes)?,
                        Piece::Topic => out.write_all(record.topic.as_bytes())?,
                        Piece::Partition => write!(out, "{}", record.partition)?,
                        Piece::Offset => write!(out, "{}", record.offset)?,
                        Piece::Key => out.write_all(record.key.as_deref().unwrap_or_default())?,
                        Piece::Value => {
                            out.write_all(record.value.as_deref().unwrap_or_default())?
                        }
                        Piece::Timestamp => write!(out, "{}", record.timestamp)?,
                        Piece::Headers => {
                            for (i, (key, value)) in record.headers.iter().enumerate() {
                                if i > 0 {
                                    out.write_all(b",")?;
                                }
                                out.write_all(key)?;
                                out.write_all(b"=")?;
                                out.write_all(value.as_deref().unwrap_or_default())?;
                            }
                        }
                        Piece::KeyLength => write!(out, "{}", length(record.key.as_deref()))?,
                        Piece::ValueLength => write!(out, "{}", length(record.value.as_deref()))?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// kcat prints -1 for a null key or value.
fn length(bytes: Option<&[u8]>) -> i64 {
    bytes.map_or(-1, |b| b.len() as i64)
}

fn write_json(out: &mut impl Write, record: &ConsumerRecord) -> io::Result<()> {
    out.write_all(b"{\"topic\":")?;
    json_string(out, record.topic.as_bytes())?;
    write!(
        out,
        ",\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":",
        record.partition, record.offset, record.timestamp
    )?;
    json_bytes(out, record.key.as_deref())?;
    out.write_all(b",\"value\":")?;
    json_bytes(out, record.value.as_deref())?;
    out.write_all(b",\"headers\":[")?;
    for (i, (key, value)) in record.headers.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(b"{\"key\":")?;
        json_string(out, key)?;
        out.write_all(b",\"value\":")?;
        json_bytes(out, value.as_deref())?;
        out.write_all(b"}")?;
    }
    out.write_all(b"]}\n")
}

fn json_bytes(out: &mut impl Write, bytes: Option<&[u8]>) -> io::Result<()> {
    match bytes {
        None => out.write_all(b"null"),
        Some(bytes) => json_string(out, bytes),
    }
}

/// A JSON string; bytes that are not UTF-8 become U+FFFD.
fn json_string(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let text = String::from_utf8_lossy(bytes);
    out.write_all(b"\"")?;
    for c in text.chars() {
        match c {
            '"' => out.write_all(b"\\\"")?,
            '\\' => out.write_all(b"\\\\")?,
            '\n' => out.write_all(b"\\n")?,
            '\r' => out.write_all(b"\\r")?,
            '\t' => out.write_all(b"\\t")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => {
                let mut buf = [0; 4];
                out.write_all(c.encode_utf8(&mut buf).as_bytes())?;
            }
        }
    }
    out.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use fjord_schema::{Offset, PartitionId};

    use super::*;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("orders"),
            partition: PartitionId(2),
            offset: Offset(17),
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"user-1")),
            value: Some(Bytes::from_static(b"he said \"hi\"\n")),
            headers: vec![
                (
                    Bytes::from_static(b"trace"),
                    Some(Bytes::from_static(b"abc")),
                ),
                (Bytes::from_static(b"empty"), None),
            ],
        }
    }

    fn render(format: &str, record: &ConsumerRecord) -> String {
        let mut out = Vec::new();
        Format::parse(format)
            .expect("valid format")
            .write(&mut out, record)
            .expect("in-memory write");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn default_prints_the_value_and_a_newline() {
        let mut r = record();
        r.value = Some(Bytes::from_static(b"hello"));
        assert_eq!(render("%v", &r), "hello\n");
    }

    #[test]
    fn kcat_placeholders() {
        let mut r = record();
        r.value = Some(Bytes::from_static(b"v"));
        assert_eq!(
            render("%t/%p@%o %T %k=%v [%h] %K %S 100%%\\n", &r),
            "orders/2@17 1700000000000 user-1=v [trace=abc,empty=] 6 1 100%\n"
        );
        r.key = None;
        assert_eq!(render("%K|%k|", &r), "-1||\n");
        assert_eq!(render("%k\\t%v", &r), "\tv\n");
    }

    #[test]
    fn unknown_placeholders_are_refused() {
        assert!(Format::parse("%x").is_err());
        assert!(Format::parse("value %").is_err());
    }

    #[test]
    fn json_escapes_and_keeps_nulls() {
        let mut r = record();
        r.key = None;
        assert_eq!(
            render("json", &r),
            "{\"topic\":\"orders\",\"partition\":2,\"offset\":17,\"timestamp\":1700000000000,\
             \"key\":null,\"value\":\"he said \\\"hi\\\"\\n\",\"headers\":[{\"key\":\"trace\",\
             \"value\":\"abc\"},{\"key\":\"empty\",\"value\":null}]}\n"
        );
    }
}
