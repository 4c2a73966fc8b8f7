//! The PNG chart of a run (plotters, bitmap backend): sessions up on top,
//! memory below (gateways' RSS, load generator RSS, kernel slab), both
//! against seconds since the run started.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Sample;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChartError {
    #[error("no samples to draw")]
    Empty,
    #[error("drawing: {0}")]
    Draw(String),
}

fn draw_err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// A memory line: legend, colour, and which field of a sample it plots.
type Line = (&'static str, RGBColor, fn(&Sample) -> u64);

/// Draws `series` into the PNG at `path`.
pub fn draw(series: &[Sample], path: &Path) -> Result<(), ChartError> {
    let last = series.last().ok_or(ChartError::Empty)?;
    let t_max = last.t_s.max(1.0);
    let up_max = series
        .iter()
        .map(|s| s.sessions_up)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mib = |k: u64| k as f64 / 1024.0;
    let mem_max = series
        .iter()
        .map(|s| {
            mib(s.gateway_rss_kib)
                .max(mib(s.loadgen_rss_kib))
                .max(mib(s.slab_kib))
        })
        .fold(1.0, f64::max);

    let root = BitMapBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let (top, bottom) = root.split_vertically(340);

    let mut c = ChartBuilder::on(&top)
        .caption("sessions up", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..up_max * 1.05)
        .map_err(draw_err)?;
    c.configure_mesh().x_desc("s").draw().map_err(draw_err)?;
    c.draw_series(LineSeries::new(
        series.iter().map(|s| (s.t_s, s.sessions_up as f64)),
        &BLUE,
    ))
    .map_err(draw_err)?;

    let mut m = ChartBuilder::on(&bottom)
        .caption("memory (MiB)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..mem_max * 1.05)
        .map_err(draw_err)?;
    m.configure_mesh().x_desc("s").draw().map_err(draw_err)?;
    let lines: [Line; 3] = [
        ("gateways RSS", RED, |s| s.gateway_rss_kib),
        ("loadgen RSS", GREEN, |s| s.loadgen_rss_kib),
        ("kernel slab", BLACK, |s| s.slab_kib),
    ];
    for (name, color, f) in lines {
        m.draw_series(LineSeries::new(
            series.iter().map(|s| (s.t_s, mib(f(s)))),
            &color,
        ))
        .map_err(draw_err)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    m.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_and_refuses_nothing_to_draw() {
        let dir = std::env::temp_dir().join(format!("loadgen-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.png");
        let series: Vec<Sample> = (0..10u32)
            .map(|i| Sample {
                t_s: f64::from(i),
                sessions_up: u64::from(i) * 100,
                gateway_rss_kib: 1000 + u64::from(i) * 10,
                loadgen_rss_kib: 2000,
                slab_kib: 50_000,
            })
            .collect();
        draw(&series, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(matches!(draw(&[], &path), Err(ChartError::Empty)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
