//! Comparing outputs with references: relative L2 error and the bars of
//! DEVELOPERS.md (f32 1e-5, bf16 2e-2). Also used by the CLI's tests.
#![allow(dead_code)]

use tessera::Element;

pub fn to_f64<T: Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f32() as f64).collect()
}

/// Relative L2 error ‖out − ref‖/‖ref‖; NaN or Inf anywhere gives +∞.
pub fn rel_l2(out: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "length mismatch");
    if out.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = out
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let den: f64 = reference.iter().map(|b| b * b).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// The bar for element type T: f32 1e-5, bf16 2e-2.
pub fn bar<T: Element>() -> f64 {
    match T::DTYPE {
        tessera::DType::F32 => 1e-5,
        tessera::DType::BF16 => 2e-2,
    }
}

pub fn assert_close<T: Element>(what: &str, out: &[T], reference: &[f64]) {
    let err = rel_l2(&to_f64(out), reference);
    let bar = bar::<T>();
    assert!(
        err <= bar,
        "{what} [{}]: relative L2 error {err:e} exceeds {bar:e}",
        T::DTYPE
    );
}
