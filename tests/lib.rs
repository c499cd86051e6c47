//! e2e tests live in tests/
