//! Cpu reference ops (conv family).
