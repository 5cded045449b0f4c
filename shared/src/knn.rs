//! Comparable products: the training items nearest to a product in the
//! encoder's embedding space, and the price they suggest (the course's week 8
//! idea, as a member of the stack).

use crate::Error;
use crate::model_file::{ModelFile, ModelWriter};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// Metadata keys and tensor names of the neighbour index.
pub mod keys {
    pub const K: &str = "pricer.knn.k";
    pub const TEMPERATURE: &str = "pricer.knn.temperature";
    pub const VECTORS: &str = "knn.vectors";
    pub const LOG_PRICES: &str = "knn.log_prices";
}

/// Unit-length embeddings of training items with their log(1 + price).
#[derive(Debug, Clone)]
pub struct Knn {
    /// `n x dim`, row-major, each row of unit length.
    vectors: Vec<f32>,
    log_prices: Vec<f32>,
    dim: usize,
    /// Neighbours that vote.
    pub k: usize,
    /// Softmax temperature over cosine similarities: small values trust the
    /// closest neighbours most.
    pub temperature: f32,
}

/// One neighbour: its row in the index and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub index: usize,
    pub similarity: f32,
}

/// `v` scaled to unit length (a zero vector stays zero).
pub fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 { v.iter().map(|x| x / norm).collect() } else { v.to_vec() }
}

impl Knn {
    /// An index of `vectors` (`log_prices.len()` rows of `dim`), normalised here.
    pub fn new(vectors: &[f32], log_prices: Vec<f32>, dim: usize, k: usize, temperature: f32) -> Result<Self, Error> {
        if dim == 0 || vectors.len() != log_prices.len() * dim {
            return Err(Error::Model(format!(
                "{} values are not {} vectors of {dim}",
                vectors.len(),
                log_prices.len()
            )));
        }
        if k == 0 || log_prices.is_empty() || temperature <= 0.0 || temperature.is_nan() {
            return Err(Error::Model(format!(
                "a neighbour index needs items, k >= 1 and a positive temperature (k {k}, temperature {temperature})"
            )));
        }
        let vectors = vectors.chunks(dim).flat_map(normalized).collect();
        Ok(Self { vectors, log_prices, dim, k, temperature })
    }

    pub fn len(&self) -> usize {
        self.log_prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log_prices.is_empty()
    }

    pub fn log_price(&self, index: usize) -> f32 {
        self.log_prices[index]
    }

    /// The `k` items most similar to `query` (any length; it is normalised),
    /// most similar first.
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<Neighbour> {
        let q = normalized(query);
        let mut best: Vec<Neighbour> = Vec::with_capacity(k + 1);
        for (index, row) in self.vectors.chunks_exact(self.dim).enumerate() {
            let similarity: f32 = row.iter().zip(&q).map(|(a, b)| a * b).sum();
            if best.len() < k || similarity > best[best.len() - 1].similarity {
                let at = best.partition_point(|n| n.similarity >= similarity);
                best.insert(at, Neighbour { index, similarity });
                best.truncate(k);
            }
        }
        best
    }

    /// The neighbours' log prices, weighted by a softmax of their similarity.
    pub fn log_estimate(&self, query: &[f32]) -> f64 {
        let near = self.nearest(query, self.k);
        let top = near.first().map(|n| n.similarity).unwrap_or(0.0);
        let (mut sum, mut total) = (0.0f64, 0.0f64);
        for n in &near {
            let w = (((n.similarity - top) / self.temperature) as f64).exp();
            sum += w * self.log_prices[n.index] as f64;
            total += w;
        }
        sum / total.max(f64::MIN_POSITIVE)
    }

    /// Stores the index: vectors as Q4_0 when their width splits into blocks
    /// (an eighth of f32's size: the validation metrics of the neighbour
    /// member matched Q8_0's and f32's to the cent, docs/benchmarks.md), else f16.
    pub fn write(&self, w: &mut ModelWriter) -> Result<(), Error> {
        let t = Tensor::from_slice(&self.vectors, (self.len(), self.dim), &Device::Cpu)?;
        let dtype =
            if self.dim.is_multiple_of(GgmlDType::Q4_0.block_size()) { GgmlDType::Q4_0 } else { GgmlDType::F16 };
        w.add_tensor(keys::VECTORS, QTensor::quantize(&t, dtype)?);
        w.add_f32(keys::LOG_PRICES, &self.log_prices)?;
        w.set_u32(keys::K, self.k as u32).set_f64(keys::TEMPERATURE, self.temperature as f64);
        Ok(())
    }

    pub fn read(f: &ModelFile) -> Result<Self, Error> {
        let t = f.tensor(keys::VECTORS)?;
        let dims = t.shape().dims().to_vec();
        let [n, dim] = dims[..] else {
            return Err(Error::ModelFile(format!("{} has shape {dims:?}, not [items, width]", keys::VECTORS)));
        };
        let log_prices = f.tensor_f32(keys::LOG_PRICES)?;
        if log_prices.len() != n {
            return Err(Error::ModelFile(format!(
                "{} vectors but {} prices in the neighbour index",
                n,
                log_prices.len()
            )));
        }
        let vectors = f.tensor_f32(keys::VECTORS)?;
        let k = f.u32(keys::K)? as usize;
        let temperature = f.f64(keys::TEMPERATURE)? as f32;
        Knn::new(&vectors, log_prices, dim, k, temperature).map_err(|e| Error::ModelFile(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Knn {
        // Four items on the unit circle (scaled, to check normalisation).
        let v = [2.0, 0.0, 0.0, 3.0, -1.0, 0.0, 0.7, 0.7];
        Knn::new(&v, vec![1.0, 2.0, 3.0, 4.0], 2, 2, 0.1).unwrap()
    }

    #[test]
    fn nearest_are_ranked_by_cosine() {
        let knn = index();
        let near = knn.nearest(&[1.0, 0.1], 3);
        assert_eq!(near.iter().map(|n| n.index).collect::<Vec<_>>(), vec![0, 3, 1]);
        assert!((near[0].similarity - 1.0 / 1.01f32.sqrt()).abs() < 1e-6);
        assert_eq!(knn.nearest(&[1.0, 0.0], 10).len(), 4);
    }

    #[test]
    fn estimate_is_a_similarity_weighted_mean_of_the_k_nearest() {
        let knn = index();
        // Query along item 3 (0.7, 0.7): its neighbours 3 (cos 1) and 0 (cos 0.707).
        let got = knn.log_estimate(&[1.0, 1.0]);
        let w0 = ((0.5f64.sqrt() - 1.0) / 0.1).exp();
        let want = (4.0 + w0 * 1.0) / (1.0 + w0);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // A very low temperature gives the nearest item's price.
        let sharp = Knn { temperature: 1e-4, ..index() };
        assert!((sharp.log_estimate(&[1.0, 1.0]) - 4.0).abs() < 1e-6);
    }

    #[test]
    fn bad_shapes_and_settings_are_refused() {
        assert!(Knn::new(&[1.0, 2.0, 3.0], vec![1.0, 2.0], 2, 1, 0.1).is_err());
        assert!(Knn::new(&[1.0, 2.0], vec![1.0], 2, 0, 0.1).is_err());
        assert!(Knn::new(&[1.0, 2.0], vec![1.0], 2, 1, 0.0).is_err());
        assert!(Knn::new(&[], vec![], 2, 1, 0.1).is_err());
    }

    #[test]
    fn round_trip_through_a_model_file() {
        let dim = 64;
        let vectors: Vec<f32> = (0..10 * dim).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let knn = Knn::new(&vectors, (0..10).map(|i| i as f32).collect(), dim, 3, 0.05).unwrap();
        let mut w = ModelWriter::new("test");
        knn.write(&mut w).unwrap();
        let f = ModelFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
        let back = Knn::read(&f).unwrap();
        assert_eq!((back.len(), back.k, back.temperature), (10, 3, 0.05));
        let q = &vectors[2 * dim..3 * dim];
        assert_eq!(back.nearest(q, 1)[0].index, 2);
        assert!((back.log_estimate(q) - knn.log_estimate(q)).abs() < 0.1);
    }
}
