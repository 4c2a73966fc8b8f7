//! The gateway <-> logic link protocol (to be designed with the logic tier).
