//! The page's entry point (trunk builds it): see `pricer_web::app`.

fn main() {
    pricer_web::app::main();
}
