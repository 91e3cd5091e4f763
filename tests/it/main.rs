//! lookd's integration tests: one binary.
