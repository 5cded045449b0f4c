//! The same worker built with the `relaxed-simd` feature (index.html asks
//! trunk for it): its int8 products use relaxed SIMD's 8-bit dot product.
//! The page starts it only where the browser validates relaxed SIMD.
fn main() {
    pricer_web::worker::run();
}
