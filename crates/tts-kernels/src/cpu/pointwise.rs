//! Cpu reference ops (pointwise family).
