//! Operand checks of every op front function: one operand of a wrong shape (and
//! for the `_into` forms a wrong `out`) is an `Err` from the front function's own
//! checks, naming that operand as the error shows it (`` `residual` ``), never a
//! panic, never the kernel's internal storage check, never a silent `Ok`. Each
//! wrong shape is either longer than the right one (a kernel would read only its
//! first elements and succeed: only the front check can refuse it) or the same
//! length in another shape (a check of lengths instead of shapes passes it). The
//! right operands are run too, so every refusal is the wrong operand's.
//! Also `DeviceBuffer::reshape`.

use tessera::ops::{self, Activation, Segments};
use tessera::{DeviceBuffer, Element, Error, Kernels};

use super::rng::Rng;
use super::suite::up;

/// `r` is an error of the op's own checks whose message names `tensor` in
/// backticks (and, when given, shows the wrong `shape`).
fn refused<R>(case: &str, r: tessera::Result<R>, tensor: &str, shape: Option<&[usize]>) {
    let e = match r {
        Ok(_) => panic!("{case}: a wrong `{tensor}` was accepted"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(
        !matches!(e, Error::Internal(_)),
        "{case}: refused by the kernel, not by the op's checks: {msg}"
    );
    assert!(
        msg.contains(&format!("`{tensor}`")),
        "{case}: the error does not name `{tensor}`: {msg}"
    );
    if let Some(s) = shape {
        assert!(
            msg.contains(&format!("{s:?}")),
            "{case}: the error does not show the shape {s:?}: {msg}"
        );
    }
}

fn accepted<R>(case: &str, r: tessera::Result<R>) {
    if let Err(e) = r {
        panic!("{case}: the right operands were refused: {e}");
    }
}

/// Every op of `tessera::ops` with one wrong operand at a time.
pub fn check_operand_shapes<T: Element, D: Kernels<T>>(dev: &D, _: &mut Rng) {
    let z = |shape: &[usize]| up::<T, D>(dev, &fill(shape), shape);
    check_linear_operands(dev, &z);
    check_norm_operands(dev, &z);
    check_elementwise_operands(dev, &z);
    check_patch_embed_operands(dev, &z);
    check_attention_operands(dev, &z);
    check_memory_operands(dev, &z);
}

/// Small finite values (the contents do not matter, only the shapes).
fn fill<T: Element>(shape: &[usize]) -> Vec<T> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|i| T::from_f32(((i % 13) as f32 - 6.0) / 8.0))
        .collect()
}

type Make<'a, T, D> = &'a dyn Fn(&[usize]) -> DeviceBuffer<T, D>;

fn check_linear_operands<T: Element, D: Kernels<T>>(_dev: &D, z: Make<'_, T, D>) {
    let (rows, k, n) = (3, 5, 7);
    let (x, w, b, r) = (z(&[rows, k]), z(&[n, k]), z(&[n]), z(&[rows, n]));
    let act = Activation::GeluTanh;
    let into = |x: &DeviceBuffer<T, D>,
                w: &DeviceBuffer<T, D>,
                b: &DeviceBuffer<T, D>,
                r: &DeviceBuffer<T, D>,
                out_shape: &[usize]| {
        let mut out = z(out_shape);
        ops::linear_into(x, w, Some(b), act, Some(r), &mut out)
    };
    accepted("linear_into", into(&x, &w, &b, &r, &[rows, n]));
    accepted("linear", ops::linear(&x, &w, Some(&b), act, Some(&r)));
    refused(
        "linear x",
        into(&z(&[rows, k + 1]), &w, &b, &r, &[rows, n]),
        "x",
        None,
    );
    refused(
        "linear x rank 0",
        into(&z(&[]), &w, &b, &r, &[rows, n]),
        "x",
        None,
    );
    for bad in [&[n, k, 1][..], &[k, n]] {
        refused(
            "linear weight",
            into(&x, &z(bad), &b, &r, &[rows, n]),
            "weight",
            None,
        );
    }
    for bad in [&[n + 1][..], &[1, n]] {
        refused(
            "linear bias",
            into(&x, &w, &z(bad), &r, &[rows, n]),
            "bias",
            Some(bad),
        );
        refused(
            "linear (allocating) bias",
            ops::linear(&x, &w, Some(&z(bad)), act, Some(&r)),
            "bias",
            Some(bad),
        );
    }
    for bad in [&[rows, n + 1][..], &[n, rows], &[rows * n]] {
        refused(
            "linear residual",
            into(&x, &w, &b, &z(bad), &[rows, n]),
            "residual",
            Some(bad),
        );
        refused(
            "linear (allocating) residual",
            ops::linear(&x, &w, Some(&b), act, Some(&z(bad))),
            "residual",
            Some(bad),
        );
    }
    for bad in [&[rows, n + 1][..], &[n, rows]] {
        refused("linear out", into(&x, &w, &b, &r, bad), "out", Some(bad));
    }
}

fn check_norm_operands<T: Element, D: Kernels<T>>(_dev: &D, z: Make<'_, T, D>) {
    let (rows, cols) = (3, 6);
    let (x, w, b) = (z(&[rows, cols]), z(&[cols]), z(&[cols]));
    let ln = |x: &DeviceBuffer<T, D>,
              w: &DeviceBuffer<T, D>,
              b: &DeviceBuffer<T, D>,
              o: &[usize]| { ops::layer_norm_into(x, w, b, 1e-6, &mut z(o)) };
    let rms = |x: &DeviceBuffer<T, D>, w: &DeviceBuffer<T, D>, o: &[usize]| {
        ops::rms_norm_into(x, w, 1e-6, &mut z(o))
    };
    accepted("layer_norm_into", ln(&x, &w, &b, &[rows, cols]));
    accepted("rms_norm_into", rms(&x, &w, &[rows, cols]));
    accepted("layer_norm", ops::layer_norm(&x, &w, &b, 1e-6));
    accepted("rms_norm", ops::rms_norm(&x, &w, 1e-6));
    refused(
        "layer_norm x",
        ln(&z(&[]), &w, &b, &[rows, cols]),
        "x",
        None,
    );
    refused("rms_norm x", rms(&z(&[]), &w, &[rows, cols]), "x", None);
    for bad in [&[cols + 1][..], &[1, cols]] {
        let wrong = z(bad);
        refused(
            "layer_norm weight",
            ln(&x, &wrong, &b, &[rows, cols]),
            "weight",
            Some(bad),
        );
        refused(
            "layer_norm bias",
            ln(&x, &w, &wrong, &[rows, cols]),
            "bias",
            Some(bad),
        );
        refused(
            "rms_norm weight",
            rms(&x, &wrong, &[rows, cols]),
            "weight",
            Some(bad),
        );
        refused(
            "layer_norm (allocating) bias",
            ops::layer_norm(&x, &w, &wrong, 1e-6),
            "bias",
            Some(bad),
        );
        refused(
            "rms_norm (allocating) weight",
            ops::rms_norm(&x, &wrong, 1e-6),
            "weight",
            Some(bad),
        );
    }
    for bad in [&[rows, cols + 1][..], &[cols, rows], &[rows * cols]] {
        refused("layer_norm out", ln(&x, &w, &b, bad), "out", Some(bad));
        refused("rms_norm out", rms(&x, &w, bad), "out", Some(bad));
    }
}

fn check_elementwise_operands<T: Element, D: Kernels<T>>(_dev: &D, z: Make<'_, T, D>) {
    let a = z(&[2, 3]);
    accepted("add_into", ops::add_into(&a, &z(&[2, 3]), &mut z(&[2, 3])));
    accepted("add", ops::add(&a, &z(&[2, 3])));
    accepted("cast_into", ops::cast_into::<T, T, D>(&a, &mut z(&[2, 3])));
    accepted("cast", ops::cast::<T, T, D>(&a));
    // [3, 2] and [6] hold as many elements as `a`: only a check of shapes refuses them.
    for bad in [&[3, 2][..], &[6], &[2, 4]] {
        refused(
            "add b",
            ops::add_into(&a, &z(bad), &mut z(&[2, 3])),
            "b",
            Some(bad),
        );
        refused("add (allocating) b", ops::add(&a, &z(bad)), "b", Some(bad));
        refused(
            "add out",
            ops::add_into(&a, &a, &mut z(bad)),
            "out",
            Some(bad),
        );
        refused(
            "cast out",
            ops::cast_into::<T, T, D>(&a, &mut z(bad)),
            "out",
            Some(bad),
        );
    }
}

fn check_patch_embed_operands<T: Element, D: Kernels<T>>(_dev: &D, z: Make<'_, T, D>) {
    // 2 images, 3 channels, 8 px, patch 4: 4 tokens of width 5.
    let (b, c, img, p, d) = (2, 3, 8, 4, 5);
    let n = (img / p) * (img / p);
    let (px, w, bias, pos) = (z(&[b, c, img, img]), z(&[d, c, p, p]), z(&[d]), z(&[n, d]));
    let run = |px: &DeviceBuffer<T, D>,
               w: &DeviceBuffer<T, D>,
               bias: &DeviceBuffer<T, D>,
               pos: &DeviceBuffer<T, D>,
               out: &[usize]| ops::patch_embed_into(px, w, bias, pos, p, &mut z(out));
    accepted("patch_embed_into", run(&px, &w, &bias, &pos, &[b, n, d]));
    accepted("patch_embed", ops::patch_embed(&px, &w, &bias, &pos, p));
    for bad in [
        &[b, c, img, img + 1][..],
        &[b, c * img, img],
        &[b, c, p - 1, p - 1],
    ] {
        refused(
            "patch_embed pixels",
            run(&z(bad), &w, &bias, &pos, &[b, n, d]),
            "pixels",
            Some(bad),
        );
    }
    for bad in [&[d, c, p, p + 1][..], &[d, c + 1, p, p], &[c * p * p, d]] {
        refused(
            "patch_embed weight",
            run(&px, &z(bad), &bias, &pos, &[b, n, d]),
            "weight",
            Some(bad),
        );
    }
    for bad in [&[d + 1][..], &[1, d]] {
        refused(
            "patch_embed bias",
            run(&px, &w, &z(bad), &pos, &[b, n, d]),
            "bias",
            Some(bad),
        );
        refused(
            "patch_embed (allocating) bias",
            ops::patch_embed(&px, &w, &z(bad), &pos, p),
            "bias",
            Some(bad),
        );
    }
    for bad in [&[n + 1, d][..], &[d, n], &[1, n, d]] {
        refused(
            "patch_embed position",
            run(&px, &w, &bias, &z(bad), &[b, n, d]),
            "position",
            Some(bad),
        );
        refused(
            "patch_embed (allocating) position",
            ops::patch_embed(&px, &w, &bias, &z(bad), p),
            "position",
            Some(bad),
        );
    }
    for bad in [&[b, n, d + 1][..], &[b, d, n], &[b * n, d]] {
        refused(
            "patch_embed out",
            run(&px, &w, &bias, &pos, bad),
            "out",
            Some(bad),
        );
    }
}

fn check_attention_operands<T: Element, D: Kernels<T>>(_dev: &D, z: Make<'_, T, D>) {
    let (b, h, hd, nq, nk) = (2, 2, 4, 3, 5);
    let w = h * hd;
    let (q, k, v) = (z(&[b, nq, w]), z(&[b, nk, w]), z(&[b, nk, w]));
    let att = |q: &DeviceBuffer<T, D>,
               k: &DeviceBuffer<T, D>,
               v: &DeviceBuffer<T, D>,
               out: &[usize]| { ops::attention_into(q, k, v, h, &mut z(out)) };
    accepted("attention_into", att(&q, &k, &v, &[b, nq, w]));
    accepted(
        "attention (broadcast q)",
        att(&z(&[1, nq, w]), &k, &v, &[b, nq, w]),
    );
    accepted("attention", ops::attention(&q, &k, &v, h));
    for bad in [&[b, nq, w + 1][..], &[b + 1, nq, w], &[nq, w], &[b, w, nq]] {
        refused(
            "attention q",
            att(&z(bad), &k, &v, &[b, nq, w]),
            "q",
            Some(bad),
        );
        refused(
            "attention (allocating) q",
            ops::attention(&z(bad), &k, &v, h),
            "q",
            Some(bad),
        );
    }
    for bad in [&[b, nk, w + 1][..], &[b, nk, w, 1]] {
        refused(
            "attention k",
            att(&q, &z(bad), &v, &[b, nq, w]),
            "k",
            Some(bad),
        );
    }
    for bad in [
        &[b, nk + 1, w][..],
        &[b, nk, w + 1],
        &[b + 1, nk, w],
        &[b, w, nk],
    ] {
        refused(
            "attention v",
            att(&q, &k, &z(bad), &[b, nq, w]),
            "v",
            Some(bad),
        );
        refused(
            "attention (allocating) v",
            ops::attention(&q, &k, &z(bad), h),
            "v",
            Some(bad),
        );
    }
    for bad in [&[b, nq + 1, w][..], &[b, w, nq], &[b * nq, w]] {
        refused("attention out", att(&q, &k, &v, bad), "out", Some(bad));
    }
    refused(
        "attention heads",
        ops::attention_into(&q, &k, &v, 3, &mut z(&[b, nq, w])),
        "q",
        None,
    );

    // Fused projections.
    let qkv = z(&[b, nq, 3 * w]);
    accepted(
        "attention_qkv_into",
        ops::attention_qkv_into(&qkv, h, &mut z(&[b, nq, w])),
    );
    accepted("attention_qkv", ops::attention_qkv(&qkv, h));
    for bad in [
        &[b, nq, 3 * w + 1][..],
        &[b * nq, 3 * w],
        &[b, nq, 3 * w, 1],
    ] {
        refused(
            "attention_qkv qkv",
            ops::attention_qkv_into(&z(bad), h, &mut z(&[b, nq, w])),
            "qkv",
            Some(bad),
        );
        refused(
            "attention_qkv (allocating) qkv",
            ops::attention_qkv(&z(bad), h),
            "qkv",
            Some(bad),
        );
    }
    for bad in [&[b, nq, w + 1][..], &[b, nq, 3 * w], &[b * nq, w]] {
        refused(
            "attention_qkv out",
            ops::attention_qkv_into(&qkv, h, &mut z(bad)),
            "out",
            Some(bad),
        );
    }
    let kv = z(&[b, nk, 2 * w]);
    accepted(
        "attention_q_kv_into",
        ops::attention_q_kv_into(&q, &kv, h, &mut z(&[b, nq, w])),
    );
    accepted(
        "attention_q_kv",
        ops::attention_q_kv(&z(&[1, nq, w]), &kv, h),
    );
    for bad in [
        &[b, nk, 2 * w + 1][..],
        &[b * nk, 2 * w],
        &[b, nk, 2 * w + 2],
    ] {
        refused(
            "attention_q_kv kv",
            ops::attention_q_kv_into(&q, &z(bad), h, &mut z(&[b, nq, w])),
            "kv",
            Some(bad),
        );
        refused(
            "attention_q_kv (allocating) kv",
            ops::attention_q_kv(&q, &z(bad), h),
            "kv",
            Some(bad),
        );
    }
    for bad in [&[b, nq, w + 1][..], &[b + 1, nq, w]] {
        refused(
            "attention_q_kv q",
            ops::attention_q_kv_into(&z(bad), &kv, h, &mut z(&[b, nq, w])),
            "q",
            Some(bad),
        );
    }
    for bad in [&[b, nq + 1, w][..], &[1, nq, w], &[b, nq, 2 * w]] {
        refused(
            "attention_q_kv out",
            ops::attention_q_kv_into(&q, &kv, h, &mut z(bad)),
            "out",
            Some(bad),
        );
    }

    // Packed batches: 3 sequences of 2, 4 and 1 rows.
    let seg = Segments::from_lengths(&[2, 4, 1]).unwrap();
    let (t, nb) = (seg.total(), seg.count());
    let packed = |qkv: &DeviceBuffer<T, D>, out: &[usize]| {
        ops::attention_qkv_packed_into(qkv, &seg, h, &mut z(out))
    };
    accepted(
        "attention_qkv_packed_into",
        packed(&z(&[t, 3 * w]), &[t, w]),
    );
    accepted(
        "attention_qkv_packed_into [1, T, ..]",
        packed(&z(&[1, t, 3 * w]), &[1, t, w]),
    );
    for bad in [
        &[t + 1, 3 * w][..],
        &[t - 1, 3 * w],
        &[t, 3 * w + 1],
        &[3 * w * t],
    ] {
        refused(
            "attention_qkv_packed qkv",
            packed(&z(bad), &[t, w]),
            "qkv",
            Some(bad),
        );
    }
    for bad in [&[t + 1, w][..], &[t, w + 1], &[w, t], &[1, t, w]] {
        refused(
            "attention_qkv_packed out",
            packed(&z(&[t, 3 * w]), bad),
            "out",
            Some(bad),
        );
    }
    let pkv = z(&[t, 2 * w]);
    let q_kv = |q: &DeviceBuffer<T, D>, kv: &DeviceBuffer<T, D>, out: &[usize]| {
        ops::attention_q_kv_packed_into(q, kv, &seg, h, &mut z(out))
    };
    accepted(
        "attention_q_kv_packed_into",
        q_kv(&z(&[nb, nq, w]), &pkv, &[nb, nq, w]),
    );
    accepted(
        "attention_q_kv_packed_into (broadcast q)",
        q_kv(&z(&[1, nq, w]), &pkv, &[nb, nq, w]),
    );
    for bad in [
        &[t + 1, 2 * w][..],
        &[t - 1, 2 * w],
        &[t, 2 * w + 1],
        &[2 * w * t],
    ] {
        refused(
            "attention_q_kv_packed kv",
            q_kv(&z(&[nb, nq, w]), &z(bad), &[nb, nq, w]),
            "kv",
            Some(bad),
        );
    }
    for bad in [&[nb + 1, nq, w][..], &[nb, nq, w + 1], &[nb * nq, w]] {
        refused(
            "attention_q_kv_packed q",
            q_kv(&z(bad), &pkv, &[nb, nq, w]),
            "q",
            Some(bad),
        );
    }
    for bad in [&[nb, nq + 1, w][..], &[1, nq, w], &[nb * nq, w]] {
        refused(
            "attention_q_kv_packed out",
            q_kv(&z(&[nb, nq, w]), &pkv, bad),
            "out",
            Some(bad),
        );
    }
}

fn check_memory_operands<T: Element, D: Kernels<T>>(dev: &D, z: Make<'_, T, D>) {
    let (b, n, e, m, d) = (2, 3, 4, 2, 7);
    let (h, bank, rw, rb) = (z(&[b, n, d]), z(&[b, e, m, d]), z(&[e, d]), z(&[e]));
    let gate32 = |shape: &[usize]| DeviceBuffer::<f32, D>::full(dev, shape, 0.25).unwrap();
    let read = |h: &DeviceBuffer<T, D>,
                bank: &DeviceBuffer<T, D>,
                rw: &DeviceBuffer<T, D>,
                rb: &DeviceBuffer<T, D>,
                joint: &[usize],
                gate: &[usize]| {
        ops::memory_read_into(h, bank, rw, rb, &mut z(joint), &mut gate32(gate))
    };
    let (js, gs) = (&[b, m + n, d][..], &[b, e][..]);
    accepted("memory_read_into", read(&h, &bank, &rw, &rb, js, gs));
    accepted("memory_read", ops::memory_read(&h, &bank, &rw, &rb));
    for bad in [&[b, n, d + 1][..], &[b + 1, n, d], &[b * n, d]] {
        refused(
            "memory_read h",
            read(&z(bad), &bank, &rw, &rb, js, gs),
            "h",
            Some(bad),
        );
    }
    for bad in [&[b, e, m * d][..], &[b, 0, m, d]] {
        refused(
            "memory_read bank",
            read(&h, &z(bad), &rw, &rb, js, gs),
            "bank",
            Some(bad),
        );
    }
    for bad in [&[e, d + 1][..], &[d, e], &[e * d], &[e + 1, d]] {
        refused(
            "memory_read router.weight",
            read(&h, &bank, &z(bad), &rb, js, gs),
            "router.weight",
            Some(bad),
        );
        refused(
            "memory_read (allocating) router.weight",
            ops::memory_read(&h, &bank, &z(bad), &rb),
            "router.weight",
            Some(bad),
        );
    }
    for bad in [&[e + 1][..], &[1, e], &[e, 1]] {
        refused(
            "memory_read router.bias",
            read(&h, &bank, &rw, &z(bad), js, gs),
            "router.bias",
            Some(bad),
        );
        refused(
            "memory_read (allocating) router.bias",
            ops::memory_read(&h, &bank, &rw, &z(bad)),
            "router.bias",
            Some(bad),
        );
    }
    // `joint` and `gate` are the op's two outputs, each named.
    for bad in [&[b, m + n + 1, d][..], &[b, d, m + n], &[b * (m + n), d]] {
        refused(
            "memory_read joint",
            read(&h, &bank, &rw, &rb, bad, gs),
            "joint",
            Some(bad),
        );
    }
    for bad in [&[b, e + 1][..], &[e, b], &[b * e]] {
        refused(
            "memory_read gate",
            read(&h, &bank, &rw, &rb, js, bad),
            "gate",
            Some(bad),
        );
    }

    let (o, res) = (z(&[b, m + n, d]), z(&[b, n, d]));
    let write = |bank: &[usize],
                 gate: &[usize],
                 o: &DeviceBuffer<T, D>,
                 res: &DeviceBuffer<T, D>,
                 out: &[usize]| {
        ops::memory_write_into(&mut z(bank), &gate32(gate), o, res, &mut z(out))
    };
    let (bs, os) = (&[b, e, m, d][..], &[b, n, d][..]);
    accepted("memory_write_into", write(bs, gs, &o, &res, os));
    accepted(
        "memory_write",
        ops::memory_write(&mut z(bs), &gate32(gs), &o, &res),
    );
    // A bank of another width D: `residual` (and `o`) no longer fit it.
    for (bad, tensor) in [
        (&[b, e, m * d][..], "bank"),
        (&[b, 0, m, d], "bank"),
        (&[b, e, m, d + 1], "residual"),
    ] {
        refused(
            "memory_write bank",
            write(bad, gs, &o, &res, os),
            tensor,
            None,
        );
    }
    for bad in [&[b, e + 1][..], &[e, b], &[b * e], &[b, e, 1]] {
        refused(
            "memory_write gate",
            write(bs, bad, &o, &res, os),
            "gate",
            Some(bad),
        );
        refused(
            "memory_write (allocating) gate",
            ops::memory_write(&mut z(bs), &gate32(bad), &o, &res),
            "gate",
            Some(bad),
        );
    }
    for bad in [
        &[b, m + n + 1, d][..],
        &[b, d, m + n],
        &[b, m + n, d + 1],
        &[b * (m + n), d],
    ] {
        refused(
            "memory_write o",
            write(bs, gs, &z(bad), &res, os),
            "o",
            Some(bad),
        );
        refused(
            "memory_write (allocating) o",
            ops::memory_write(&mut z(bs), &gate32(gs), &z(bad), &res),
            "o",
            Some(bad),
        );
    }
    for bad in [&[b, n, d + 1][..], &[b + 1, n, d], &[b * n, d]] {
        refused(
            "memory_write residual",
            write(bs, gs, &o, &z(bad), os),
            "residual",
            Some(bad),
        );
    }
    for bad in [&[b, n + 1, d][..], &[b, d, n], &[b * n, d]] {
        refused(
            "memory_write out",
            write(bs, gs, &o, &res, bad),
            "out",
            Some(bad),
        );
    }
}

/// `reshape` keeps the data and the element count, on the device: a reshaped
/// buffer reads back the same bits and works as an op operand at its new shape;
/// a shape of another element count (or one whose count overflows) is an `Err`
/// naming the shape asked for and both counts.
pub fn check_reshape<T: Element, D: Kernels<T>>(dev: &D, rng: &mut Rng) {
    let data: Vec<T> = rng.vec(2 * 3 * 5, 1.0);
    let bits = |v: &[T]| v.iter().map(|x| x.to_f32().to_bits()).collect::<Vec<_>>();
    let buf = up(dev, &data, &[2, 3, 5]);
    let r = buf.reshape(&[5, 6]).unwrap();
    assert_eq!(r.shape(), &[5, 6]);
    assert_eq!(r.len(), 30);
    assert_eq!(
        bits(&r.to_vec().unwrap()),
        bits(&data),
        "reshape [2, 3, 5] → [5, 6]"
    );
    let r = r.reshape(&[1, 30, 1]).unwrap();
    assert_eq!((r.shape(), r.len()), (&[1, 30, 1][..], 30));
    assert_eq!(bits(&r.to_vec().unwrap()), bits(&data));
    // At its new shape in an op: rows of 6.
    let w: Vec<T> = rng.vec(6, 1.0);
    let r = r.reshape(&[5, 6]).unwrap();
    let y = ops::rms_norm(&r, &up(dev, &w, &[6]), 1e-6).unwrap();
    assert_eq!(y.shape(), &[5, 6]);
    let reference = super::reference::ref_rms_norm(
        &super::compare::to_f64(&data),
        &super::compare::to_f64(&w),
        5,
        6,
        1e-6,
    );
    super::compare::assert_close(
        "rms_norm of a reshaped buffer",
        &y.to_vec().unwrap(),
        &reference,
    );
    for bad in [&[5, 5][..], &[31], &[2, 3, 5, 2], &[0, 30]] {
        let e = up(dev, &data, &[2, 3, 5]).reshape(bad).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, Error::Length { .. })
                && msg.contains(&format!("{bad:?}"))
                && msg.contains("30 elements")
                && msg.contains(&format!("({} elements)", bad.iter().product::<usize>())),
            "reshape [2, 3, 5] → {bad:?}: {msg}"
        );
    }
    let e = up(dev, &data, &[2, 3, 5])
        .reshape(&[usize::MAX, 2])
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!("{:?}", [usize::MAX, 2])),
        "{e}"
    );
    // Empty buffers reshape between empty shapes only.
    let empty = DeviceBuffer::<T, D>::zeros(dev, &[0, 4]).unwrap();
    let empty = empty.reshape(&[4, 0, 7]).unwrap();
    assert_eq!((empty.shape(), empty.len()), (&[4, 0, 7][..], 0));
    assert!(empty.reshape(&[1]).is_err());
}
