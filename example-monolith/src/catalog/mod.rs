//! Catalog: products, categories and product search. Search reaches into the
//! inventory table for its "in stock only" filter (a tangle, see TANGLES.md).

pub mod contract;
pub mod http;
pub mod repo;
pub mod search;
