//! Helpers live in the test files.
