//! The **publish** stage: a verified revision's routes and clusters written where RWProxy
//! reads them, atomically ([`crate::publish`]).

pub use crate::publish::{CURRENT, PublishError, Published, publish};
