//! Every random choice of a step derives from (run seed, epoch, batch index) alone, which is what
//! makes a resumed run, and a run with prefetching, identical to an uninterrupted one.

/// A 64-bit mix (SplitMix64's finaliser) of the run seed with an epoch and a batch index.
pub fn step_seed(seed: u64, epoch: u64, batch: u64) -> u64 {
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ batch.wrapping_mul(0xD1B5_4A32_D192_ED03).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The miner's generator of a step: `step_seed ^ MINER_SALT` ("mine").
pub const MINER_SALT: u64 = 0x6D69_6E65;
/// The cross-batch memory's miner's generator of a step: `step_seed ^ MEMORY_SALT` ("xmem").
pub const MEMORY_SALT: u64 = 0x786D_656D;
