//! `ficus walkthrough`: the catalog's extraction from Ficus Shop, step by step, while
//! shoppers keep shopping. [`run`] holds the ten steps and their checks, [`load`] the
//! background shoppers, [`golden`] the recorded catalog answers and their diff.

pub mod golden;
pub mod load;
pub mod run;
