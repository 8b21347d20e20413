//! The commands other than `serve`: each reads or changes recordings and
//! prints a report.

pub mod export;
pub mod inspect;
pub mod lint;
pub mod probe;
pub mod verify;
