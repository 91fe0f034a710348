//! This crate only hosts the benchmarks of blockdiff: the criterion benches
//! in `benches/` (`cargo bench -p blockdiff-benches`) and the end-to-end
//! script `benches/run.sh`. It has no library API.
#![deny(missing_docs)]
