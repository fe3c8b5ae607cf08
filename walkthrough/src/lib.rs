//! The pieces of `ficus walkthrough`, the step-by-step extraction of the catalog from
//! the example shop. So far: [`load`], the background shoppers whose requests must all
//! succeed while the migration goes on around them.

pub mod load;
