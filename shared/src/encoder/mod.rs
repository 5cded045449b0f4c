//! The encoder: tokens to a pooled vector and the price head's outputs.
//! [`bert`] is the model (candle's primitive ops, trainable); [`fused`] and
//! [`fused_layer`] are the same computation as CPU ops with their own backward
//! (training speed); [`int8`] runs it from 8-bit files in integers, with the
//! same bits natively and in the browser.

/// A function whose body is compiled twice natively on x86-64: for
/// AVX-512 (taken when [`int8_native::wide`] says so) and for the build's
/// own target. Element-wise passes then run on 16 lanes where the CPU has
/// them. The same IEEE operations in the same order either way (Rust never
/// fuses a multiply and an add unasked, and sums here run in explicit
/// lanes), so the same bits: only the vectors' width differs.
macro_rules! wide_or_not {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$($g:ident: $b:path),*>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            if crate::encoder::int8_native::wide() {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
                fn wide $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
                    body $(::<$($g),*>)? ($($arg),*)
                }
                // SAFETY: `wide()` is true only where these features were detected at run time.
                return unsafe { wide $(::<$($g),*>)? ($($arg),*) };
            }
            body $(::<$($g),*>)? ($($arg),*)
        }
    };
}

pub mod bert;
pub mod fused;
pub mod fused_layer;
pub mod int8;
#[cfg(not(target_arch = "wasm32"))]
pub mod int8_native;
