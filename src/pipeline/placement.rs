//! Which shard owns each vehicle: the least loaded one when the vehicle is first seen, and
//! that one for the rest of the process run.
//!
//! A hash of the vehicle id spreads a fleet only as evenly as chance allows: 500 vehicles on
//! two shards came out 268 against 232, and in a closed loop the busier shard's devices were
//! answered less often while the other thread had time to spare (about 2 % of throughput at
//! 1,000 terminals, benches/RESULTS.md session 11). Counting vehicles per shard keeps the
//! shards within one vehicle of each other. Placement only has to be stable within a run: a
//! shard picks up a vehicle's state from the live view the first time it sees the vehicle.
use std::collections::HashMap;
use std::sync::Mutex;

pub struct Placement {
    inner: Mutex<Inner>,
}

struct Inner {
    shard_of: HashMap<Box<str>, u32>,
    /// Vehicles placed on each shard.
    placed: Vec<u32>,
}

impl Placement {
    pub fn new(shards: usize) -> Self {
        Placement {
            inner: Mutex::new(Inner {
                shard_of: HashMap::new(),
                placed: vec![0; shards.max(1)],
            }),
        }
    }

    /// The shard of `vehicle_key`, placing it on the shard with the fewest vehicles (the
    /// lowest-numbered among equals) the first time. Called when a device authenticates, not
    /// per frame. Counts and remembers every vehicle seen in this run, connected or not: as
    /// many entries as the live view keeps activity clocks for.
    pub fn shard_of(&self, vehicle_key: &str) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&shard) = inner.shard_of.get(vehicle_key) {
            return shard as usize;
        }
        let shard = (0..inner.placed.len())
            .min_by_key(|&s| inner.placed[s])
            .unwrap_or(0);
        inner.placed[shard] += 1;
        inner.shard_of.insert(vehicle_key.into(), shard as u32);
        shard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_vehicles_go_to_the_least_loaded_shard_and_stay_there() {
        let p = Placement::new(3);
        let first: Vec<usize> = (0..7).map(|v| p.shard_of(&format!("VH-{v}"))).collect();
        assert_eq!(first, [0, 1, 2, 0, 1, 2, 0]);
        // A vehicle seen again (its second device, or a reconnect) keeps its shard and counts once.
        assert_eq!(p.shard_of("VH-1"), 1);
        assert_eq!(p.shard_of("VH-6"), 0);
        assert_eq!(p.shard_of("VH-7"), 1);
        let one = Placement::new(1);
        assert_eq!(one.shard_of("a"), 0);
        assert_eq!(one.shard_of("b"), 0);
    }
}
