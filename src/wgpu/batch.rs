//! Batched submission. Ops do not submit a command buffer each: they record their
//! compute pass into one shared command encoder, and each op's uniform goes into
//! one pooled uniform buffer at its own aligned offset (a queue write, which wgpu
//! applies before the next submitted command buffer). The encoder is submitted
//!
//! - every [`Batch::ops_per_submit`] ops (`TESSERA_WGPU_OPS_PER_SUBMIT`, default
//!   [`DEFAULT_OPS_PER_SUBMIT`]), or when the uniform pool is full;
//! - before a host write into an existing buffer (`copy_from_host`), so the write
//!   lands after the ops called before it and before those called after;
//! - with a download, whose copy is recorded into the same command buffer;
//! - on [`Device::flush`](crate::Device::flush) (a forward ends with one) and
//!   [`Device::synchronize`](crate::Device::synchronize).
//!
//! On lavapipe the per-op cost went from 78 to 58 µs (median; most of what is
//! left is lavapipe's own dispatch); a real driver's submission costs tens of µs
//! (BENCHMARKS.md, "wgpu submission").
//!
//! Errors: an op's bind group is checked when the op is called, but wgpu reports
//! an invalid pass only when its command buffer is finished, so a batch that
//! fails names every op it held. Its commands did not run, so their outputs are
//! garbage: the device is then marked failed, and every later call on it returns
//! the error. `TESSERA_WGPU_OPS_PER_SUBMIT=1` submits each op on its own, to find
//! the one at fault.

use super::device::{wgpu_err, Wgpu};
use crate::error::{Error, Result};

/// Ops recorded per command buffer unless `TESSERA_WGPU_OPS_PER_SUBMIT` says
/// otherwise: a SigLIP-base layer is ~10 ops, so a forward is a handful of
/// submits (candle's Metal backend records 50 per command buffer).
pub(crate) const DEFAULT_OPS_PER_SUBMIT: usize = 64;

/// The environment variable that sets the ops per command buffer.
const OPS_PER_SUBMIT_VAR: &str = "TESSERA_WGPU_OPS_PER_SUBMIT";

/// The ops per command buffer `value` (the variable's value, if set) asks for.
fn parse_ops_per_submit(value: Option<&str>) -> Result<usize> {
    let Some(v) = value else {
        return Ok(DEFAULT_OPS_PER_SUBMIT);
    };
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::Input {
            tensor: OPS_PER_SUBMIT_VAR.into(),
            msg: format!("{v:?} is not a positive number of ops per command buffer"),
        }),
    }
}

/// Bytes of the uniform pool. Each op's uniform takes a slot rounded up to the
/// adapter's uniform offset alignment (256 bytes on most), so 64 KiB holds 256.
const UNIFORM_POOL_BYTES: u64 = 64 * 1024;

/// Ops recorded but not yet submitted, with their uniforms.
pub(crate) struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    /// The ops recorded in `encoder`, in order (named by a failed submit).
    ops: Vec<&'static str>,
    /// The uniform pool, created on first use; reused by every batch (queue writes
    /// are ordered after the work already submitted that reads it).
    uniforms: Option<wgpu::Buffer>,
    /// Next free byte of the pool in this batch.
    cursor: u64,
    /// Ops per command buffer (at least 1).
    ops_per_submit: usize,
}

impl Batch {
    /// An empty batch submitting every `ops_per_submit` ops (0 is taken as 1).
    pub(crate) fn new(ops_per_submit: usize) -> Self {
        Batch {
            encoder: None,
            ops: Vec::new(),
            uniforms: None,
            cursor: 0,
            ops_per_submit: ops_per_submit.max(1),
        }
    }

    /// `TESSERA_WGPU_OPS_PER_SUBMIT` as a positive count, else the default; a value
    /// that is not a positive integer is an error naming it.
    pub(crate) fn ops_per_submit_from_env() -> Result<usize> {
        parse_ops_per_submit(std::env::var(OPS_PER_SUBMIT_VAR).ok().as_deref())
    }

    /// "3 ops (layer_norm, linear ×2)": the recorded ops, in order, repeats counted.
    fn describe_ops(&self) -> String {
        let mut runs: Vec<(&str, usize)> = Vec::new();
        for &op in &self.ops {
            match runs.iter_mut().find(|(o, _)| *o == op) {
                Some((_, n)) => *n += 1,
                None => runs.push((op, 1)),
            }
        }
        let names: Vec<String> = runs
            .iter()
            .map(|&(o, n)| {
                if n == 1 {
                    o.to_string()
                } else {
                    format!("{o} ×{n}")
                }
            })
            .collect();
        format!("{} ops ({})", self.ops.len(), names.join(", "))
    }
}

impl Wgpu {
    /// Record one op into the batch: `params` into a uniform slot, `bind` with the
    /// slot's binding (the op's bind groups: a wgpu error there is this op's
    /// error, and nothing is recorded), then `encode` with the encoder. Submits
    /// first when the batch or the uniform pool is full, and after when the op
    /// fills the batch.
    pub(crate) fn record<G>(
        &self,
        op: &'static str,
        params: &[u8],
        bind: impl FnOnce(wgpu::BufferBinding<'_>) -> G,
        encode: impl FnOnce(&mut wgpu::CommandEncoder, G),
    ) -> Result<()> {
        let inner = self.inner();
        let align = u64::from(inner.limits.min_uniform_buffer_offset_alignment.max(4));
        let slot = (params.len() as u64).max(16).div_ceil(align) * align;
        if slot > UNIFORM_POOL_BYTES {
            return Err(Error::Internal(format!(
                "{op}: a {}-byte uniform does not fit the {UNIFORM_POOL_BYTES}-byte pool",
                params.len()
            )));
        }
        let mut batch = super::device::lock(&inner.batch);
        if batch.ops.len() >= batch.ops_per_submit || batch.cursor + slot > UNIFORM_POOL_BYTES {
            self.submit_locked(&mut batch, op)?;
        }
        let b = &mut *batch;
        let offset = b.cursor;
        let groups = self.guarded(op, 0, || {
            let pool = b.uniforms.get_or_insert_with(|| {
                inner.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tessera uniforms"),
                    size: UNIFORM_POOL_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            });
            inner.queue.write_buffer(pool, offset, params);
            bind(wgpu::BufferBinding {
                buffer: pool,
                offset,
                size: std::num::NonZeroU64::new(params.len() as u64),
            })
        })?;
        b.cursor += slot;
        let encoder = b.encoder.get_or_insert_with(|| {
            inner
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("tessera batch"),
                })
        });
        encode(encoder, groups);
        b.ops.push(op);
        if b.ops.len() >= b.ops_per_submit {
            self.submit_locked(&mut batch, op)?;
        }
        Ok(())
    }

    /// Submit the recorded ops now, without waiting for them.
    pub(crate) fn submit_pending(&self, what: &str) -> Result<()> {
        let mut batch = super::device::lock(&self.inner().batch);
        self.submit_locked(&mut batch, what).map(drop)
    }

    /// With the batch locked: record `extra` (a download's copy) after the ops,
    /// submit everything and return the submission. The batch is empty after.
    pub(crate) fn submit_with(
        &self,
        what: &str,
        extra: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<wgpu::SubmissionIndex> {
        let inner = self.inner();
        let mut batch = super::device::lock(&inner.batch);
        let encoder = batch.encoder.get_or_insert_with(|| {
            inner
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(what) })
        });
        extra(encoder);
        match self.submit_locked(&mut batch, what)? {
            Some(s) => Ok(s),
            None => Err(Error::Internal(format!("{what}: nothing was submitted"))),
        }
    }

    /// Hold the batch lock while `f` runs, after submitting the recorded ops: a
    /// queue write in `f` then lands after every op called so far, and no op can be
    /// recorded before it.
    pub(crate) fn after_pending<R>(&self, what: &str, f: impl FnOnce() -> R) -> Result<R> {
        let mut batch = super::device::lock(&self.inner().batch);
        self.submit_locked(&mut batch, what)?;
        Ok(f())
    }

    /// Finish and submit the batch's encoder (if any). A failure names the batch's
    /// ops and marks the device failed (its commands did not run).
    fn submit_locked(
        &self,
        batch: &mut Batch,
        what: &str,
    ) -> Result<Option<wgpu::SubmissionIndex>> {
        let Some(encoder) = batch.encoder.take() else {
            batch.cursor = 0;
            return Ok(None);
        };
        let ops = batch.describe_ops();
        batch.ops.clear();
        batch.cursor = 0;
        let inner = self.inner();
        let r = self.guarded(what, 0, || inner.queue.submit([encoder.finish()]));
        match r {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                let msg = format!(
                    "a command buffer of {ops} failed, so their outputs were not written: {e}"
                );
                self.mark_failed(&msg);
                Err(wgpu_err(what, msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::Rng;
    use crate::wgpu::device::{lock, test_device};
    use crate::{ops, Device, DeviceBuffer};

    fn set_ops_per_submit(dev: &Wgpu, n: usize) {
        lock(&dev.inner().batch).ops_per_submit = n;
    }

    fn pending(dev: &Wgpu) -> usize {
        lock(&dev.inner().batch).ops.len()
    }

    #[test]
    fn ops_per_submit_parses_positive_counts_only() {
        assert_eq!(parse_ops_per_submit(None).unwrap(), DEFAULT_OPS_PER_SUBMIT);
        assert_eq!(parse_ops_per_submit(Some(" 5 ")).unwrap(), 5);
        for bad in ["0", "-3", "many", ""] {
            let e = parse_ops_per_submit(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(OPS_PER_SUBMIT_VAR), "{e}");
        }
    }

    /// Two chains of dependent adds over buffers of 5 and 7 elements (their
    /// uniforms differ), with host writes into an addend between them, match the
    /// same chains on the host at every batch size, through more ops than the
    /// uniform pool has slots (so it wraps within a batch and between batches).
    #[test]
    fn batched_ops_keep_their_order_and_uniforms() {
        let Some(dev) = test_device() else { return };
        let align = u64::from(
            dev.inner()
                .limits
                .min_uniform_buffer_offset_alignment
                .max(4),
        );
        let slots = (UNIFORM_POOL_BYTES / (16u64.div_ceil(align) * align)) as usize;
        let steps = slots + 37;
        let mut rng = Rng::new(0xba7c4);
        // Small integers: every sum is exact in f32, so the comparison is exact.
        let mut ints =
            |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next_u64() % 9) as f32 - 4.0).collect() };
        for per_submit in [1, 2, 3, 64, 100_000] {
            set_ops_per_submit(&dev, per_submit);
            let mut host = [ints(5), ints(7)];
            let mut add_host = [ints(5), ints(7)];
            let mut x =
                [0, 1].map(|i| DeviceBuffer::from_slice(&dev, &host[i], &[host[i].len()]).unwrap());
            let mut y =
                [0, 1].map(|i| DeviceBuffer::<f32, Wgpu>::zeros(&dev, &[host[i].len()]).unwrap());
            let mut a = [0, 1].map(|i| {
                DeviceBuffer::from_slice(&dev, &add_host[i], &[add_host[i].len()]).unwrap()
            });
            for step in 0..steps {
                let i = step % 2;
                if step % 97 == 50 {
                    add_host[i] = ints(add_host[i].len());
                    a[i].copy_from_host(&add_host[i]).unwrap();
                }
                ops::add_into(&x[i], &a[i], &mut y[i]).unwrap();
                std::mem::swap(&mut x[i], &mut y[i]);
                for (h, v) in host[i].iter_mut().zip(&add_host[i]) {
                    *h += v;
                }
                assert!(pending(&dev) < per_submit, "a full batch was not submitted");
            }
            for i in 0..2 {
                assert_eq!(
                    x[i].to_vec().unwrap(),
                    host[i],
                    "{per_submit} ops per submit"
                );
            }
            assert_eq!(pending(&dev), 0, "a download submits what was recorded");
        }
    }

    /// A command buffer that fails names its ops, and the device fails every
    /// later call rather than return outputs its commands never wrote.
    #[test]
    fn a_failed_batch_names_its_ops_and_fails_the_device() {
        let Some(dev) = test_device() else { return };
        set_ops_per_submit(&dev, 64);
        let a = DeviceBuffer::from_slice(&dev, &[1.0f32; 8], &[8]).unwrap();
        let mut y = DeviceBuffer::<f32, Wgpu>::zeros(&dev, &[8]).unwrap();
        ops::add_into(&a, &a, &mut y).unwrap();
        ops::add_into(&a, &a, &mut y).unwrap();
        // An invalid command in the same command buffer: copies are whole words.
        {
            let mut b = lock(&dev.inner().batch);
            let encoder = b.encoder.as_mut().expect("the adds are recorded");
            encoder.copy_buffer_to_buffer(&a.storage().buffer, 0, &y.storage().buffer, 0, 3);
        }
        let e = dev.synchronize().unwrap_err().to_string();
        assert!(e.contains("2 ops (add ×2)"), "{e}");
        let later = y.to_vec().unwrap_err().to_string();
        assert!(later.contains("add ×2"), "{later}");
        assert!(DeviceBuffer::from_slice(&dev, &[1.0f32], &[1]).is_err());
    }

    /// A model's forward submits its last ops: nothing is left recorded after it.
    #[test]
    fn a_forward_leaves_nothing_recorded() {
        let Some(dev) = test_device() else { return };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/mga_tiny");
        let model = crate::VisionModel::<f32, Wgpu>::load(&dir, &dev).unwrap();
        let shape = model.config().pixel_shape(2);
        let mut rng = Rng::new(7);
        let pixels =
            DeviceBuffer::from_slice(&dev, &rng.vec(shape.iter().product(), 1.0), &shape).unwrap();
        set_ops_per_submit(&dev, 100_000);
        let before = dev
            .inner()
            .launches
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut memory = model.new_memory(2).unwrap();
        model.forward(&pixels, Some(&mut memory)).unwrap();
        let after = dev
            .inner()
            .launches
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(after > before, "the forward launched nothing");
        assert_eq!(pending(&dev), 0);
    }
}
