// Bug class (3): a SigLIP vision tower with bf16 weights received f32 pixels from
// the image transforms ("mat1 and mat2 must have the same dtype, but got Float and
// BFloat16"). The element type is part of the buffer's type: this does not compile.
use tessera::bf16;
use tessera::model::VisionModel;
use tessera::{Cuda, DeviceBuffer};

fn main() -> tessera::Result<()> {
    let cuda = Cuda::new(0)?;
    let model = VisionModel::<bf16, Cuda>::load("tests/data/siglip_tiny_bf16", &cuda)?;
    let pixels = DeviceBuffer::<f32, Cuda>::zeros(&cuda, &[1, 3, 32, 32])?;
    let _out = model.forward(&pixels, None)?;
    Ok(())
}
