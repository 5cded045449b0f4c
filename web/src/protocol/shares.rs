//! A share of the shop's products embedded by another worker: their member
//! values as the worker that fits the adaptation receives them.

use pricer::estimator::{LogOutputs, MemberValues};
use serde::{Deserialize, Serialize};

/// One product's member values on their way between workers: each float as
/// its bits, so that they arrive exact (JSON has no NaN, and parsing a
/// decimal may round), and the adaptation fitted from them is the one a
/// single worker fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentValues {
    pub values: Vec<u64>,
    pub head: Option<Vec<u64>>,
    pub pooled: Option<Vec<u32>>,
}

/// A product's values, or why it has none (the error's message as it read).
pub type SentResult = Result<SentValues, String>;

impl SentValues {
    pub fn send(r: &Result<MemberValues, pricer::Error>) -> SentResult {
        match r {
            Ok(v) => Ok(SentValues {
                values: v.values.iter().map(|x| x.to_bits()).collect(),
                head: v.head.map(|h| h.iter().map(|x| x.to_bits()).collect()),
                pooled: v.pooled.as_ref().map(|p| p.iter().map(|x| x.to_bits()).collect()),
            }),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn receive(r: SentResult) -> Result<MemberValues, pricer::Error> {
        let v = r.map_err(pricer::Error::Relayed)?;
        let head = match v.head {
            Some(bits) => {
                let n = bits.len();
                let head: LogOutputs =
                    bits.into_iter().map(f64::from_bits).collect::<Vec<_>>().try_into().map_err(|_| {
                        pricer::Error::Relayed(format!("another worker sent {n} head outputs, not the model's"))
                    })?;
                Some(head)
            }
            None => None,
        };
        Ok(MemberValues {
            values: v.values.into_iter().map(f64::from_bits).collect(),
            head,
            pooled: v.pooled.map(|p| p.into_iter().map(f32::from_bits).collect()),
            // Not sent: the receiver scans again for comparables if it wants them.
            nearest: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_values_arrive_bit_for_bit_through_json() {
        let head: LogOutputs = std::array::from_fn(|i| (i as f64 + 0.1).ln_1p() / 3.0);
        let v = MemberValues {
            values: vec![0.1 + 0.2, -0.0, f64::NAN, 1e-310, f64::INFINITY],
            head: Some(head),
            pooled: Some(vec![1.0 / 3.0, -0.0, f32::NAN, 1e-40, f32::MAX]),
            nearest: vec![],
        };
        let sent = vec![SentValues::send(&Ok(v.clone())), SentValues::send(&Err(pricer::Error::EmptyProduct))];
        let text = serde_json::to_string(&sent).unwrap();
        let back: Vec<SentResult> = serde_json::from_str(&text).unwrap();
        let mut back = back.into_iter().map(SentValues::receive);
        let got = back.next().unwrap().unwrap();
        let bits64 = |xs: &[f64]| xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits64(&got.values), bits64(&v.values));
        assert_eq!(bits64(&got.head.unwrap()), bits64(&head));
        let bits32 = |xs: &[f32]| xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits32(&got.pooled.unwrap()), bits32(v.pooled.as_ref().unwrap()));
        // An error keeps its message word for word.
        let e = back.next().unwrap().unwrap_err();
        assert_eq!(e.to_string(), pricer::Error::EmptyProduct.to_string());
        // A head of the wrong size is refused by name.
        let short = SentValues { values: vec![], head: Some(vec![0]), pooled: None };
        let e = SentValues::receive(Ok(short)).unwrap_err().to_string();
        assert!(e.contains("1 head outputs"), "{e}");
    }
}
