//! Dialogue understanding (DUE).
