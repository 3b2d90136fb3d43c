//! The three bugs that motivated tessera, and the packed-batch mix-up that
//! variable-resolution towers invite, as compile errors.
//!
//! Each of the three was a real PyTorch bug found at run time; in tessera each is a type error
//! (`E0308`, mismatched types), checked here as a `compile_fail` doctest beside its
//! correct twin, which must compile. They need no GPU: the `Cuda` type exists
//! whenever the `cuda` feature is on (and is uninhabited when it is off).
//!
//! ## 1. Weights on the CPU, inputs on CUDA
//!
//! An inference CLI loaded the model onto the CPU while its inputs went to CUDA
//! ("Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor)
//! should be the same"):
//!
//! ```compile_fail,E0308
//! use tessera::model::VisionModel;
//! use tessera::{Cpu, Cuda, DeviceBuffer};
//! fn run(cuda: &Cuda) -> tessera::Result<()> {
//!     let model = VisionModel::<f32, Cpu>::load("tests/data/siglip_tiny", &Cpu)?;
//!     let pixels = DeviceBuffer::<f32, Cuda>::zeros(cuda, &[1, 3, 32, 32])?;
//!     let _out = model.forward(&pixels, None)?; // CUDA pixels, CPU model
//!     Ok(())
//! }
//! ```
//!
//! The twin moves the pixels explicitly to the model's device:
//!
//! ```no_run
//! use tessera::model::VisionModel;
//! use tessera::{Cpu, Cuda, DeviceBuffer};
//! fn run(cuda: &Cuda) -> tessera::Result<()> {
//!     let model = VisionModel::<f32, Cpu>::load("tests/data/siglip_tiny", &Cpu)?;
//!     let pixels = DeviceBuffer::<f32, Cuda>::zeros(cuda, &[1, 3, 32, 32])?;
//!     let _out = model.forward(&pixels.to(&Cpu)?, None)?;
//!     Ok(())
//! }
//! ```
//!
//! ## 2. A memory bank built on the CPU for a CUDA model
//!
//! A multi-expert memory model built its memory bank on the CPU while the model
//! ran on CUDA ("Expected all tensors to be on the same device"). A bank comes only
//! from a model ([`VisionModel::new_memory`](crate::VisionModel::new_memory)) and
//! carries its device type:
//!
//! ```compile_fail,E0308
//! use tessera::model::VisionModel;
//! use tessera::{Cpu, Cuda, DeviceBuffer};
//! fn run(cuda: &Cuda) -> tessera::Result<()> {
//!     let model = VisionModel::<f32, Cuda>::load("tests/data/mga_tiny", cuda)?;
//!     let cpu_model = VisionModel::<f32, Cpu>::load("tests/data/mga_tiny", &Cpu)?;
//!     let mut bank = cpu_model.new_memory(1)?; // the bank lives on the CPU
//!     let pixels = DeviceBuffer::<f32, Cuda>::zeros(cuda, &[1, 3, 32, 32])?;
//!     let _out = model.forward(&pixels, Some(&mut bank))?;
//!     Ok(())
//! }
//! ```
//!
//! The twin has the CUDA model make its own bank, which lives where it lives:
//!
//! ```no_run
//! use tessera::model::VisionModel;
//! use tessera::{Cuda, DeviceBuffer};
//! fn run(cuda: &Cuda) -> tessera::Result<()> {
//!     let model = VisionModel::<f32, Cuda>::load("tests/data/mga_tiny", cuda)?;
//!     let mut bank = model.new_memory(1)?;
//!     for _segment in 0..3 {
//!         let pixels = DeviceBuffer::<f32, Cuda>::zeros(cuda, &[1, 3, 32, 32])?;
//!         let _out = model.forward(&pixels, Some(&mut bank))?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! ## 3. bf16 weights fed f32 pixels
//!
//! A SigLIP-NaViT tower with bf16 weights received f32 pixels from the image
//! transforms ("mat1 and mat2 must have the same dtype, but got Float and
//! BFloat16"). The element type is part of the buffer's type:
//!
//! ```compile_fail,E0308
//! use tessera::model::VisionModel;
//! use tessera::{bf16, Cuda, DeviceBuffer};
//! fn run(cuda: &Cuda) -> tessera::Result<()> {
//!     let model = VisionModel::<bf16, Cuda>::load("tests/data/siglip_tiny_bf16", cuda)?;
//!     let pixels = DeviceBuffer::<f32, Cuda>::zeros(cuda, &[1, 3, 32, 32])?;
//!     let _out = model.forward(&pixels, None)?; // f32 pixels, bf16 model
//!     Ok(())
//! }
//! ```
//!
//! The twin converts on the device with an explicit cast:
//!
//! ```no_run
//! use tessera::model::VisionModel;
//! use tessera::{bf16, Cuda, DeviceBuffer};
//! fn run(cuda: &Cuda) -> tessera::Result<()> {
//!     let model = VisionModel::<bf16, Cuda>::load("tests/data/siglip_tiny_bf16", cuda)?;
//!     let pixels = DeviceBuffer::<f32, Cuda>::zeros(cuda, &[1, 3, 32, 32])?;
//!     let _out = model.forward(&pixels.cast::<bf16>()?, None)?;
//!     Ok(())
//! }
//! ```
//!
//! ## 4. A padded batch where packed offsets are expected (and the reverse)
//!
//! A NaViT / SigLIP 2 tower runs images of different sizes packed into one
//! sequence with per-image offsets. A padded tensor handed to the packed forward
//! would attend across images (or over padding) without any error; in tessera a
//! packed batch is its own type, [`PackedBatch`](crate::model::PackedBatch):
//!
//! ```compile_fail,E0308
//! use tessera::model::VisionModel;
//! use tessera::{Cpu, DeviceBuffer};
//! fn run() -> tessera::Result<()> {
//!     let model = VisionModel::<f32, Cpu>::load("tests/data/siglip2/siglip2_tiny", &Cpu)?;
//!     let padded = DeviceBuffer::<f32, Cpu>::zeros(&Cpu, &[2, 24, 48])?;
//!     let _out = model.forward_packed(&padded)?; // padded rows, no offsets
//!     Ok(())
//! }
//! ```
//!
//! ```compile_fail,E0308
//! use tessera::model::{ImagePatches, VisionModel};
//! use tessera::Cpu;
//! fn run(images: &[ImagePatches]) -> tessera::Result<()> {
//!     let model = VisionModel::<f32, Cpu>::load("tests/data/siglip2/siglip2_tiny", &Cpu)?;
//!     let packed = model.pack(images)?;
//!     let _out = model.forward(&packed, None)?; // packed rows where [B, C, I, I] is expected
//!     Ok(())
//! }
//! ```
//!
//! The twin packs the images (from a padded batch, with its mask and shapes
//! checked) and runs the packed forward:
//!
//! ```no_run
//! use tessera::model::{ImagePatches, VisionModel};
//! use tessera::Cpu;
//! fn run(pixels: &[f32], mask: &[i64], shapes: &[i64]) -> tessera::Result<()> {
//!     let model = VisionModel::<f32, Cpu>::load("tests/data/siglip2/siglip2_tiny", &Cpu)?;
//!     let images = ImagePatches::from_padded(pixels, [2, 24, 48], mask, shapes)?;
//!     let _out = model.forward_packed(&model.pack(&images)?)?;
//!     Ok(())
//! }
//! ```
