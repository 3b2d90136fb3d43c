//! The device and kernel impls of a backend whose cargo feature is off. The type
//! still exists (typed code and the compile-fail proofs build everywhere), but it
//! holds an uninhabited [`Never`](crate::device::Never), so no value of it can be
//! made and every method body is `match self.never {}`. One macro serves both
//! GPU backends, so a new op is added to the stubs in one place.

/// Implement `Device` and `Kernels<T>` for `$ty` (a struct with a `never: Never`
/// field), reporting `DeviceKind::$kind`.
macro_rules! uninhabited_backend {
    ($ty:ident, $kind:ident) => {
        impl $crate::device::sealed::Sealed for $ty {}

        impl $crate::device::Device for $ty {
            type Storage<T: $crate::element::Element> = $crate::device::Never;
            const KIND: $crate::device::DeviceKind = $crate::device::DeviceKind::$kind;
            fn describe(&self) -> String {
                match self.never {}
            }
            fn same_device(&self, _: &Self) -> bool {
                match self.never {}
            }
            fn storage_from_slice<T: $crate::element::Element>(
                &self,
                _: &[T],
            ) -> $crate::error::Result<$crate::device::Never> {
                match self.never {}
            }
            fn storage_alloc<T: $crate::element::Element>(
                &self,
                _: usize,
            ) -> $crate::error::Result<$crate::device::Never> {
                match self.never {}
            }
            fn storage_write<T: $crate::element::Element>(
                &self,
                _: &mut $crate::device::Never,
                _: &[T],
            ) -> $crate::error::Result<()> {
                match self.never {}
            }
            fn storage_to_vec<T: $crate::element::Element>(
                &self,
                s: &$crate::device::Never,
                _: usize,
            ) -> $crate::error::Result<Vec<T>> {
                match *s {}
            }
            fn synchronize(&self) -> $crate::error::Result<()> {
                match self.never {}
            }
        }

        impl<T: $crate::element::Element> $crate::ops::Kernels<T> for $ty {
            fn patch_embed(
                &self,
                _: $crate::ops::PatchEmbedArgs<'_, T, Self>,
            ) -> $crate::error::Result<()> {
                match self.never {}
            }
            fn linear(&self, _: $crate::ops::LinearArgs<'_, T, Self>) -> $crate::error::Result<()> {
                match self.never {}
            }
            fn layer_norm(
                &self,
                _: $crate::ops::LayerNormArgs<'_, T, Self>,
            ) -> $crate::error::Result<()> {
                match self.never {}
            }
            fn attention(
                &self,
                _: $crate::ops::AttentionArgs<'_, T, Self>,
            ) -> $crate::error::Result<()> {
                match self.never {}
            }
            fn memory_read(
                &self,
                _: $crate::ops::MemoryReadArgs<'_, T, Self>,
            ) -> $crate::error::Result<()> {
                match self.never {}
            }
            fn memory_write(
                &self,
                _: $crate::ops::MemoryWriteArgs<'_, T, Self>,
            ) -> $crate::error::Result<()> {
                match self.never {}
            }
            fn add(&self, _: $crate::ops::AddArgs<'_, T, Self>) -> $crate::error::Result<()> {
                match self.never {}
            }
            fn cast<U: $crate::element::Element>(
                &self,
                _: $crate::ops::CastArgs<'_, T, U, Self>,
            ) -> $crate::error::Result<()> {
                match self.never {}
            }
        }
    };
}

pub(crate) use uninhabited_backend;
