//! Read and write adapters, one per file.

pub mod progress;
pub mod range;

pub use progress::Progress;
pub use range::RangeReader;
