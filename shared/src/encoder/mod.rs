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

static STOP_CHECK: std::sync::OnceLock<fn() -> bool> = std::sync::OnceLock::new();

/// Lets a front end end encoder passes whose result is no longer wanted:
/// `check` is asked between layers, and a pass it answers `true` for ends
/// with an error at once (the page's reasons worker, whose passes for a
/// replaced estimate would compete with the new estimate for the cores).
/// Set once per process; returns false if a check was already set.
pub fn stop_passes_when(check: fn() -> bool) -> bool {
    STOP_CHECK.set(check).is_ok()
}

/// Ends the pass under way if the front end's check says so.
fn check_stop() -> candle_core::Result<()> {
    match STOP_CHECK.get() {
        Some(check) if check() => candle_core::bail!("stopped between layers: the result is no longer wanted"),
        _ => Ok(()),
    }
}

/// How many threads the int8 layers' parts and attention heads run on:
/// rayon's pool (natively one per core; in the browser's threaded worker,
/// the pool the page started), 1 in the single-thread browser builds.
pub fn compute_threads() -> usize {
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    return rayon::current_num_threads();
    #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
    1
}

/// `f` on each item, the results in the items' order: natively on rayon's
/// pool (work stealing); in the browser's threaded worker, every thread of
/// the pool woken at once ([`rayon::broadcast`]) and taking the next item
/// until none is left, since there a sleeping thread wakes slowly and a
/// split job would wake them one after the other (a layer has three such
/// passes); on a pool of one, on the calling thread (a broadcast would
/// only add a wake each way); in the single-thread builds, one after the
/// other. Each result is computed alike whichever thread computes it.
pub(crate) fn on_threads<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        items.into_par_iter().map(f).collect()
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
    {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicUsize, Ordering};
        if items.len() < 2 || rayon::current_num_threads() < 2 {
            return items.into_iter().map(f).collect();
        }
        let slots: Vec<Mutex<(Option<T>, Option<R>)>> =
            items.into_iter().map(|t| Mutex::new((Some(t), None))).collect();
        let next = AtomicUsize::new(0);
        rayon::broadcast(|_| {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = slots.get(i) else { break };
                let item = slot.lock().map(|mut s| s.0.take()).ok().flatten();
                if let Some(item) = item {
                    let r = f(item);
                    if let Ok(mut s) = slot.lock() {
                        s.1 = Some(r);
                    }
                }
            }
        });
        slots.into_iter().filter_map(|s| s.into_inner().ok().and_then(|s| s.1)).collect()
    }
    #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
    items.into_iter().map(f).collect()
}
