//! Cpu reference ops (hift family).
