//! Which examples go together: seeded, length-bucketed batches.

use rand::SeedableRng;
use rand::seq::SliceRandom;

pub use crate::data::splitmix64;

/// Batches of similar length, so short texts do not pay for padding: shuffle,
/// sort within windows of 50 batches by length, cut, then shuffle the batches.
/// The same (seed, epoch) always gives the same batches.
pub fn bucketed_batches(lengths: &[usize], batch: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(splitmix64(seed, epoch + 1));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let window = batch.max(1) * 50;
    let mut batches = Vec::new();
    for chunk in order.chunks(window) {
        let mut c = chunk.to_vec();
        c.sort_by_key(|&i| lengths[i]);
        batches.extend(c.chunks(batch.max(1)).map(|b| b.to_vec()));
    }
    batches.shuffle(&mut rng);
    batches
}
