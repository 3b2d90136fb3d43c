//! The device trait. `Cpu`, `Cuda` and `Wgpu` implement it; it is sealed, so a
//! buffer's device type always names one of tessera's backends.

use crate::element::Element;
use crate::error::Result;

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// Which backend a device is, at run time (for messages and the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// [`Cpu`](crate::Cpu).
    Cpu,
    /// [`Cuda`](crate::Cuda).
    Cuda,
    /// [`Wgpu`](crate::Wgpu).
    Wgpu,
}

impl std::str::FromStr for DeviceKind {
    type Err = crate::error::Error;
    /// `cpu`, `cuda` or `wgpu`, in any case.
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            "wgpu" => Ok(DeviceKind::Wgpu),
            other => Err(crate::error::Error::Input {
                tensor: "device".into(),
                msg: format!("unknown device `{other}` (expected cpu, cuda or wgpu)"),
            }),
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Wgpu => "wgpu",
        })
    }
}

/// `len` copies of `value` in a host vector reserved fallibly (a size the host
/// cannot hold is `OutOfMemory`, never an abort): the staging of
/// [`Device::storage_full`] on backends that upload it.
pub(crate) fn staged_full<T: Element>(len: usize, value: T) -> Result<Vec<T>> {
    let mut host = Vec::new();
    host.try_reserve_exact(len)
        .map_err(|_| crate::Error::OutOfMemory {
            device: "host".into(),
            bytes: (len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
            tensor: "staging for a tensor's initial value".into(),
        })?;
    host.resize(len, value);
    Ok(host)
}

/// A compute device. The handle is cheap to clone and every clone is the same
/// device; two handles made separately (two CUDA contexts, two wgpu devices) are
/// different devices, and buffers of one cannot be used with the other.
///
/// The storage methods are the backend's half of [`crate::DeviceBuffer`]; users
/// call the buffer's methods instead.
pub trait Device: sealed::Sealed + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Memory holding `len` elements of `T` on this device.
    type Storage<T: Element>: Send + Sync;

    /// The backend this device belongs to.
    const KIND: DeviceKind;

    /// Human-readable name, e.g. `cuda:0 (NVIDIA H200)` or `wgpu (llvmpipe, Vulkan, Cpu)`.
    fn describe(&self) -> String;

    /// Whether `other` is this very device (same context / same wgpu device).
    fn same_device(&self, other: &Self) -> bool;

    /// Copy host data into new device memory.
    #[doc(hidden)]
    fn storage_from_slice<T: Element>(&self, data: &[T]) -> Result<Self::Storage<T>>;

    /// Move host data into device memory (the CPU keeps the vector itself; other
    /// backends copy it).
    #[doc(hidden)]
    fn storage_from_vec<T: Element>(&self, data: Vec<T>) -> Result<Self::Storage<T>> {
        self.storage_from_slice(&data)
    }

    /// Allocate device memory for `len` elements. Contents are unspecified (zero
    /// on backends where that is free); every op writes its whole output.
    #[doc(hidden)]
    fn storage_alloc<T: Element>(&self, len: usize) -> Result<Self::Storage<T>>;

    /// A storage of `len` copies of `value`. The default asks the device for the
    /// memory first, so a size it cannot hold is an error before any host memory
    /// is touched, and only then fills a host staging vector and writes it over.
    /// (Filling first let a 4 TiB request exhaust the host's memory and get the
    /// process killed where overcommit let the reservation succeed: seen with
    /// wgpu on an H100, 2026-11-24. wgpu overrides this: it checks the size
    /// against its adapter's limits, then uploads the staged value.)
    #[doc(hidden)]
    fn storage_full<T: Element>(&self, len: usize, value: T) -> Result<Self::Storage<T>> {
        let mut storage = self.storage_alloc::<T>(len)?;
        self.storage_write(&mut storage, &staged_full(len, value)?)?;
        Ok(storage)
    }

    /// Write `data` over the first `data.len()` elements of a storage (which
    /// holds at least that many), in place, after the work already queued.
    #[doc(hidden)]
    fn storage_write<T: Element>(&self, storage: &mut Self::Storage<T>, data: &[T]) -> Result<()>;

    /// Copy `len` elements of device memory back to the host. Waits for pending work.
    #[doc(hidden)]
    fn storage_to_vec<T: Element>(&self, storage: &Self::Storage<T>, len: usize) -> Result<Vec<T>>;

    /// Block until all work queued on this device has finished.
    fn synchronize(&self) -> Result<()>;

    /// Start the work called so far without waiting for it. wgpu records ops into
    /// a command buffer that it submits every few dozen ops, on a download, a host
    /// write and [`synchronize`](Self::synchronize); call this before host work
    /// that the GPU should overlap (a model's forward ends with it). CUDA launches
    /// at once and the CPU computes in the call: there it does nothing.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Run `f`, a fixed sequence of ops on this device, as one replayable unit.
    /// CUDA captures the launches of the second call with a `key` into a graph
    /// and replays it on later calls with that key **instead of running `f`**
    /// (the first call runs `f`: a warm-up); elsewhere, and where a capture
    /// fails, `f` runs every time. The caller guarantees that `key` determines
    /// every launch `f` would make — kernels, grids, arguments, and the address
    /// and size of every buffer — and that `f` has no other effect that a later
    /// call needs (host-side checks run before, outside `f`).
    #[doc(hidden)]
    fn run_replayable(&self, key: &[u64], f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let _ = key;
        f()
    }

    /// The address of a storage's memory (a device pointer on CUDA), for
    /// [`Self::run_replayable`]'s keys; 0 where keys are not used.
    #[doc(hidden)]
    fn storage_addr<T: Element>(&self, storage: &Self::Storage<T>) -> u64 {
        let _ = storage;
        0
    }

    /// Kernels (CUDA) or compute dispatches (wgpu) launched on this device so
    /// far, by every thread; `None` where there is no such thing (the CPU).
    /// `tessera bench` reports the launches of one forward pass with it.
    #[doc(hidden)]
    fn launch_count(&self) -> Option<u64> {
        None
    }

    /// Mean milliseconds per call of `f` over `iters` calls, measured after the
    /// device's queue is drained. The default drains the queue before and after
    /// and reads the host clock; backends with device timers (CUDA events)
    /// override it. Callers warm up first.
    fn time_ms<F: FnMut() -> Result<()>>(&self, iters: usize, mut f: F) -> Result<f64> {
        self.synchronize()?;
        let start = std::time::Instant::now();
        for _ in 0..iters {
            f()?;
        }
        self.synchronize()?;
        Ok(start.elapsed().as_secs_f64() * 1e3 / iters.max(1) as f64)
    }
}

/// Storage of a backend that is compiled out: no value of it can exist.
#[derive(Debug, Clone, Copy)]
pub enum Never {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceBuffer, Error, Result};

    /// A device that holds at most `limit` elements and must never be handed host
    /// data for a tensor it refused.
    #[derive(Clone, Debug)]
    struct Small {
        limit: usize,
    }
    impl sealed::Sealed for Small {}
    impl Device for Small {
        type Storage<T: Element> = Vec<T>;
        const KIND: DeviceKind = DeviceKind::Cuda;
        fn describe(&self) -> String {
            "small".into()
        }
        fn same_device(&self, _: &Self) -> bool {
            true
        }
        fn storage_from_slice<T: Element>(&self, data: &[T]) -> Result<Vec<T>> {
            assert!(
                data.len() <= self.limit,
                "host data staged for a refused size"
            );
            Ok(data.to_vec())
        }
        fn storage_alloc<T: Element>(&self, len: usize) -> Result<Vec<T>> {
            if len > self.limit {
                return Err(Error::OutOfMemory {
                    device: self.describe(),
                    bytes: len as u64,
                    tensor: "buffer".into(),
                });
            }
            Ok(vec![T::default(); len])
        }
        fn storage_write<T: Element>(&self, storage: &mut Vec<T>, data: &[T]) -> Result<()> {
            assert!(data.len() <= storage.len());
            storage[..data.len()].copy_from_slice(data);
            Ok(())
        }
        fn storage_to_vec<T: Element>(&self, storage: &Vec<T>, len: usize) -> Result<Vec<T>> {
            Ok(storage[..len].to_vec())
        }
        fn synchronize(&self) -> Result<()> {
            Ok(())
        }
    }

    /// `full` asks the device before it fills host memory: a size the device
    /// refuses is the device's `OutOfMemory`, and a size it takes holds the value.
    #[test]
    fn full_asks_the_device_before_staging_on_the_host() {
        let dev = Small { limit: 1000 };
        match DeviceBuffer::<f32, Small>::full(&dev, &[1 << 20, 1 << 10], 2.0) {
            Err(Error::OutOfMemory { device, .. }) => assert_eq!(device, "small"),
            other => panic!("expected the device's OutOfMemory, got {other:?}"),
        }
        let x = DeviceBuffer::<f32, Small>::full(&dev, &[7, 3], -1.5).unwrap();
        assert_eq!(x.to_vec().unwrap(), vec![-1.5; 21]);
        let z = DeviceBuffer::<crate::bf16, Small>::zeros(&dev, &[0]).unwrap();
        assert!(z.to_vec().unwrap().is_empty());
    }
}
