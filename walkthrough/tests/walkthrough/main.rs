//! The walkthrough's pieces against a real shop on port 0.

mod load;
mod run;
