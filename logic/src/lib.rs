//! Millgate logic tier (placeholder until its issue lands).
