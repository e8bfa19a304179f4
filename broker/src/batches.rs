//! Native batches checked once, where they enter the broker, and carried
//! as such to the partition that appends them: the type says the CRC-32C,
//! lengths, version, record count and attribute bits were checked, so the
//! owning shard does not check them again.
//!
//! Two ways in: [`VerifiedBatches::verify`] parses back-to-back batches
//! off the wire (a native Produce: one CRC pass, each batch a slice of the
//! request, no copy); [`VerifiedBatches::built`] takes batches this broker
//! just built (the Kafka edge's conversion: the builder computed the CRC
//! over the bytes it wrote, there is nothing to verify; debug builds check
//! anyway). The engine's produce request carries them per partition (or
//! the [`BatchesError`] that partition is answered with) to the owning
//! shard's `PartitionManager::produce`. What stays for the partition: `max.message.bytes` (a topic
//! config) and the stamping of offsets, for which
//! [`VerifiedBatches::into_appendable`] gives each batch as a `BytesMut`
//! without a copy when it is the batch's only reference (a converted Kafka
//! batch) and with one otherwise (a slice of a native request's buffer).

use bytes::{Bytes, BytesMut};
use fjord_schema::batch::{BatchError, BatchView, ATTRIBUTES_DEFINED};
use fjord_schema::ErrorCode;

/// Why a produce request's records are not valid native batches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchesError {
    #[error("no record batches")]
    Empty,
    #[error("batch at byte {at}: {source}")]
    Invalid { at: usize, source: BatchError },
    #[error("batch at byte {at} holds no records")]
    NoRecords { at: usize },
    #[error("batch at byte {at} sets undefined attribute bits {bits:#06x}")]
    UndefinedAttributes { at: usize, bits: u16 },
}

impl BatchesError {
    /// The code a Produce answer carries.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            BatchesError::Empty => ErrorCode::InvalidRequest,
            BatchesError::Invalid {
                source: BatchError::TooLarge { .. },
                ..
            } => ErrorCode::MessageTooLarge,
            _ => ErrorCode::CorruptMessage,
        }
    }
}

/// One produce request's batches for one partition, each whole and
/// verified, in order.
#[derive(Debug, Clone, Default)]
pub struct VerifiedBatches {
    batches: Vec<Bytes>,
}

impl VerifiedBatches {
    /// Verifies back-to-back native batches (CRC-32C, lengths, version,
    /// at least one record, only defined attribute bits); each batch is a
    /// slice of `records`.
    pub fn verify(records: &Bytes) -> Result<VerifiedBatches, BatchesError> {
        if records.is_empty() {
            return Err(BatchesError::Empty);
        }
        let mut batches = Vec::new();
        let mut rest: &[u8] = records;
        while !rest.is_empty() {
            let at = records.len() - rest.len();
            let (view, tail) =
                BatchView::parse(rest).map_err(|source| BatchesError::Invalid { at, source })?;
            check_header(&view, at)?;
            let len = view.as_bytes().len();
            batches.push(records.slice(at..at + len));
            rest = tail;
        }
        Ok(VerifiedBatches { batches })
    }

    /// Batches this broker built whole (CRC computed over the bytes it
    /// wrote), one `Bytes` each.
    pub(crate) fn built(batches: Vec<Bytes>) -> VerifiedBatches {
        if cfg!(debug_assertions) {
            for batch in &batches {
                let (view, tail) = BatchView::parse(batch).expect("a built batch parses");
                assert!(tail.is_empty(), "one batch per Bytes");
                check_header(&view, 0).expect("a built batch is valid");
            }
        }
        VerifiedBatches { batches }
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// How many batches.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// The batches, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.batches.iter()
    }

    /// Bytes of all the batches.
    pub fn bytes_len(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }

    /// A batch as the log takes it (to stamp its offsets in place):
    /// without a copy when `batch` is its only reference, copied when it
    /// shares a buffer (a native request's).
    pub fn into_appendable(batch: Bytes) -> BytesMut {
        batch
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
    }
}

impl IntoIterator for VerifiedBatches {
    type Item = Bytes;
    type IntoIter = std::vec::IntoIter<Bytes>;

    fn into_iter(self) -> Self::IntoIter {
        self.batches.into_iter()
    }
}

/// What a parsed batch must hold beyond its CRC and lengths.
fn check_header(view: &BatchView<'_>, at: usize) -> Result<(), BatchesError> {
    if view.header().record_count() == 0 {
        return Err(BatchesError::NoRecords { at });
    }
    let bits = view.header().attributes.get() & !ATTRIBUTES_DEFINED;
    if bits != 0 {
        return Err(BatchesError::UndefinedAttributes { at, bits });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use fjord_schema::batch::{BatchBuilder, BatchOptions, RecordInput, BATCH_CRC_START};

    use super::*;

    fn batch(records: usize) -> Bytes {
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for i in 0..records {
            builder.push(RecordInput {
                key: Some(b"k"),
                value: Some(&[i as u8; 10]),
                headers: &[],
                timestamp: 1,
                offset_delta: None,
            });
        }
        builder.finish().expect("builds")
    }

    /// Back-to-back batches come out one per `Bytes`, sharing the request's
    /// buffer; a flipped bit, a cut batch and no batches are refused with
    /// their codes.
    #[test]
    fn verify_splits_and_refuses() {
        let (a, b) = (batch(2), batch(3));
        let records = Bytes::from([&a[..], &b[..]].concat());
        let verified = VerifiedBatches::verify(&records).expect("valid");
        assert_eq!(verified.iter().collect::<Vec<_>>(), vec![&a, &b]);
        assert_eq!(verified.bytes_len(), records.len());

        let mut corrupt = records.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let error = VerifiedBatches::verify(&Bytes::from(corrupt)).expect_err("bad crc");
        assert_eq!(error.error_code(), ErrorCode::CorruptMessage);
        // The message names the bad batch.
        assert!(
            error
                .to_string()
                .starts_with(&format!("batch at byte {}: ", a.len())),
            "{error}"
        );
        let error = VerifiedBatches::verify(&records.slice(..a.len() + 10)).expect_err("cut");
        assert_eq!(error.error_code(), ErrorCode::CorruptMessage);
        let error = VerifiedBatches::verify(&Bytes::new()).expect_err("empty");
        assert_eq!(error.error_code(), ErrorCode::InvalidRequest);
    }

    /// A batch that is the only reference to its buffer becomes appendable
    /// in place; one sharing a request's buffer is copied.
    #[test]
    fn appendable_without_a_copy_when_unique() {
        let unique = batch(2);
        let at = unique.as_ptr();
        let appendable = VerifiedBatches::into_appendable(unique);
        assert_eq!(appendable.as_ptr(), at, "no copy");

        let records = Bytes::from([&batch(1)[..], &batch(1)[..]].concat());
        let verified = VerifiedBatches::verify(&records).expect("valid");
        let first = verified.into_iter().next().expect("two batches");
        let appendable = VerifiedBatches::into_appendable(first);
        assert_ne!(appendable.as_ptr(), records.as_ptr(), "copied");
        assert_eq!(&appendable[..], &records[..appendable.len()]);
    }

    /// A native producer could store attribute bits the batch format does
    /// not define, and `native_to_kafka` served them to Kafka consumers
    /// (bit 6 is Kafka's delete-horizon flag), in batches the Kafka produce
    /// path itself refuses. Found by the `native_to_kafka` fuzz target
    /// (fuzz/): attributes 0xff39 with a recomputed CRC.
    #[test]
    fn undefined_attribute_bits_are_refused() {
        for bits in [1u16 << 6, 1 << 15, 0xff39] {
            let mut records = batch(1).to_vec();
            let attributes = u16::from_le_bytes([records[24], records[25]]) | bits;
            records[24..26].copy_from_slice(&attributes.to_le_bytes());
            let crc = crc32c::crc32c(&records[BATCH_CRC_START..]);
            records[20..24].copy_from_slice(&crc.to_le_bytes());
            let error = VerifiedBatches::verify(&Bytes::from(records)).expect_err("undefined bits");
            assert_eq!(error.error_code(), ErrorCode::CorruptMessage);
            let message = error.to_string();
            assert!(message.contains("undefined attribute bits"), "{message}");
        }
    }
}
