// Bug class (2): a multi-expert memory model built its memory bank on the CPU
// while the model ran on CUDA ("Expected all tensors to be on the same device").
// A bank comes only from a model and carries its device type: this does not compile.
use tessera::model::VisionModel;
use tessera::{Cpu, Cuda, DeviceBuffer};

fn main() -> tessera::Result<()> {
    let dir = "tests/data/mga_tiny";
    let cuda = Cuda::new(0)?;
    let model = VisionModel::<f32, Cuda>::load(dir, &cuda)?;
    let cpu_model = VisionModel::<f32, Cpu>::load(dir, &Cpu)?;
    let mut bank = cpu_model.new_memory(1)?; // the bank lives on the CPU
    let pixels = DeviceBuffer::<f32, Cuda>::zeros(&cuda, &[1, 3, 32, 32])?;
    let _out = model.forward(&pixels, Some(&mut bank))?;
    Ok(())
}
