//! The worker built with threads (`scripts/build-threads.sh`: wasm atomics,
//! relaxed SIMD, `--target web`). Its module is started by the page's
//! script (`conn.rs`), which calls `initThreadPool` and then `runWorker`:
//! the int8 layers' parts and attention heads of one estimate then run on
//! rayon's threads, each a Web Worker sharing this module's memory.
use wasm_bindgen::prelude::*;
pub use wasm_bindgen_rayon::init_thread_pool;

/// Nothing at instantiation: rayon's threads instantiate this module too,
/// and only the first one answers the page.
fn main() {}

/// Starts answering the page, after rayon's pool is up.
#[wasm_bindgen(js_name = runWorker)]
pub fn run_worker() {
    pricer_web::worker::run();
}
