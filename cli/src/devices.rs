//! `--device`: which backend (and which GPU) a command runs on.

use std::str::FromStr;

use tessera::{Cuda, DeviceKind, Wgpu};

/// One `--device` entry: `auto`, `cpu`, `wgpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0, else a hardware wgpu adapter, else the CPU.
    Auto,
    /// A backend (and for CUDA a device ordinal).
    Exact(DeviceKind, usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err(
                "an empty device name (a stray comma?): expected auto, cpu, wgpu, cuda or cuda:N"
                    .into(),
            );
        }
        if s.eq_ignore_ascii_case("auto") {
            return Ok(DeviceChoice::Auto);
        }
        let (kind, ordinal) = match s.split_once(':') {
            Some((k, n)) => {
                let n: usize = n
                    .parse()
                    .map_err(|_| format!("`{s}`: the device ordinal `{n}` is not a number"))?;
                (k, n)
            }
            None => (s, 0),
        };
        let kind: DeviceKind = kind.parse().map_err(|_| {
            format!("unknown device `{s}` (expected auto, cpu, wgpu, cuda or cuda:N)")
        })?;
        if kind != DeviceKind::Cuda && ordinal != 0 {
            return Err(format!("`{s}`: only CUDA devices take an ordinal"));
        }
        Ok(DeviceChoice::Exact(kind, ordinal))
    }
}

/// An opened device of any backend.
pub enum Opened {
    Cpu,
    Cuda(Cuda),
    Wgpu(Wgpu),
}

impl DeviceChoice {
    /// Open the device; the string says which was chosen and why.
    pub fn open(self) -> Result<(Opened, String), String> {
        match self {
            DeviceChoice::Exact(DeviceKind::Cpu, _) => Ok((Opened::Cpu, "requested".into())),
            DeviceChoice::Exact(DeviceKind::Cuda, n) => match Cuda::new(n) {
                Ok(d) => Ok((Opened::Cuda(d), "requested".into())),
                Err(e) => Err(format!("--device cuda:{n}: {e}")),
            },
            DeviceChoice::Exact(DeviceKind::Wgpu, _) => match Wgpu::new() {
                Ok(d) => {
                    let why = if d.adapter_info().is_software {
                        "requested (a software adapter: slow)"
                    } else {
                        "requested"
                    };
                    Ok((Opened::Wgpu(d), why.into()))
                }
                Err(e) => Err(format!("--device wgpu: {e}")),
            },
            DeviceChoice::Auto => {
                let cuda_why = match Cuda::new(0) {
                    Ok(d) => {
                        return Ok((Opened::Cuda(d), "auto: CUDA device 0 is available".into()))
                    }
                    Err(e) => format!("no CUDA ({e})"),
                };
                let wgpu_why = match Wgpu::new() {
                    Ok(d) if !d.adapter_info().is_software => {
                        return Ok((
                            Opened::Wgpu(d),
                            format!("auto: {cuda_why}; wgpu has a hardware adapter"),
                        ))
                    }
                    Ok(d) => format!(
                        "the only wgpu adapter ({}) is a software renderer",
                        d.adapter_info().name
                    ),
                    Err(e) => format!("no wgpu adapter ({e})"),
                };
                Ok((Opened::Cpu, format!("auto: {cuda_why}; {wgpu_why}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("CPU".parse(), Ok(DeviceChoice::Exact(DeviceKind::Cpu, 0)));
        assert_eq!(
            "cuda:1".parse(),
            Ok(DeviceChoice::Exact(DeviceKind::Cuda, 1))
        );
        assert!("tpu".parse::<DeviceChoice>().unwrap_err().contains("tpu"));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("wgpu:1".parse::<DeviceChoice>().is_err());
        for empty in ["", " "] {
            let e = empty.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains("empty device name"), "{e}");
        }
    }
}
