//! Data in: a raw record read from a file ([`readers`]) becomes a
//! [`Product`](product::Product), its one prepared model input ([`text`]),
//! and the tokens the encoder reads ([`tokenizer`]).

pub mod product;
pub mod readers;
pub mod text;
pub mod tokenizer;
pub mod wordpiece;
