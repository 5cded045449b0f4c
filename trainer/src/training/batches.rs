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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_item_once_and_are_reproducible() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 150 + 5).collect();
        let a = bucketed_batches(&lengths, 16, 1, 0);
        let b = bucketed_batches(&lengths, 16, 1, 0);
        assert_eq!(a, b);
        assert_ne!(a, bucketed_batches(&lengths, 16, 1, 1));
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        // Bucketing: padding inside a batch is small compared with random batches.
        let waste = |bs: &[Vec<usize>]| -> usize {
            bs.iter()
                .map(|b| {
                    let m = b.iter().map(|&i| lengths[i]).max().unwrap();
                    b.iter().map(|&i| m - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        let random: Vec<Vec<usize>> = (0..1000).collect::<Vec<_>>().chunks(16).map(|c| c.to_vec()).collect();
        assert!(waste(&a) * 5 < waste(&random), "{} vs {}", waste(&a), waste(&random));
    }
}
