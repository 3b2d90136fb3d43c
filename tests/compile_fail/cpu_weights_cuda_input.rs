// Bug class (1): an inference CLI loaded the model onto the CPU while its inputs
// went to CUDA ("Input type (torch.cuda.FloatTensor) and weight type
// (torch.FloatTensor) should be the same"). In tessera this does not compile.
use tessera::model::VisionModel;
use tessera::{Cpu, Cuda, DeviceBuffer};

fn main() -> tessera::Result<()> {
    let model = VisionModel::<f32, Cpu>::load("tests/data/siglip_tiny", &Cpu)?;
    let cuda = Cuda::new(0)?;
    let pixels = DeviceBuffer::<f32, Cuda>::zeros(&cuda, &[1, 3, 32, 32])?;
    let _out = model.forward(&pixels, None)?;
    Ok(())
}
