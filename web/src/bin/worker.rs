//! The Web Worker that runs the model (`pricer_web::worker`).
fn main() {
    pricer_web::worker::run();
}
