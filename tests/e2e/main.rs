//! End-to-end tests of the workspace, run the way a user runs things.

mod deploy;
mod readme;
mod shop_binary;
mod walkthrough;
