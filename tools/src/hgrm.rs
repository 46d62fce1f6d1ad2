//! HdrHistogram's percentile-distribution text (`.hgrm`), the format the
//! HdrHistogram tools and their plotters read (Java's
//! `outputPercentileDistribution`): value, percentile, total count,
//! 1/(1-percentile), then the mean, standard deviation, max and count.
//! The latency tools write one file per measured path with `--hgrm DIR`;
//! `ks-plot` draws them.

use std::io::Write;
use std::path::Path;

use hdrhistogram::Histogram;

/// Half-distance ticks per percentile halving (HdrHistogram's default).
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Writes `h` to `path`; values are divided by `scale` (1000.0: ns in the
/// histogram, µs in the file).
pub fn write(path: &Path, h: &Histogram<u64>, scale: f64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / scale;
        if q < 1.0 {
            writeln!(
                out,
                "{value:>12.3} {q:>2.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - q)
            )?;
        } else {
            writeln!(out, "{value:>12.3} {q:>2.12} {total:>10}")?;
        }
    }
    writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    )?;
    writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / scale,
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    )?;
    out.flush()
}

/// One line of a `.hgrm` file: (value, percentile).
pub fn parse(text: &str) -> Result<Vec<(f64, f64)>, String> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("Value") {
            continue;
        }
        let mut cols = line.split_whitespace();
        let (Some(v), Some(q)) = (cols.next(), cols.next()) else {
            return Err(format!("line {}: expected value and percentile", n + 1));
        };
        let v: f64 = v
            .parse()
            .map_err(|_| format!("line {}: value {v:?} is not a number", n + 1))?;
        let q: f64 = q
            .parse()
            .map_err(|_| format!("line {}: percentile {q:?} is not a number", n + 1))?;
        rows.push((v, q));
    }
    if rows.is_empty() {
        return Err("no percentile rows (is it an .hgrm file?)".into());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_distribution_reads_back_with_its_percentiles() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.hgrm");
        write(&p, &h, 1000.0).unwrap();
        let rows = parse(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let at = |q: f64| rows.iter().find(|r| r.1 >= q).unwrap().0;
        // 10..100,000 ns uniformly: the median is ~50 µs, p99 ~99 µs.
        assert!((at(0.5) - 50.0).abs() < 0.2, "{}", at(0.5));
        assert!((at(0.99) - 99.0).abs() < 0.3, "{}", at(0.99));
        assert_eq!(rows.last().unwrap().1, 1.0);
        assert!(parse("garbage line\n").is_err());
    }
}
