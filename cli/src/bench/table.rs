//! The result table of [`super::run`] and its aligned text form.

use super::cases::{Bound, CaseSpec};
use tessera::Result;
use tessera::{DType, DeviceKind};

/// A ceiling measured in the run: the peer GEMM at a large square shape
/// (TFLOP/s) or a large device copy (GB/s).
#[derive(Debug, Clone, PartialEq)]
pub struct Ceiling {
    /// What was measured, e.g. `gemm f32 1024³`.
    pub what: String,
    /// The rate, or why there is none.
    pub value: std::result::Result<f64, String>,
    /// `TFLOP/s` or `GB/s`.
    pub unit: &'static str,
}

impl Ceiling {
    pub(crate) fn new(
        what: String,
        value: std::result::Result<f64, String>,
        unit: &'static str,
    ) -> Self {
        Self { what, value, unit }
    }
    /// The higher of two measurements of the same ceiling.
    pub(crate) fn best(self, other: Self) -> Self {
        match (&self.value, &other.value) {
            (Ok(a), Ok(b)) if b > a => other,
            (Err(_), Ok(_)) => other,
            _ => self,
        }
    }
    pub(crate) fn skipped() -> Self {
        Self {
            what: "-".into(),
            value: Err("no case in this run needs it".into()),
            unit: "",
        }
    }
}

/// The peer column of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerCell {
    /// The peer ran at the same shape in `ms` milliseconds.
    Measured { name: String, ms: f64 },
    /// The peer could not run here.
    Unavailable { name: String, reason: String },
    /// The peer lives outside this run (e.g. PyTorch, see scripts/).
    External(&'static str),
    /// No peer (the op itself failed).
    None,
}

impl PeerCell {
    pub(crate) fn from_result(name: String, r: std::result::Result<f64, String>) -> Self {
        match r {
            Ok(ms) => PeerCell::Measured { name, ms },
            Err(reason) => PeerCell::Unavailable { name, reason },
        }
    }
}

/// One measured case.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    pub op: String,
    pub shape: String,
    pub backend: DeviceKind,
    pub dtype: DType,
    pub bound: Bound,
    /// Median milliseconds per call, or the error the op returned.
    pub median_ms: std::result::Result<f64, String>,
    /// TFLOP/s (compute-bound) or GB/s (memory-bound).
    pub rate: Option<f64>,
    /// `rate` as a percentage of the run's ceiling of the same kind.
    pub pct_ceiling: Option<f64>,
    pub peer: PeerCell,
}

impl BenchRow {
    pub(crate) fn new(
        spec: &CaseSpec,
        dtype: DType,
        backend: DeviceKind,
        measured: Result<f64>,
        peer: PeerCell,
    ) -> Self {
        let bound = spec.bound();
        let median_ms = measured.map_err(|e| e.to_string());
        let rate = median_ms.as_ref().ok().and_then(|&ms| {
            let work = match bound {
                Bound::Compute => spec.flops() / 1e9,
                Bound::Memory => spec.bytes(dtype) / 1e6,
            };
            (ms > 0.0 && work > 0.0).then(|| work / ms)
        });
        Self {
            op: spec.op_label(),
            shape: spec.shape_label(dtype),
            backend,
            dtype,
            bound,
            median_ms,
            rate,
            pct_ceiling: None,
            peer,
        }
    }

    /// `peer ms / tessera ms` (above 1: tessera is faster).
    pub fn peer_ratio(&self) -> Option<f64> {
        match (&self.peer, &self.median_ms) {
            (PeerCell::Measured { ms: peer, .. }, Ok(ms)) if *ms > 0.0 => Some(peer / ms),
            _ => None,
        }
    }

    fn unit(&self) -> &'static str {
        match self.bound {
            Bound::Compute => "TFLOP/s",
            Bound::Memory => "GB/s",
        }
    }
}

/// The whole run: device, ceilings, rows, notes.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchTable {
    /// `Device::describe` of the device measured.
    pub device: String,
    pub dtype: DType,
    /// GEMM ceiling (TFLOP/s).
    pub compute: Ceiling,
    /// Copy ceiling (GB/s).
    pub memory: Ceiling,
    pub rows: Vec<BenchRow>,
    pub notes: Vec<String>,
}

impl BenchTable {
    /// Fill each row's percentage of its ceiling.
    pub(crate) fn fill_ceilings(&mut self) {
        for row in &mut self.rows {
            let ceiling = match row.bound {
                Bound::Compute => &self.compute,
                Bound::Memory => &self.memory,
            };
            row.pct_ceiling = match (row.rate, &ceiling.value) {
                (Some(r), Ok(c)) if *c > 0.0 => Some(100.0 * r / c),
                _ => None,
            };
        }
    }
}

fn fmt_ceiling(c: &Ceiling) -> String {
    match &c.value {
        Ok(v) => format!("{v:.3} {} ({})", c.unit, c.what),
        Err(e) if c.unit.is_empty() => format!("not measured ({e})"),
        Err(e) => format!("n/a ({}: {e})", c.what),
    }
}

/// Milliseconds: three decimals, or three significant digits below 0.1 ms (a
/// per-op cost of microseconds stays readable).
fn fmt_ms(ms: f64) -> String {
    if !(ms > 0.0 && ms < 0.1) {
        return format!("{ms:.3}");
    }
    let decimals = (-ms.log10()).ceil() as usize + 2;
    format!("{ms:.decimals$}")
}

fn fmt_rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

impl std::fmt::Display for BenchTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "device: {}   dtype: {}", self.device, self.dtype)?;
        writeln!(f, "compute ceiling: {}", fmt_ceiling(&self.compute))?;
        writeln!(f, "memory ceiling:  {}", fmt_ceiling(&self.memory))?;
        writeln!(f)?;
        let header = [
            "op",
            "shape",
            "backend",
            "dtype",
            "median ms",
            "rate",
            "unit",
            "% ceil",
            "vs peer",
        ];
        let cells: Vec<[String; 9]> = self
            .rows
            .iter()
            .map(|r| {
                let (ms, rate) = match &r.median_ms {
                    Ok(ms) => (
                        fmt_ms(*ms),
                        r.rate.map(fmt_rate).unwrap_or_else(|| "-".into()),
                    ),
                    Err(_) => ("error".into(), "-".into()),
                };
                let pct = r
                    .pct_ceiling
                    .map(|p| format!("{p:.1}%"))
                    .unwrap_or_else(|| "-".into());
                let peer = match (&r.median_ms, &r.peer) {
                    (Err(e), _) => format!("error: {e}"),
                    (Ok(_), PeerCell::Measured { name, ms }) => match r.peer_ratio() {
                        Some(x) => format!("{x:.2}x {name} ({} ms)", fmt_ms(*ms)),
                        None => format!("n/a ({name})"),
                    },
                    (Ok(_), PeerCell::Unavailable { name, reason }) => {
                        format!("n/a ({name}: {reason})")
                    }
                    (Ok(_), PeerCell::External(what)) => format!("n/a (peer: {what})"),
                    (Ok(_), PeerCell::None) => "-".into(),
                };
                [
                    r.op.clone(),
                    r.shape.clone(),
                    r.backend.to_string(),
                    r.dtype.to_string(),
                    ms,
                    rate,
                    r.unit().to_string(),
                    pct,
                    peer,
                ]
            })
            .collect();
        let mut width = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        // Text columns left-aligned, numbers right-aligned; the last column unpadded.
        let right = [false, false, false, false, true, true, false, true, false];
        let line = |f: &mut std::fmt::Formatter<'_>, row: &[&str]| -> std::fmt::Result {
            let mut s = String::new();
            for (i, c) in row.iter().enumerate() {
                let pad = width[i].saturating_sub(c.chars().count());
                if i + 1 == row.len() {
                    s.push_str(c);
                } else if right[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                    s.push_str("  ");
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad + 2));
                }
            }
            writeln!(f, "{}", s.trim_end())
        };
        line(f, &header)?;
        let rule: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
        line(f, &rule.iter().map(String::as_str).collect::<Vec<_>>())?;
        for row in &cells {
            line(f, &row.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        writeln!(
            f,
            "note: median of the repetitions; vs peer = peer ms / tessera ms at the same shape \
             (above 1x tessera is faster); memory-bound peers copy the same number of bytes"
        )?;
        writeln!(
            f,
            "note: % ceil of a memory-bound op is against the large copy above; a working set \
             that fits in cache can exceed 100%"
        )
    }
}
