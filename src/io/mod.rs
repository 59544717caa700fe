//! Read and write adapters, one per file.

pub mod ordered;
pub mod progress;
pub mod range;
pub mod slice;

pub use ordered::OrderedWriter;
pub use progress::Progress;
pub use range::RangeReader;
