//! Chains by period and their retention: `NAME-YYYYMM` (monthly),
//! `NAME-YYYYWww` (ISO week) and `NAME-YYYYMMDD` (daily) are separate
//! backup names, each its own chain of generations starting with a full one,
//! and [`PrunePlan`] removes the old ones.
//!
//! Dates are civil dates ([`CivilDate`]) that the caller supplies (the tools
//! use the local date), so nothing here reads a clock or a time zone, except
//! that the age of a chain is the modification time of its `.ver` file.
//!
//! - `calendar`: [`CivilDate`], days since 1970 and ISO weeks.
//! - `period`: [`ChainPeriod`], its keys and chain names, and which
//!   suffixes are a chain's own files.
//! - `chain_set`: [`ChainSet`] lists the [`PeriodChain`]s of a base name.
//! - `retention`: [`PrunePolicy::decide`] decides which chains to keep,
//!   without touching a file.
//! - `prune`: [`PrunePlan`] looks at the locks and deletes the chains
//!   decided.

mod calendar;
mod chain_set;
mod period;
mod prune;
mod retention;
#[cfg(test)]
mod test_support;

pub use calendar::{CivilDate, civil_from_days};
pub use chain_set::{ChainSet, PeriodChain};
pub use period::ChainPeriod;
pub use prune::{ChainDeleter, ChainDeletion, DeletedChain, LocalChains, PrunePlan, PruneReport};
pub use retention::{DeleteReason, KeepReason, PruneAction, PruneDecision, PrunePolicy};
