//! Line charts (loss and learning-rate curves) drawn with `plotters`.
//!
//! A [`Figure`] is a PNG image in memory. As the last value of a notebook cell it displays
//! inline: evcxr calls [`Figure::evcxr_display`], which hands Jupyter an `image/png`, the
//! form JupyterLab, VS Code and code hosts' notebook viewers all show (raw inline SVG is
//! hidden by untrusted notebooks). [`Figure::save`] writes it to a file.
//!
//! Text is drawn with the DejaVu Sans font compiled into the library, so a plot looks the
//! same on every machine, with or without system fonts.

use crate::{Error, Result};
use base64::Engine;
use plotters::prelude::*;
use std::path::Path;

/// One labelled line of `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A rendered chart, as PNG bytes.
#[derive(Debug, Clone)]
pub struct Figure {
    png: Vec<u8>,
}

impl Figure {
    pub fn png(&self) -> &[u8] {
        &self.png
    }

    /// Write the PNG to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomic(path.as_ref(), &self.png)
    }

    /// Show the figure as the output of a notebook cell (the protocol evcxr defines).
    pub fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT image/png\n{}\nEVCXR_END_CONTENT", self.base64());
    }

    fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.png)
    }
}

/// A figure shown while a cell still runs, and redrawn in place: the loss plot that grows at
/// every estimate of a training run.
///
/// Plain evcxr sends a cell's images once, when the cell ends. The course's kernel (evcxr
/// with our patch, see `scripts/evcxr.patch`) also understands one line of output
/// `EVCXR_DISPLAY_DATA {json}`: it sends it to Jupyter at once as `display_data`, and later
/// ones with the same display id as `update_display_data`, which replaces the image. It says
/// so by setting `EVCXR_DISPLAY_DATA=1` in the cell's environment; elsewhere (another kernel,
/// a terminal) [`LiveFigure::show`] does nothing.
#[derive(Debug, Clone)]
pub struct LiveFigure {
    id: String,
    shown: bool,
}

impl Default for LiveFigure {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveFigure {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self { id: format!("llm-live-{}-{n}-{}", std::process::id(), nanos.as_nanos()), shown: false }
    }

    /// Whether this process's output is read by a kernel that shows live figures.
    pub fn supported() -> bool {
        std::env::var_os("EVCXR_DISPLAY_DATA").is_some_and(|v| v == "1")
    }

    /// Show `figure`, in place of this live figure's previous one.
    pub fn show(&mut self, figure: &Figure) {
        if !Self::supported() {
            return;
        }
        let message = serde_json::json!({
            "data": {"image/png": figure.base64(), "text/plain": "<live figure>"},
            "metadata": {},
            "transient": {"display_id": self.id},
            "update": self.shown,
        });
        println!("EVCXR_DISPLAY_DATA {message}");
        self.shown = true;
    }
}

/// A curve in one line of text, one block character per value, lowest `▁` to highest `█`:
/// `sparkline(&[4.2, 3.1, 2.6, 2.4])` is `"█▄▂▁"`. Empty for no values.
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    values
        .iter()
        .map(|&v| match v {
            v if !v.is_finite() => ' ',
            _ if hi - lo < 1e-12 => BARS[3],
            v => BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize],
        })
        .collect()
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 500;
const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn register_fonts() -> Result<()> {
    static FONTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *FONTS.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ok.then_some(()).ok_or_else(|| Error::Plot("could not load the DejaVu Sans font".into()))
}

/// A line chart of `series` with a title, labelled axes and a legend.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<Figure> {
    register_fonts()?;
    let points =
        || series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return Err(Error::Plot(format!("'{title}': nothing to plot (no finite points)")));
    }
    // Give single points and flat lines some room, and pad the y range by 5%.
    if x1 - x0 < 1e-12 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let pad = match (y1 - y0, y1.abs()) {
        (range, _) if range > 0.0 => range * 0.05,
        (_, level) if level > 0.0 => level * 0.05, // a flat line: 5% of its level
        _ => 1.0,                                  // all zeros
    };
    (y0, y1) = (y0 - pad, y1 + pad);

    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let err = |e: &dyn std::fmt::Display| Error::Plot(format!("'{title}': {e}"));
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 26).into_font().style(FontStyle::Bold))
            .margin(16)
            .margin_right(40)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 15))
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|x| format_tick(*x))
            .y_label_formatter(&|y| format_tick(*y))
            .light_line_style(RGBColor(245, 245, 245))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(&s.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    encode_png(&rgb, WIDTH, HEIGHT)
}

/// Axis numbers without needless decimals: `3000`, `2.45`, `1e-4`.
fn format_tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-2..1e5).contains(&a) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        let s = format!("{v:.1e}"); // 1.5e-4; 1.0e-3 -> 1e-3
        s.replace(".0e", "e")
    }
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Figure> {
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let result = encoder.write_header().and_then(|mut w| w.write_image_data(rgb));
    result.map_err(|e| Error::Plot(format!("PNG encoding: {e}")))?;
    Ok(Figure { png })
}
