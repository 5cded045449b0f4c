//! The model file: one self-describing GGUF file per model, any kind.
//!
//! Weights are GGUF tensors; everything else (kind, preparation, tokenizer,
//! target scaling, provenance, test metrics) is metadata under `pricer.*`.
//! A CRC-32 of all tensor data guards against files damaged in transit.

use crate::Error;
use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use std::collections::HashMap;
use std::io::Cursor;

/// Version of the `pricer.*` metadata layout; readers refuse newer files.
pub const FORMAT_VERSION: u32 = 1;

pub mod keys {
    pub const ARCH: &str = "general.architecture";
    pub const NAME: &str = "general.name";
    pub const FORMAT_VERSION: &str = "pricer.format_version";
    pub const KIND: &str = "pricer.kind";
    pub const CRC: &str = "pricer.tensor_crc32";
}

/// A parsed model file: metadata plus tensors, all in memory.
pub struct ModelFile {
    pub metadata: HashMap<String, Value>,
    pub tensors: HashMap<String, std::sync::Arc<QTensor>>,
}

/// Largest model file Pricer opens (the default model is about 31 MB; an
/// adapted one adds the shop's index): a larger file is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// Largest tensor a model file may hold, in elements (4 GiB as f32).
const MAX_TENSOR_ELEMENTS: usize = 1 << 30;

/// Whether every value of a tensor's raw data is finite: f32 and f16 values,
/// and the f16 scale of each Q8_0 and Q4_0 block (their integer parts are
/// always finite); other types are dequantized to check.
fn finite_values(t: &QTensor, data: &[u8]) -> Result<bool, Error> {
    let f16_finite = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 != 0x7c00;
    Ok(match t.dtype() {
        GgmlDType::F32 => data.chunks_exact(4).all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
        GgmlDType::F16 => data.chunks_exact(2).all(f16_finite),
        GgmlDType::Q8_0 => data.chunks_exact(34).all(|b| f16_finite(&b[..2])),
        GgmlDType::Q4_0 => data.chunks_exact(18).all(|b| f16_finite(&b[..2])),
        _ => t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?.iter().all(|x| x.is_finite()),
    })
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::ModelFile(msg.to_string())
}

impl ModelFile {
    /// Parses and checks a model file. Truncated, corrupted, foreign or
    /// too-new files give an error saying which.
    pub fn from_bytes(bytes: &[u8]) -> Result<ModelFile, Error> {
        if bytes.len() < 4 || &bytes[..4] != b"GGUF" {
            return Err(bad("not a GGUF file (it does not start with the GGUF magic bytes)"));
        }
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(bad(format!("{} bytes: larger than any Pricer model ({MAX_FILE_BYTES} at most)", bytes.len())));
        }
        let mut cursor = Cursor::new(bytes);
        let content =
            gguf_file::Content::read(&mut cursor).map_err(|e| bad(format!("damaged or truncated GGUF header: {e}")))?;
        let metadata = content.metadata.clone();
        let version = match metadata.get(keys::FORMAT_VERSION) {
            Some(Value::U32(v)) => *v,
            _ => return Err(bad("a GGUF file, but not a Pricer model (no pricer.format_version)")),
        };
        if version > FORMAT_VERSION {
            return Err(bad(format!(
                "made by a newer Pricer (format {version}; this one reads up to {FORMAT_VERSION})"
            )));
        }
        let mut names: Vec<&String> = content.tensor_infos.keys().collect();
        names.sort();
        // Every tensor's shape possible and its bytes inside the file, checked
        // before any is read. (Shapes whose element count overflows would read
        // a few bytes and then dequantize into an impossible allocation: found
        // by tests/fuzz.rs.)
        let data_bytes = (bytes.len() as u64).saturating_sub(content.tensor_data_offset);
        for name in &names {
            let info = &content.tensor_infos[*name];
            let elements = info.shape.dims().iter().try_fold(1usize, |n, d| n.checked_mul(*d));
            let block = info.ggml_dtype.block_size();
            let Some(n) = elements.filter(|&n| n <= MAX_TENSOR_ELEMENTS && n.is_multiple_of(block)) else {
                return Err(bad(format!("tensor {name}: impossible shape {:?}", info.shape.dims())));
            };
            let size = (n / block) as u64 * info.ggml_dtype.type_size() as u64;
            if size.checked_add(info.offset).is_none_or(|end| end > data_bytes) {
                return Err(bad(format!("tensor {name} lies beyond the end of the file (is it truncated?)")));
            }
        }
        let mut tensors = HashMap::new();
        let mut crc = crc32fast::Hasher::new();
        for name in names {
            let t = content
                .tensor(&mut cursor, name, &Device::Cpu)
                .map_err(|e| bad(format!("tensor {name}: {e} (is the file truncated?)")))?;
            crc.update(&t.data().map_err(|e| bad(format!("tensor {name}: {e}")))?);
            tensors.insert(name.clone(), std::sync::Arc::new(t));
        }
        match metadata.get(keys::CRC) {
            Some(Value::U32(want)) if *want == crc.finalize() => {}
            Some(Value::U32(_)) => return Err(bad("corrupted: tensor data does not match its checksum")),
            _ => return Err(bad("no tensor checksum (pricer.tensor_crc32)")),
        }
        // A checksum computed again over damaged weights still passes: the values are checked too.
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        for name in names {
            let t = &tensors[name];
            let data = t.data().map_err(|e| bad(format!("tensor {name}: {e}")))?;
            if !finite_values(t, &data).map_err(|e| bad(format!("tensor {name}: {e}")))? {
                return Err(bad(format!("tensor {name} holds NaN or infinite values")));
            }
        }
        Ok(ModelFile { metadata, tensors })
    }

    pub fn kind(&self) -> Result<&str, Error> {
        self.str(keys::KIND)
    }

    pub fn get(&self, key: &str) -> Result<&Value, Error> {
        self.metadata.get(key).ok_or_else(|| bad(format!("missing metadata {key}")))
    }

    pub fn str(&self, key: &str) -> Result<&str, Error> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            _ => Err(bad(format!("metadata {key} is not a string"))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn f64(&self, key: &str) -> Result<f64, Error> {
        value_f64(self.get(key)?).ok_or_else(|| bad(format!("metadata {key} is not a number")))
    }

    pub fn u32(&self, key: &str) -> Result<u32, Error> {
        match self.get(key)? {
            Value::U32(v) => Ok(*v),
            _ => Err(bad(format!("metadata {key} is not a u32"))),
        }
    }

    pub fn f32s(&self, key: &str) -> Result<Vec<f32>, Error> {
        match self.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| value_f64(v).map(|x| x as f32))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(format!("metadata {key} holds a non-number"))),
            _ => Err(bad(format!("metadata {key} is not an array"))),
        }
    }

    pub fn strs(&self, key: &str) -> Result<Vec<String>, Error> {
        match self.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(format!("metadata {key} holds a non-string"))),
            _ => Err(bad(format!("metadata {key} is not an array"))),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<&QTensor, Error> {
        self.tensors.get(name).map(|t| t.as_ref()).ok_or_else(|| bad(format!("missing tensor {name}")))
    }

    /// A tensor as f32 values (dequantized), flattened.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, Error> {
        let t = self.tensor(name)?.dequantize(&Device::Cpu)?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Every `pricer.*` metadata entry whose value is a scalar or a string, for display.
    pub fn scalar_metadata(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .metadata
            .iter()
            .filter_map(|(k, v)| {
                let s = match v {
                    Value::String(s) if s.len() < 2000 => s.clone(),
                    Value::Array(_) | Value::String(_) => return None,
                    Value::Bool(b) => b.to_string(),
                    other => value_f64(other)?.to_string(),
                };
                Some((k.clone(), s))
            })
            .collect();
        out.sort();
        out
    }
}

/// A copy of a tensor, in its own format.
pub fn copy_tensor(t: &QTensor) -> Result<QTensor, Error> {
    Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
        t.dtype(),
        &t.data()?,
        t.shape().dims().to_vec(),
        &Device::Cpu,
    )?)
}

fn value_f64(v: &Value) -> Option<f64> {
    Some(match v {
        Value::U8(x) => *x as f64,
        Value::I8(x) => *x as f64,
        Value::U16(x) => *x as f64,
        Value::I16(x) => *x as f64,
        Value::U32(x) => *x as f64,
        Value::I32(x) => *x as f64,
        Value::U64(x) => *x as f64,
        Value::I64(x) => *x as f64,
        Value::F32(x) => *x as f64,
        Value::F64(x) => *x,
        _ => return None,
    })
}

/// Builds a model file: metadata and tensors, then [`ModelWriter::to_bytes`].
pub struct ModelWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, QTensor)>,
}

impl ModelWriter {
    /// A writer for a model of `kind`, with the format's own keys set.
    pub fn new(kind: &str) -> Self {
        let mut w = Self { metadata: vec![], tensors: vec![] };
        w.set(keys::ARCH, Value::String("pricer".into()));
        w.set(keys::FORMAT_VERSION, Value::U32(FORMAT_VERSION));
        w.set(keys::KIND, Value::String(kind.into()));
        w
    }

    /// A writer holding everything `file` holds, to amend and write again
    /// (the checksum is computed afresh).
    pub fn from_file(file: &ModelFile) -> Result<Self, Error> {
        let mut w = ModelWriter::new(file.kind()?);
        for (k, v) in &file.metadata {
            if k != keys::CRC {
                w.set(k, v.clone());
            }
        }
        for (name, t) in &file.tensors {
            w.add_tensor(name, copy_tensor(t)?);
        }
        Ok(w)
    }

    /// Sets (or replaces) one metadata entry.
    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value));
        self
    }

    pub fn set_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.set(key, Value::String(v.to_string()))
    }

    pub fn set_f64(&mut self, key: &str, v: f64) -> &mut Self {
        self.set(key, Value::F64(v))
    }

    pub fn set_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.set(key, Value::U32(v))
    }

    pub fn set_f32s(&mut self, key: &str, v: &[f32]) -> &mut Self {
        self.set(key, Value::Array(v.iter().map(|x| Value::F32(*x)).collect()))
    }

    pub fn set_strs(&mut self, key: &str, v: &[String]) -> &mut Self {
        self.set(key, Value::Array(v.iter().map(|x| Value::String(x.clone())).collect()))
    }

    /// Adds (or replaces) a tensor.
    pub fn add_tensor(&mut self, name: &str, t: QTensor) -> &mut Self {
        self.tensors.retain(|(k, _)| k != name);
        self.tensors.push((name.to_string(), t));
        self
    }

    /// A plain f32 vector as a 1-D tensor.
    pub fn add_f32(&mut self, name: &str, v: &[f32]) -> Result<&mut Self, Error> {
        let t = candle_core::Tensor::from_slice(v, v.len(), &Device::Cpu)?;
        let q = QTensor::quantize(&t, candle_core::quantized::GgmlDType::F32)?;
        Ok(self.add_tensor(name, q))
    }

    /// A plain f32 vector stored as a 1-D f16 tensor (half the size; about
    /// three significant digits).
    pub fn add_f16(&mut self, name: &str, v: &[f32]) -> Result<&mut Self, Error> {
        let t = candle_core::Tensor::from_slice(v, v.len(), &Device::Cpu)?;
        let q = QTensor::quantize(&t, candle_core::quantized::GgmlDType::F16)?;
        Ok(self.add_tensor(name, q))
    }

    /// Serializes to GGUF bytes, adding the tensor checksum.
    pub fn to_bytes(&mut self) -> Result<Vec<u8>, Error> {
        self.tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let mut crc = crc32fast::Hasher::new();
        for (_, t) in &self.tensors {
            crc.update(&t.data()?);
        }
        self.set(keys::CRC, Value::U32(crc.finalize()));
        let meta: Vec<(&str, &Value)> = self.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> = self.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut out = Cursor::new(Vec::new());
        gguf_file::write(&mut out, &meta, &tensors)?;
        Ok(out.into_inner())
    }
}

impl crate::bert::Weights for ModelFile {
    fn get(&self, name: &str, shape: &[usize]) -> candle_core::Result<candle_core::Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("model file: missing tensor {name}")))?;
        if t.shape().dims() != shape {
            candle_core::bail!("model file: tensor {name} has shape {:?}, expected {shape:?}", t.shape().dims());
        }
        t.dequantize(&Device::Cpu)
    }

    fn is_8bit(&self, name: &str) -> bool {
        self.tensors.get(name).is_some_and(|t| t.dtype() == candle_core::quantized::GgmlDType::Q8_0)
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = ModelWriter::new("test");
        w.set_str("pricer.note", "hello").set_f64("pricer.x", 1.5).set_f32s("pricer.v", &[1.0, 2.0]);
        w.add_f32("weights", &(0..100).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
        w.to_bytes().unwrap()
    }

    #[test]
    fn non_finite_tensors_are_refused_by_name_in_every_storage_type() {
        use candle_core::quantized::{GgmlDType, ggml_file::qtensor_from_ggml};
        // A value made NaN or infinite in the stored bytes: an f32 or f16
        // value, or the f16 scale of the second 8- or 4-bit block.
        for (dtype, at, bad) in [
            (GgmlDType::F32, 8, f32::NAN.to_le_bytes().to_vec()),
            (GgmlDType::F32, 8, f32::NEG_INFINITY.to_le_bytes().to_vec()),
            (GgmlDType::F16, 8, 0x7e00u16.to_le_bytes().to_vec()),
            (GgmlDType::Q8_0, 34, 0x7c00u16.to_le_bytes().to_vec()),
            (GgmlDType::Q4_0, 18, 0x7e00u16.to_le_bytes().to_vec()),
        ] {
            let v: Vec<f32> = (0..64).map(|i| i as f32 / 10.0).collect();
            let good =
                QTensor::quantize(&candle_core::Tensor::from_slice(&v, 64, &Device::Cpu).unwrap(), dtype).unwrap();
            let mut raw = good.data().unwrap().to_vec();
            raw[at..at + bad.len()].copy_from_slice(&bad);
            let mut w = ModelWriter::new("test");
            w.add_tensor("fine", good);
            w.add_tensor("layer.weight", qtensor_from_ggml(dtype, &raw, vec![64], &Device::Cpu).unwrap());
            let err = ModelFile::from_bytes(&w.to_bytes().unwrap()).err().expect("refused").to_string();
            assert!(err.contains("tensor layer.weight holds NaN or infinite values"), "{dtype:?}: {err}");
        }
        assert!(ModelFile::from_bytes(&sample()).is_ok());
    }

    #[test]
    fn a_tensor_beyond_the_end_or_a_file_too_large_is_refused_before_reading() {
        let bytes = sample();
        // Cut inside the tensor data, keeping the whole header.
        let err = ModelFile::from_bytes(&bytes[..bytes.len() - 300]).err().unwrap().to_string();
        assert!(err.contains("tensor weights lies beyond the end of the file"), "{err}");
        let mut big = bytes.clone();
        big.resize(MAX_FILE_BYTES as usize + 1, 0);
        let err = ModelFile::from_bytes(&big).err().unwrap().to_string();
        assert!(err.contains("larger than any Pricer model"), "{err}");
    }

    #[test]
    fn round_trip() {
        let f = ModelFile::from_bytes(&sample()).unwrap();
        assert_eq!(f.kind().unwrap(), "test");
        assert_eq!(f.str("pricer.note").unwrap(), "hello");
        assert_eq!(f.f64("pricer.x").unwrap(), 1.5);
        assert_eq!(f.f32s("pricer.v").unwrap(), vec![1.0, 2.0]);
        assert_eq!(f.tensor_f32("weights").unwrap()[99], 99.0);
        assert!(f.str("pricer.nope").unwrap_err().to_string().contains("missing metadata pricer.nope"));
    }

    #[test]
    fn truncated_file_is_refused_at_every_length() {
        let bytes = sample();
        // The last bytes are alignment padding; cut into the tensor data instead.
        for cut in [0, 3, 10, 40, bytes.len() / 2, bytes.len() - 40] {
            let err = ModelFile::from_bytes(&bytes[..cut]).err().expect("must fail");
            assert!(err.to_string().starts_with("model file"), "{cut}: {err}");
        }
    }

    #[test]
    fn flipped_bytes_are_refused() {
        let bytes = sample();
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 200] ^= 0x40; // inside the tensor data
        let err = ModelFile::from_bytes(&bad).err().unwrap().to_string();
        assert!(err.contains("checksum"), "{err}");
        // Garbage in the header: any clear error, never a panic or a huge allocation.
        for i in (4..120).step_by(3) {
            let mut b = bytes.clone();
            b[i] = 0xff;
            let _ = ModelFile::from_bytes(&b);
        }
    }

    #[test]
    fn foreign_and_future_files_are_refused() {
        let err = ModelFile::from_bytes(b"PK\x03\x04 a zip file").err().unwrap().to_string();
        assert!(err.contains("not a GGUF file"), "{err}");
        let mut w = ModelWriter::new("test");
        w.set_u32(keys::FORMAT_VERSION, FORMAT_VERSION + 1);
        let err = ModelFile::from_bytes(&w.to_bytes().unwrap()).err().unwrap().to_string();
        assert!(err.contains("newer Pricer"), "{err}");
        let mut other = Cursor::new(Vec::new());
        gguf_file::write(&mut other, &[("general.architecture", &Value::String("llama".into()))], &[]).unwrap();
        let err = ModelFile::from_bytes(other.get_ref()).err().unwrap().to_string();
        assert!(err.contains("not a Pricer model"), "{err}");
    }
}
