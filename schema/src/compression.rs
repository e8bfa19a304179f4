//! Per-batch compression codecs. Codec ids match Kafka's attribute bits so the
//! Kafka listener maps them without a table.
//!
//! A compressed records body is `[u32 LE uncompressed length][codec bytes]`:
//! the length lets a reader refuse a decompression bomb before it starts and
//! allocate once.

use crate::batch::BatchError;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    pub fn from_id(id: u8) -> Result<Compression, BatchError> {
        Compression::ALL
            .iter()
            .copied()
            .find(|c| *c as u8 == id)
            .ok_or(BatchError::UnsupportedCompression(id))
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Compression> {
        Compression::ALL.iter().copied().find(|c| c.name() == name)
    }
}

pub(crate) const LENGTH_PREFIX_LEN: usize = 4;

/// Appends `[len][compressed input]` to `out`.
pub(crate) fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    assert!(codec != Compression::None);
    let len = u32::try_from(input.len()).map_err(|_| BatchError::TooLarge {
        len: input.len(),
        len_max: u32::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    match codec {
        Compression::None => unreachable!(),
        Compression::Gzip => {
            use std::io::Write;
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            encoder.write_all(input).map_err(codec_error)?;
            encoder.finish().map_err(codec_error)?;
        }
        Compression::Snappy => {
            let compressed = snap::raw::Encoder::new()
                .compress_vec(input)
                .map_err(codec_error)?;
            out.extend_from_slice(&compressed);
        }
        Compression::Lz4 => {
            let start = out.len();
            out.resize(
                start + lz4_flex::block::get_maximum_output_size(input.len()),
                0,
            );
            let written =
                lz4_flex::block::compress_into(input, &mut out[start..]).map_err(codec_error)?;
            out.truncate(start + written);
        }
        Compression::Zstd => {
            let compressed = zstd::bulk::compress(input, 1).map_err(codec_error)?;
            out.extend_from_slice(&compressed);
        }
    }
    Ok(())
}

/// Decompresses a `[len][compressed]` body into `out` (cleared first),
/// refusing bodies that claim or produce more than `len_max` bytes.
pub(crate) fn decompress(
    codec: Compression,
    body: &[u8],
    len_max: usize,
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    out.clear();
    let Some((len_bytes, compressed)) = body.split_first_chunk::<LENGTH_PREFIX_LEN>() else {
        return Err(BatchError::Truncated {
            needed: LENGTH_PREFIX_LEN,
            got: body.len(),
        });
    };
    let len = u32::from_le_bytes(*len_bytes) as usize;
    if len > len_max {
        return Err(BatchError::TooLarge { len, len_max });
    }
    match codec {
        Compression::None => unreachable!("uncompressed bodies are read in place"),
        Compression::Gzip => {
            use std::io::Read;
            out.reserve(len);
            // Kafka's Java producers may write several gzip members.
            let decoder = flate2::read::MultiGzDecoder::new(compressed);
            // One byte past the claimed length tells a lying prefix apart.
            decoder
                .take(len as u64 + 1)
                .read_to_end(out)
                .map_err(codec_error)?;
        }
        Compression::Snappy => {
            let claimed = snap::raw::decompress_len(compressed).map_err(codec_error)?;
            if claimed != len {
                return Err(BatchError::Codec(format!(
                    "snappy length {claimed} differs from the prefix {len}"
                )));
            }
            out.resize(len, 0);
            snap::raw::Decoder::new()
                .decompress(compressed, out)
                .map_err(codec_error)?;
        }
        Compression::Lz4 => {
            out.resize(len, 0);
            let written = lz4_flex::block::decompress_into(compressed, out).map_err(codec_error)?;
            out.truncate(written);
        }
        Compression::Zstd => {
            out.resize(len, 0);
            let written = zstd::bulk::decompress_to_buffer(compressed, out).map_err(codec_error)?;
            out.truncate(written);
        }
    }
    if out.len() != len {
        return Err(BatchError::Codec(format!(
            "decompressed {} bytes but the prefix says {len}",
            out.len()
        )));
    }
    Ok(())
}

fn codec_error(error: impl std::fmt::Display) -> BatchError {
    BatchError::Codec(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_refuses_bombs() {
        let input: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        for codec in Compression::ALL
            .into_iter()
            .filter(|c| *c != Compression::None)
        {
            let mut compressed = Vec::new();
            compress(codec, &input, &mut compressed).unwrap();
            let mut out = Vec::new();
            decompress(codec, &compressed, input.len(), &mut out).unwrap();
            assert_eq!(out, input, "{codec:?}");
            assert!(matches!(
                decompress(codec, &compressed, input.len() - 1, &mut out),
                Err(BatchError::TooLarge { .. })
            ));
            // A prefix that lies about the length is caught.
            let mut lying = compressed.clone();
            lying[..4].copy_from_slice(&((input.len() - 10) as u32).to_le_bytes());
            assert!(
                decompress(codec, &lying, input.len(), &mut out).is_err(),
                "{codec:?}"
            );
            // Garbage after the prefix is an error, not a panic.
            let garbage = [&compressed[..4], &[0xff; 64][..]].concat();
            assert!(
                decompress(codec, &garbage, input.len(), &mut out).is_err(),
                "{codec:?}"
            );
        }
    }
}
