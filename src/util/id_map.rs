//! Maps keyed by ids wharf makes itself (correlation ids, subjects), with a
//! hasher cheaper than std's SipHash: a request/reply round trip looked up
//! such keys several times, and hashing them with SipHash cost about as
//! much as the rest of the client's bookkeeping. The keys come from this
//! process (or from replies addressed to it), so the flooding resistance
//! SipHash buys is not needed here.
//!
//! The hasher is foldhash's fast one with its fixed seed (foldhash is
//! already built for `hashbrown`, under `metrics-exporter-prometheus`):
//! inserting, finding and removing 64 correlation ids, as the client's
//! inbox does for 64 requests, took half the time it took with SipHash or
//! with the hasher written here before it (`IdHasher`, eight bytes a step).

use std::collections::HashMap;

/// A map from an id to `V`.
pub(crate) type IdMap<V> = HashMap<String, V, foldhash::fast::FixedState>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn ids_that_differ_in_one_character_spread_out() {
        let build = foldhash::fast::FixedState::default();
        let hashes: std::collections::HashSet<u64> = (0..10_000)
            .map(|n| build.hash_one(format!("2f29-18ea3938e9d3cce7-{n}")))
            .collect();
        assert_eq!(hashes.len(), 10_000, "no collisions among sequential ids");
        let others: std::collections::HashSet<u64> = (0..200_000u64)
            .map(|n| build.hash_one(format!("{:x}-{n}", n % 977)))
            .collect();
        assert_eq!(others.len(), 200_000, "no collisions among ids of every length");
        // The low bits pick the bucket, the top seven the control byte.
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0x3ff).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 1000, "low bits spread: {}", low.len());
        assert_eq!(top.len(), 128, "top bits spread");
    }

    #[test]
    fn a_map_of_ids_finds_what_it_holds() {
        let mut map: IdMap<u32> = IdMap::default();
        for n in 0..1000 {
            map.insert(format!("id-{n}"), n);
        }
        assert!((0..1000).all(|n| map.get(&format!("id-{n}")) == Some(&n)));
        assert_eq!(map.get("id-1000"), None);
        assert_eq!(map.get(""), None);
    }
}
