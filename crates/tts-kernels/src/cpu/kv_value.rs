//! The element of a KV cache on the Cpu backend: f32 (`cpu`, the parity reference) or bf16
//! (`cpu-bf16`, as the Cuda/Emu caches are). Keys and values are rounded to the element once, when
//! [`super::rope_kv_write`] writes them, and widened exactly when the attention reads them; the
//! arithmetic stays f32.
use half::bf16;

/// A KV-cache element: how an f32 is stored ([`KvValue::narrow`]) and read back ([`KvValue::widen`]).
pub trait KvValue: Copy + Send + Sync + 'static {
    /// Whether the element is bf16 (else f32): the SIMD loads widen by it.
    const BF16: bool;
    /// The stored form of `v` (for bf16: round to nearest even, as the Cuda kernels' `__float2bfloat16`).
    fn narrow(v: f32) -> Self;
    /// The stored value as f32 (exact).
    fn widen(self) -> f32;
}

impl KvValue for f32 {
    const BF16: bool = false;
    #[inline(always)]
    fn narrow(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl KvValue for bf16 {
    const BF16: bool = true;
    #[inline(always)]
    fn narrow(v: f32) -> bf16 {
        bf16::from_f32(v)
    }
    /// The bits moved up by 16 (a shift the vectoriser turns into a widening load and a lane shift).
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_widens_as_half_does_and_narrows_to_nearest_even() {
        let seed = crate::testing::fresh_seed();
        let xs = crate::testing::random_f32(seed, 4096, 3.0);
        for &x in xs.iter().chain(&[0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -3.4e38]) {
            let b = <bf16 as KvValue>::narrow(x);
            assert_eq!(b.to_bits(), bf16::from_f32(x).to_bits(), "seed {seed}: narrow({x})");
            assert_eq!(b.widen().to_bits(), b.to_f32().to_bits(), "seed {seed}: widen({x})");
        }
        assert!(<bf16 as KvValue>::narrow(f32::NAN).widen().is_nan());
        // ties to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7
        assert_eq!(<bf16 as KvValue>::narrow(1.0 + 1.0 / 256.0).widen(), 1.0);
        assert_eq!(<bf16 as KvValue>::narrow(1.0 + 3.0 / 256.0).widen(), 1.0 + 4.0 / 256.0);
    }
}
