//! The price head's loss: squared error of the point output, pinball loss of each quantile.

use candle_core::Tensor;
use pricer::bert::QUANTILES;

/// Squared error of the point output plus the pinball loss of each quantile output.
pub fn price_loss(out: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let point = out.narrow(1, 0, 1)?.squeeze(1)?;
    let mut loss = (point - y)?.sqr()?.mean_all()?;
    for (i, q) in QUANTILES.iter().enumerate() {
        let d = (y - out.narrow(1, i + 1, 1)?.squeeze(1)?)?;
        let pin = d.affine(*q, 0.0)?.maximum(&d.affine(q - 1.0, 0.0)?)?;
        loss = (loss + pin.mean_all()?)?;
    }
    Ok(loss)
}

/// [`price_loss`] with each example weighted: the weighted mean over the batch.
pub fn weighted_price_loss(out: &Tensor, y: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let point = out.narrow(1, 0, 1)?.squeeze(1)?;
    let mut per = (point - y)?.sqr()?;
    for (i, q) in QUANTILES.iter().enumerate() {
        let d = (y - out.narrow(1, i + 1, 1)?.squeeze(1)?)?;
        per = (per + d.affine(*q, 0.0)?.maximum(&d.affine(q - 1.0, 0.0)?)?)?;
    }
    (per * w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64
}
