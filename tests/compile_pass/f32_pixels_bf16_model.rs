// The correct twin of compile_fail/f32_pixels_bf16_model.rs: the f32 pixels are
// converted on the device with an explicit `.cast::<bf16>()`.
use tessera::bf16;
use tessera::model::VisionModel;
use tessera::{Cuda, DeviceBuffer};

fn run(cuda: &Cuda) -> tessera::Result<()> {
    let model = VisionModel::<bf16, Cuda>::load("tests/data/siglip_tiny_bf16", cuda)?;
    let pixels = DeviceBuffer::<f32, Cuda>::zeros(cuda, &[1, 3, 32, 32])?;
    let _out = model.forward(&pixels.cast::<bf16>()?, None)?;
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
