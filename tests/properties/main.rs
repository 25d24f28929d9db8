//! Property tests: arbitrary input to the three places a stranger's bytes
//! reach first (the token verifier, the upgrade query, gRPC validation)
//! never panics, and whatever they accept is within the contract's bounds.
//!
//! `PROPTEST_CASES` raises the case count for a longer local run.

mod query;
mod token;
mod validate;
