//! Millgate load generator (placeholder until its issue lands).
