//! The record-key partitioner, identical to the Fluvio client's default
//! (`SiphashRoundRobinPartitioner` for keyed records): SipHash-2-4 with zero keys over the
//! key as `Hash for [u8]` feeds it (its length as a native-endian `usize`, then its bytes),
//! modulo the partition count. Sharing it means a SKU lands in the same partition on the
//! embedded log and on Fluvio. Also the default topic name, which the binary and the
//! operator must agree on.

use std::hash::{Hash, Hasher};

use siphasher::sip::SipHasher;

/// The partition of a record with `key` in a topic of `partitions` partitions.
///
/// `partitions` of 0 is treated as 1 rather than dividing by zero.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let mut hasher = SipHasher::new();
    key.hash(&mut hasher);
    let partitions = u64::from(partitions.max(1));
    // The remainder is below `partitions`, which came from a u32.
    u32::try_from(hasher.finish() % partitions).unwrap_or(0)
}

/// The default topic of a region's stock events (the binary and the operator must agree on
/// it). Dashes, not dots: Fluvio topic names are DNS labels (`[a-z0-9-]`, at most 63
/// characters), and the same name must work on Kafka.
pub fn default_topic(region: &str) -> String {
    format!("stockflow-{region}-stock-events")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_length_prefix_then_bytes_with_siphash24() {
        // The same computation spelled out, as the design notes describe it.
        let key = b"SKU-42";
        let mut manual = SipHasher::new_with_keys(0, 0);
        manual.write(&(key.len() as u64).to_le_bytes());
        manual.write(key);
        assert_eq!(
            partition_for_key(key, 7),
            u32::try_from(manual.finish() % 7).unwrap()
        );
    }

    #[test]
    fn stays_in_range_and_is_stable() {
        for n in 1..20 {
            let p = partition_for_key(b"abc", n);
            assert!(p < n);
            assert_eq!(p, partition_for_key(b"abc", n));
        }
        assert_eq!(partition_for_key(b"abc", 0), 0);
    }
}
