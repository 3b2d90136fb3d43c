// The correct twin of compile_fail/cpu_weights_cuda_input.rs: the pixels are
// moved explicitly to the model's device with `.to(&Cpu)`.
use tessera::model::VisionModel;
use tessera::{Cpu, Cuda, DeviceBuffer};

fn run(cuda: &Cuda) -> tessera::Result<()> {
    let model = VisionModel::<f32, Cpu>::load("tests/data/siglip_tiny", &Cpu)?;
    let pixels = DeviceBuffer::<f32, Cuda>::zeros(cuda, &[1, 3, 32, 32])?;
    let _out = model.forward(&pixels.to(&Cpu)?, None)?;
    Ok(())
}

fn main() {
    // Compiling is what this case proves; it runs where a CUDA driver exists.
    match Cuda::new(0) {
        Ok(cuda) => {
            if let Err(e) = run(&cuda) {
                eprintln!("ran with an error (model path relative to the test dir?): {e}");
            }
        }
        Err(e) => eprintln!("compiled; not run here: {e}"),
    }
}
