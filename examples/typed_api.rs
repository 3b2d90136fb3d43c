//! The README's typed-API example, kept compiling by `cargo test` (examples are built).
use tessera::{bf16, preprocess, Cpu, DeviceBuffer, VisionModel, Wgpu};

fn main() -> tessera::Result<()> {
    let gpu = Wgpu::new()?;
    // The model and its memory bank live on the GPU, in bf16.
    let model = VisionModel::<bf16, Wgpu>::load("assets/mga_tiny", &gpu)?;
    let mut memory = model.new_memory(1)?;
    let size = model.config().image_size;
    for frame in ["a.png", "b.png", "c.png"] {
        // Preprocessing makes f32 on the host: move it, then convert — both explicit.
        let host = preprocess::load_images(&[frame], size)?;
        let pixels = DeviceBuffer::from_slice(&Cpu, &host, &[1, 3, size, size])?;
        let pixels = pixels.to(&gpu)?.cast::<bf16>()?;
        let out = model.forward(&pixels, Some(&mut memory))?;
        println!("{:?}", out.pooler_output);
    }
    Ok(())
}
