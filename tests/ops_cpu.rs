//! The generic op suite on the CPU backend.
mod common;

op_suite!(Some(tessera::Cpu));

/// Speed sanity check, not a timed test: prints GFLOP/s of a ViT-sized linear
/// (1024×768 · 768→3072, bias + GELU) and of one attention layer. Run with
/// `cargo test --release --test ops_cpu -- --ignored --nocapture`.
#[test]
#[ignore]
fn cpu_speed_report() {
    use tessera::ops::{self, Activation};
    use tessera::{Cpu, DeviceBuffer};

    fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
        f();
        (0..reps)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }
    fn run<T: tessera::Element>(dev: &Cpu, rng: &mut Rng) {
        let (m, k, n) = (1024, 768, 3072);
        let x = DeviceBuffer::from_slice(dev, &rng.vec::<T>(m * k, 1.0), &[m, k]).unwrap();
        let w = DeviceBuffer::from_slice(dev, &rng.vec::<T>(n * k, 0.03), &[n, k]).unwrap();
        let b = DeviceBuffer::from_slice(dev, &rng.vec::<T>(n, 0.1), &[n]).unwrap();
        let mut out = DeviceBuffer::zeros(dev, &[m, n]).unwrap();
        let s = best_of(5, || {
            ops::linear_into(&x, &w, Some(&b), Activation::GeluTanh, None, &mut out).unwrap()
        });
        let gf = 2.0 * (m * k * n) as f64 / s / 1e9;
        let s0 = best_of(5, || {
            ops::linear_into(&x, &w, None, Activation::None, None, &mut out).unwrap()
        });
        println!(
            "linear {m}x{k}->{n} plain [{}]: {:.2} ms, {:.1} GFLOP/s",
            T::DTYPE,
            s0 * 1e3,
            2.0 * (m * k * n) as f64 / s0 / 1e9
        );
        println!(
            "linear {m}x{k}->{n} gelu [{}]: {:.2} ms, {gf:.1} GFLOP/s",
            T::DTYPE,
            s * 1e3
        );

        let (bsz, h, hd, len) = (1, 12, 64, 1024);
        let qkv: Vec<_> = (0..3)
            .map(|_| {
                let v = rng.vec::<T>(bsz * len * h * hd, 1.0);
                DeviceBuffer::from_slice(dev, &v, &[bsz, len, h * hd]).unwrap()
            })
            .collect();
        let mut out = DeviceBuffer::zeros(dev, &[bsz, len, h * hd]).unwrap();
        let s = best_of(5, || {
            ops::attention_into(&qkv[0], &qkv[1], &qkv[2], h, &mut out).unwrap()
        });
        let gf = 4.0 * (bsz * h * len * len * hd) as f64 / s / 1e9;
        println!(
            "attention b={bsz} h={h} hd={hd} n={len} [{}]: {:.2} ms, {gf:.1} GFLOP/s",
            T::DTYPE,
            s * 1e3
        );
    }
    let mut rng = Rng::new("cpu_speed_report");
    println!("{} threads", rayon::current_num_threads());
    run::<f32>(&Cpu, &mut rng);
    run::<bf16>(&Cpu, &mut rng);
}
