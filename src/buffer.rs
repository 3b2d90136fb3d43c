//! `DeviceBuffer<T, D>`: typed memory on one device, with a runtime shape.
//!
//! The element type `T` and the device type `D` are type parameters, so using a
//! host buffer where a CUDA one is wanted, or f32 where bf16 is wanted, does not
//! compile. Moving ([`DeviceBuffer::to`]) and converting ([`DeviceBuffer::cast`])
//! are explicit calls.

use crate::device::Device;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::Kernels;

/// Typed memory on device `D` holding elements of type `T`, with a shape.
pub struct DeviceBuffer<T: Element, D: Device> {
    storage: D::Storage<T>,
    shape: Vec<usize>,
    /// Elements the storage holds (≥ the shape's count; more only for workspace
    /// buffers viewed at a smaller shape, see `view_within`).
    capacity: usize,
    device: D,
}

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Device buffers this thread has made so far (every `DeviceBuffer` constructor
/// counts one). Lets tests check that a forward pass reuses its workspace.
#[doc(hidden)]
pub fn thread_allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

fn count_allocation() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

/// Number of elements of a shape, or `None` on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl<T: Element, D: Device> DeviceBuffer<T, D> {
    /// Copy host data to `device` as a tensor of `shape`.
    ///
    /// ```
    /// use tessera::{Cpu, DeviceBuffer};
    /// let x = DeviceBuffer::from_slice(&Cpu, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(x.shape(), &[2, 2]);
    /// # Ok::<(), tessera::Error>(())
    /// ```
    pub fn from_slice(device: &D, data: &[T], shape: &[usize]) -> Result<Self> {
        let expected = numel_or_err("from_slice", shape)?;
        if data.len() != expected {
            return Err(Error::Length {
                what: "DeviceBuffer::from_slice".into(),
                len: data.len(),
                shape: shape.to_vec(),
                expected,
            });
        }
        count_allocation();
        Ok(Self {
            storage: device.storage_from_slice(data)?,
            shape: shape.to_vec(),
            capacity: expected,
            device: device.clone(),
        })
    }

    /// Move a host vector to `device` as a tensor of `shape` (no copy on the CPU).
    pub(crate) fn from_vec(device: &D, data: Vec<T>, shape: &[usize]) -> Result<Self> {
        let expected = numel_or_err("from_vec", shape)?;
        if data.len() != expected {
            return Err(Error::Length {
                what: "DeviceBuffer::from_vec".into(),
                len: data.len(),
                shape: shape.to_vec(),
                expected,
            });
        }
        count_allocation();
        Ok(Self {
            storage: device.storage_from_vec(data)?,
            shape: shape.to_vec(),
            capacity: expected,
            device: device.clone(),
        })
    }

    /// Overwrite the tensor's contents with host data of the same length, in
    /// place: the memory (and so, on CUDA, a captured graph that reads it) stays
    /// the same. Ordered after the ops already queued on the device.
    ///
    /// ```
    /// use tessera::{Cpu, DeviceBuffer};
    /// let mut x = DeviceBuffer::from_slice(&Cpu, &[1.0f32, 2.0], &[2])?;
    /// x.copy_from_host(&[3.0, 4.0])?;
    /// assert_eq!(x.to_vec()?, [3.0, 4.0]);
    /// assert!(x.copy_from_host(&[1.0]).is_err());
    /// # Ok::<(), tessera::Error>(())
    /// ```
    pub fn copy_from_host(&mut self, data: &[T]) -> Result<()> {
        let expected = self.len();
        if data.len() != expected {
            return Err(Error::Length {
                what: "DeviceBuffer::copy_from_host".into(),
                len: data.len(),
                shape: self.shape.clone(),
                expected,
            });
        }
        self.device.storage_write(&mut self.storage, data)
    }

    /// A tensor of `shape` with every element `value` (tests poison outputs with NaN).
    pub fn full(device: &D, shape: &[usize], value: T) -> Result<Self> {
        let n = numel_or_err("full", shape)?;
        // The device is asked for the memory before any host staging is filled
        // (`Device::storage_full`): a huge shape is an `Err(OutOfMemory)`, never
        // an abort or a host out of memory.
        count_allocation();
        Ok(Self {
            storage: device.storage_full(n, value)?,
            shape: shape.to_vec(),
            capacity: n,
            device: device.clone(),
        })
    }

    /// A tensor of zeros.
    pub fn zeros(device: &D, shape: &[usize]) -> Result<Self> {
        Self::full(device, shape, T::default())
    }

    /// Allocate a tensor whose contents are unspecified; an op will overwrite all of it.
    pub(crate) fn uninit(device: &D, shape: &[usize]) -> Result<Self> {
        let n = numel_or_err("alloc", shape)?;
        count_allocation();
        Ok(Self {
            storage: device.storage_alloc::<T>(n)?,
            shape: shape.to_vec(),
            capacity: n,
            device: device.clone(),
        })
    }

    /// The runtime shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        // The shape was checked for overflow when the buffer was made.
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device this buffer lives on.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The address of its memory (a device pointer on CUDA; see
    /// [`Device::storage_addr`]).
    pub(crate) fn addr(&self) -> u64 {
        self.device.storage_addr(&self.storage)
    }

    /// Backend storage (for backend code).
    pub(crate) fn storage(&self) -> &D::Storage<T> {
        &self.storage
    }

    /// Mutable backend storage (for backend code).
    pub(crate) fn storage_mut(&mut self) -> &mut D::Storage<T> {
        &mut self.storage
    }

    /// Copy the contents to a host `Vec`, waiting for pending device work.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.device.storage_to_vec(&self.storage, self.len())
    }

    /// Move (copy) this buffer to another device, possibly of another backend.
    /// The element type stays the same; use [`cast`](Self::cast) to convert it.
    ///
    /// ```
    /// use tessera::{Cpu, DeviceBuffer};
    /// let host = DeviceBuffer::from_slice(&Cpu, &[1.0f32, 2.0], &[2])?;
    /// let copy: DeviceBuffer<f32, Cpu> = host.to(&Cpu)?;
    /// assert_eq!(copy.to_vec()?, vec![1.0, 2.0]);
    /// # Ok::<(), tessera::Error>(())
    /// ```
    pub fn to<D2: Device>(&self, device: &D2) -> Result<DeviceBuffer<T, D2>> {
        let host = self.to_vec()?;
        DeviceBuffer::from_slice(device, &host, &self.shape)
    }

    /// The same data with a new shape of the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        let n = numel_or_err("reshape", shape)?;
        if n != self.len() {
            return Err(Error::Length {
                what: "reshape".into(),
                len: self.len(),
                shape: shape.to_vec(),
                expected: n,
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            ..self
        })
    }

    /// View this buffer at `shape`, whose element count may be smaller than the
    /// storage (the packed forward's workspace, sized for the largest batch seen,
    /// serves smaller ones). Ops see only the first `numel(shape)` elements.
    pub(crate) fn view_within(&mut self, shape: &[usize]) -> Result<()> {
        let n = numel_or_err("view", shape)?;
        if n > self.capacity {
            return Err(Error::Internal(format!(
                "view of a buffer of {} elements as {shape:?} ({n} elements)",
                self.capacity
            )));
        }
        self.shape = shape.to_vec();
        Ok(())
    }

    /// Convert the element type on this buffer's own device (f32 → bf16 rounds to
    /// nearest-even).
    ///
    /// ```
    /// use half::bf16;
    /// use tessera::{Cpu, DeviceBuffer};
    /// let x = DeviceBuffer::from_slice(&Cpu, &[1.0f32, 0.1], &[2])?;
    /// let y: DeviceBuffer<bf16, Cpu> = x.cast::<bf16>()?;
    /// assert_eq!(y.to_vec()?[1], bf16::from_f32(0.1));
    /// # Ok::<(), tessera::Error>(())
    /// ```
    pub fn cast<U: Element>(&self) -> Result<DeviceBuffer<U, D>>
    where
        D: Kernels<T> + Kernels<U>,
    {
        crate::ops::cast(self)
    }
}

impl<T: Element, D: Device> std::fmt::Debug for DeviceBuffer<T, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer<{}, {}>{:?}",
            T::DTYPE,
            self.device.describe(),
            self.shape
        )
    }
}

fn numel_or_err(what: &str, shape: &[usize]) -> Result<usize> {
    checked_numel(shape).ok_or_else(|| Error::Input {
        tensor: what.to_string(),
        msg: format!("shape {shape:?} has more elements than fit in memory"),
    })
}
