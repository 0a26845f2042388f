//! Cpu reference ops (relpos family).
