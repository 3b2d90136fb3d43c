//! Comparing outputs with references: relative L2 error and the bars of
//! DEVELOPERS.md (f32 1e-5, bf16 2e-2). Also used by the CLI's tests.
#![allow(dead_code)]

use tessera::Element;

pub fn to_f64<T: Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f32() as f64).collect()
}

/// Relative L2 error ‖out − ref‖/‖ref‖; NaN or Inf anywhere gives +∞.
pub fn rel_l2(out: &[f64], reference: &[f64]) -> f64 {
    rel_l2_to(out, reference, reference)
}

/// ‖out − ref‖/‖scale‖ (‖out − ref‖ when ‖scale‖ is 0); NaN or Inf anywhere in
/// `out` gives +∞.
pub fn rel_l2_to(out: &[f64], reference: &[f64], scale: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "length mismatch");
    assert_eq!(scale.len(), reference.len(), "length mismatch");
    if out.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = out
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let den: f64 = scale.iter().map(|b| b * b).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Elementwise absolute values.
pub fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// The bar for element type T: f32 1e-5, bf16 2e-2.
pub fn bar<T: Element>() -> f64 {
    match T::DTYPE {
        tessera::DType::F32 => 1e-5,
        tessera::DType::BF16 => 2e-2,
    }
}

pub fn assert_close<T: Element>(what: &str, out: &[T], reference: &[f64]) {
    assert_within_bar(what, out, reference, reference, "");
}

/// `out` within the bar of `reference`, the error measured against `scale`
/// (`against` says which, in the message).
fn assert_within_bar<T: Element>(
    what: &str,
    out: &[T],
    reference: &[f64],
    scale: &[f64],
    against: &str,
) {
    let err = rel_l2_to(&to_f64(out), reference, scale);
    let bar = bar::<T>();
    assert!(
        err <= bar,
        "{what} [{}]: relative L2 error {err:e}{against} exceeds {bar:e}",
        T::DTYPE
    );
}

/// [`assert_close`] for outputs that are sums of terms (linear, patch
/// embedding): the error is measured against `magnitude`, the same sum taken over
/// the terms' absolute values (the reference of the absolute inputs), not against
/// the sum itself. Rounding errors scale with the terms, so when they nearly
/// cancel (a 1 × 1 × 1 `x·w + b + r` near 0) even correctly rounded f32
/// arithmetic is far off relative to the tiny result; measured against the
/// terms it is within the bar, while a missing or wrong term is still off by the
/// size of that term. `magnitude` ≥ |reference| elementwise, so this is the usual
/// relative error wherever nothing cancels.
pub fn assert_close_sum<T: Element>(what: &str, out: &[T], reference: &[f64], magnitude: &[f64]) {
    assert_within_bar(
        what,
        out,
        reference,
        magnitude,
        " (against the size of the summed terms)",
    );
}
