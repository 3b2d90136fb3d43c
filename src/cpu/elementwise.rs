//! Elementwise ops: add and cast, in parallel chunks.

use rayon::prelude::*;

use super::{take, take_mut, Cpu, STREAM_CHUNK};
use crate::element::Element;
use crate::error::Result;
use crate::ops::{AddArgs, CastArgs};

pub(super) fn add<T: Element>(_: &Cpu, a: AddArgs<'_, T, Cpu>) -> Result<()> {
    const OP: &str = "add";
    let x = take(a.a, a.len, OP, "a")?;
    let y = take(a.b, a.len, OP, "b")?;
    let out = take_mut(a.out, a.len, OP, "out")?;
    out.par_chunks_mut(STREAM_CHUNK)
        .zip(x.par_chunks(STREAM_CHUNK).zip(y.par_chunks(STREAM_CHUNK)))
        .for_each(|(o, (x, y))| {
            for ((o, x), y) in o.iter_mut().zip(x).zip(y) {
                *o = T::from_f32(x.to_f32() + y.to_f32());
            }
        });
    Ok(())
}

/// Any element type to any other through f32: bf16 → f32 is exact, f32 → bf16 rounds
/// to nearest-even, same type to same type copies.
pub(super) fn cast<T: Element, U: Element>(_: &Cpu, a: CastArgs<'_, T, U, Cpu>) -> Result<()> {
    const OP: &str = "cast";
    let x = take(a.x, a.len, OP, "x")?;
    let out = take_mut(a.out, a.len, OP, "out")?;
    out.par_chunks_mut(STREAM_CHUNK)
        .zip(x.par_chunks(STREAM_CHUNK))
        .for_each(|(o, x)| {
            for (o, x) in o.iter_mut().zip(x) {
                *o = U::from_f32(x.to_f32());
            }
        });
    Ok(())
}
