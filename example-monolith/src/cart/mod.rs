//! Cart: what each user is about to buy. It reads product names and prices straight
//! from the catalog's `products` table (a tangle, see TANGLES.md).

pub mod http;
pub mod repo;
