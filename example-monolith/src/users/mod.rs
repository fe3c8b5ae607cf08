//! Users: accounts, passwords and login sessions, and the request guards every
//! other capability uses to know who is calling ([`auth::CurrentUser`], [`auth::Admin`]).

pub mod auth;
pub mod http;
pub mod password;
pub mod repo;
