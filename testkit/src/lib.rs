//! Ephemeral database servers for tests.
