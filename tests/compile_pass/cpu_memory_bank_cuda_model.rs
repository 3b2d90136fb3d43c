// The correct twin of compile_fail/cpu_memory_bank_cuda_model.rs: the bank is made
// by the CUDA model itself, so it lives where the model lives.
use tessera::model::VisionModel;
use tessera::{Cuda, DeviceBuffer};

fn run(cuda: &Cuda) -> tessera::Result<()> {
    let model = VisionModel::<f32, Cuda>::load("tests/data/mga_tiny", cuda)?;
    let mut bank = model.new_memory(1)?;
    for _segment in 0..3 {
        let pixels = DeviceBuffer::<f32, Cuda>::zeros(cuda, &[1, 3, 32, 32])?;
        let _out = model.forward(&pixels, Some(&mut bank))?;
    }
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
