//! The stack's other members: linear models on words and details and simple
//! baselines ([`baselines`]), and the nearest training items in the encoder's
//! embedding space ([`knn`]).

pub mod baselines;
pub mod knn;
mod screen;
