//! Millgate benchmarks (placeholder until its issue lands).
