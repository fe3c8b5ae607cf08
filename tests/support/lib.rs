//! Helpers shared by the end-to-end tests: finding the built binaries, free ports, waiting on health.
