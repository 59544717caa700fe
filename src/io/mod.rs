//! Read and write adapters, one per file, and the parallel map that capture, restore and
//! check run through.

pub mod bandwidth;
pub mod coalesce;
pub mod deadline;
pub mod hashing;
pub mod interrupt;
pub mod limited;
pub mod parallel;
pub mod progress;
pub mod range;
pub mod slice;
pub mod timeouts;

pub use coalesce::CoalescingWriter;
pub use deadline::DeadlineSocket;
pub use hashing::HashingReader;
pub use limited::LimitedReader;
pub use progress::Progress;
pub use range::RangeReader;
