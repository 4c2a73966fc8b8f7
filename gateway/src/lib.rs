//! Millgate gateway.
