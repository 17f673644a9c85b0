//! Line charts (loss and learning-rate curves), heatmaps (attention weights, position
//! encodings) and bar charts (next-token probabilities) drawn with `plotters`.
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
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// One labelled line of `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A rendered chart, as PNG bytes.
#[derive(Clone)]
pub struct Figure {
    png: Vec<u8>,
}

/// A size, not the bytes: where a figure is printed rather than displayed, a line of text.
impl std::fmt::Debug for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Figure (PNG, {} bytes)", self.png.len())
    }
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

/// A figure (or a line of text) shown while a cell still runs, and redrawn in place: the loss
/// plot that grows at every estimate of a training run, the progress line above it.
///
/// Plain evcxr sends a cell's images once, when the cell ends. The course's kernel (evcxr
/// with our patch, see `scripts/evcxr.patch`) also understands one line of output
/// `EVCXR_DISPLAY_DATA {json}`: it sends it to Jupyter at once as `display_data`, and later
/// ones with the same display id as `update_display_data`, which replaces what it showed. It says
/// so by setting `EVCXR_DISPLAY_DATA=1` in the cell's environment; elsewhere (another kernel,
/// a terminal) [`LiveDisplay::show`] does nothing.
#[derive(Debug, Clone)]
pub struct LiveDisplay {
    id: String,
    shown: bool,
}

impl Default for LiveDisplay {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveDisplay {
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

    /// Show `figure`, in place of what this display showed before.
    pub fn show(&mut self, figure: &Figure) {
        self.send(serde_json::json!({"image/png": figure.base64(), "text/plain": "<live figure>"}));
    }

    /// Show `text` (a progress line), in place of what this display showed before.
    pub fn show_text(&mut self, text: &str) {
        self.send(serde_json::json!({"text/plain": text}));
    }

    fn send(&mut self, data: serde_json::Value) {
        if !Self::supported() {
            return;
        }
        let message = serde_json::json!({
            "data": data,
            "metadata": {},
            "transient": {"display_id": self.id},
            "update": self.shown,
        });
        println!("EVCXR_DISPLAY_DATA {message}");
        self.shown = true;
    }
}

/// A tensor's values as tch prints them, without the `Tensor[[4, 8], Int64]` line tch's
/// `Display` ends with (the shape and kind: print `t.size()` and `t.kind()` where they matter).
/// `println!("{}", plot::values(&x))`.
pub fn values(t: &Tensor) -> String {
    let text = format!("{t}"); // `t.to_string()` would be tch's `Tensor::to_string(lo)`
    let body = match text.trim_end().rsplit_once('\n') {
        Some((body, last)) if last.starts_with("Tensor[") => body,
        _ => text.trim_end(),
    };
    body.trim_end().to_owned()
}

/// `17412` as `17,412`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A curve in one line of text, one block character per value, lowest `▁` to highest `█`:
/// `sparkline(&[4.2, 3.1, 2.6, 2.4])` is `"█▄▂▁"`. Empty for no values.
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (lo, hi) = finite_range(values.iter().copied());
    values
        .iter()
        .map(|&v| match v {
            v if !v.is_finite() => ' ',
            _ if hi - lo < 1e-12 => BARS[3],
            v => BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize],
        })
        .collect()
}

/// The lowest and highest finite value; `(∞, -∞)` when there is none.
fn finite_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 500;
const FONT: &str = "sans-serif";
/// The series' colours, in order (matplotlib's "tab10"): series `i` is drawn in
/// `COLORS[i % 10]`.
pub const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
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
    // A range narrower than 2% of its level (a flat line, or the first estimate's train and
    // val losses 3e-4 apart) would give ticks that all read the same: widen it to that.
    let pad = match (y1 - y0, y1.abs().max(y0.abs())) {
        (range, level) if range > 0.02 * level => range * 0.05,
        (range, level) if level > 0.0 => (0.02 * level - range) / 2.0 + 0.001 * level,
        _ => 1.0, // all zeros
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
            if let [point] = s.points[..] {
                // One point is no line: a dot (the first estimate of a live plot).
                chart.draw_series([Circle::new(point, 5, color.filled())]).map_err(|e| err(&e))?;
            }
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

/// One panel of a heatmap figure: a matrix of values, row 0 at the top, with names for its
/// columns and rows.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    /// `values[row][column]`; every row as long as the first.
    pub values: Vec<Vec<f64>>,
    /// What the columns and the rows are ("key position", "channel"): the axes' captions.
    pub x_desc: String,
    pub y_desc: String,
    /// A name for each column (left to right) and each row (top to bottom); empty to number
    /// them from 0.
    pub x_labels: Vec<String>,
    pub y_labels: Vec<String>,
}

impl Heatmap {
    /// A panel showing the 2-D tensor `matrix` `[rows, columns]` (on any device, any float
    /// kind), its rows and columns numbered.
    pub fn new(title: impl Into<String>, matrix: &Tensor) -> Result<Self> {
        let cols = match matrix.size()[..] {
            [r, c] if r > 0 && c > 0 => c as usize,
            _ => {
                return Err(Error::Plot(format!(
                    "a heatmap needs a non-empty 2-D tensor, got {:?}",
                    matrix.size()
                )))
            }
        };
        let flat = matrix.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?.f_view([-1])?;
        let flat = Vec::<f64>::try_from(&flat)?;
        let values = flat.chunks(cols).map(<[f64]>::to_vec).collect(); // one Vec per row
        let (x_desc, y_desc) = (String::new(), String::new());
        Ok(Self { title: title.into(), values, x_desc, y_desc, x_labels: Vec::new(), y_labels: Vec::new() })
    }

    /// Caption the axes: what the columns are, and what the rows are.
    pub fn axes(mut self, x_desc: &str, y_desc: &str) -> Self {
        (self.x_desc, self.y_desc) = (x_desc.into(), y_desc.into());
        self
    }

    /// Name each column and each row (instead of numbering them).
    pub fn labels<S: Into<String>>(
        mut self,
        x: impl IntoIterator<Item = S>,
        y: impl IntoIterator<Item = S>,
    ) -> Self {
        self.x_labels = x.into_iter().map(Into::into).collect();
        self.y_labels = y.into_iter().map(Into::into).collect();
        self
    }

    fn shape(&self) -> Result<(usize, usize)> {
        let (rows, cols) = (self.values.len(), self.values.first().map_or(0, Vec::len));
        let bad = |what: String| Err(Error::Plot(format!("heatmap '{}': {what}", self.title)));
        if rows == 0 || cols == 0 {
            return bad("no values".into());
        }
        if let Some(r) = self.values.iter().position(|row| row.len() != cols) {
            return bad(format!("row {r} has {} values, row 0 has {cols}", self.values[r].len()));
        }
        for (axis, labels, n) in [("column", &self.x_labels, cols), ("row", &self.y_labels, rows)] {
            if !labels.is_empty() && labels.len() != n {
                return bad(format!("{} {axis} labels for {n} {axis}s", labels.len()));
            }
        }
        Ok((rows, cols))
    }
}

/// Each character of `text` as an axis label, with the invisible ones made visible: a
/// newline is `⏎`, a space `␣`, a tab `⇥`.
pub fn char_labels(text: &str) -> Vec<String> {
    let visible = |c: char| match c {
        '\n' => "⏎".to_owned(),
        ' ' => "␣".to_owned(),
        '\t' => "⇥".to_owned(),
        c => c.to_string(),
    };
    text.chars().map(visible).collect()
}

/// A heatmap figure: `panels` side by side, `columns` to a row, under one `title`, on one
/// colour scale (viridis, dark violet lowest to yellow highest: the bar on the right), so
/// the panels compare at a glance.
pub fn heatmaps(title: &str, panels: &[Heatmap], columns: usize) -> Result<Figure> {
    register_fonts()?;
    let shapes = panels.iter().map(Heatmap::shape).collect::<Result<Vec<_>>>()?;
    if panels.is_empty() || columns == 0 {
        return Err(Error::Plot(format!("'{title}': no panels, or no columns to put them in")));
    }
    let (lo, hi) = match finite_range(panels.iter().flat_map(|p| p.values.iter().flatten()).copied()) {
        (lo, hi) if lo > hi => (0.0, 1.0), // nothing finite: every cell is drawn grey
        (lo, hi) if hi - lo < 1e-12 => (lo - 0.5, hi + 0.5),
        range => range,
    };

    // Panel sizes: one panel gets the width of a line chart; several, a third of it each, or
    // more when every column is named (about 15 px a name). The height follows the matrix's
    // shape, within reason.
    let columns = columns.min(panels.len());
    let panel_rows = panels.len().div_ceil(columns);
    let named_columns = panels.iter().map(|p| p.x_labels.len()).max().unwrap_or(0).min(40) as u32;
    let panel_width: u32 = if panels.len() == 1 { 800 } else { 320.max(15 * named_columns + 80) };
    let aspect = shapes.iter().map(|&(r, c)| r as f64 / c as f64).fold(0.0, f64::max).clamp(0.35, 1.0);
    let panel_height = (panel_width as f64 * aspect) as u32 + 60;
    const BAR: u32 = 100;
    const TITLE: u32 = 50;
    let (width, height) = (columns as u32 * panel_width + BAR, TITLE + panel_rows as u32 * panel_height);

    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let err = |e: &dyn std::fmt::Display| Error::Plot(format!("'{title}': {e}"));
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let root = root.titled(title, (FONT, 24).into_font().style(FontStyle::Bold)).map_err(|e| err(&e))?;
        let (grid, bar) = root.split_horizontally(width - BAR);
        let cells = grid.split_evenly((panel_rows, columns));
        for ((panel, &shape), area) in panels.iter().zip(&shapes).zip(&cells) {
            draw_heatmap(area, panel, shape, (lo, hi)).map_err(|e| err(&e))?;
        }
        draw_colour_bar(&bar, (lo, hi)).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    encode_png(&rgb, width, height)
}

/// [`heatmaps`] of one panel.
pub fn heatmap(panel: &Heatmap) -> Result<Figure> {
    heatmaps(&panel.title, &[Heatmap { title: String::new(), ..panel.clone() }], 1)
}

/// One panel of a bar chart figure: a bar per category (the probability of each candidate
/// next token, say), some of them greyed out (the ones a filter cut away).
#[derive(Debug, Clone)]
pub struct Bars {
    pub title: String,
    /// A name under each bar, left to right.
    pub labels: Vec<String>,
    pub values: Vec<f64>,
    /// `true` for the bars drawn grey; empty for none.
    pub greyed: Vec<bool>,
    /// What the bars measure: the y axis's caption.
    pub y_desc: String,
}

impl Bars {
    /// A bar of height `values[i]` named `labels[i]`, for each `i`.
    pub fn new<S: Into<String>>(
        title: impl Into<String>,
        labels: impl IntoIterator<Item = S>,
        values: &[f64],
    ) -> Self {
        let labels = labels.into_iter().map(Into::into).collect();
        Self {
            title: title.into(),
            labels,
            values: values.to_vec(),
            greyed: Vec::new(),
            y_desc: String::new(),
        }
    }

    /// Draw the bars where `greyed` is `true` in grey.
    pub fn grey(mut self, greyed: impl IntoIterator<Item = bool>) -> Self {
        self.greyed = greyed.into_iter().collect();
        self
    }

    /// Caption the y axis.
    pub fn axis(mut self, y_desc: &str) -> Self {
        self.y_desc = y_desc.into();
        self
    }

    fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Plot(format!("bars '{}': {what}", self.title)));
        match (self.values.len(), self.labels.len(), self.greyed.len()) {
            (0, _, _) => bad("no values".into()),
            (n, l, _) if l != n => bad(format!("{l} labels for {n} bars")),
            (n, _, g) if g != 0 && g != n => bad(format!("{g} grey flags for {n} bars")),
            _ if self.values.iter().any(|v| !v.is_finite()) => bad("a value is not finite".into()),
            _ => Ok(()),
        }
    }
}

/// Bar charts side by side, `columns` to a row, under one `title`, on one y scale from 0 (so
/// the panels compare at a glance).
pub fn bar_charts(title: &str, panels: &[Bars], columns: usize) -> Result<Figure> {
    register_fonts()?;
    panels.iter().try_for_each(Bars::check)?;
    if panels.is_empty() || columns == 0 {
        return Err(Error::Plot(format!("'{title}': no panels, or no columns to put them in")));
    }
    let (lo, hi) = finite_range(panels.iter().flat_map(|p| p.values.iter()).copied());
    let (lo, hi) = (lo.min(0.0), if hi > lo.min(0.0) { hi * 1.08 } else { 1.0 });
    let columns = columns.min(panels.len());
    let panel_rows = panels.len().div_ceil(columns);
    let widest = panels.iter().map(|p| p.values.len()).max().unwrap_or(1) as u32;
    // Each bar as wide as its longest name (about 7 px a character), at least 22 px.
    let longest = panels.iter().flat_map(|p| &p.labels).map(|l| l.chars().count()).max().unwrap_or(1) as u32;
    let panel_width: u32 = 300.max(widest * 22.max(7 * longest + 8) + 90);
    const PANEL_HEIGHT: u32 = 300;
    const TITLE: u32 = 50;
    let (width, height) = (columns as u32 * panel_width, TITLE + panel_rows as u32 * PANEL_HEIGHT);
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let err = |e: &dyn std::fmt::Display| Error::Plot(format!("'{title}': {e}"));
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let root = root.titled(title, (FONT, 24).into_font().style(FontStyle::Bold)).map_err(|e| err(&e))?;
        for (panel, area) in panels.iter().zip(&root.split_evenly((panel_rows, columns))) {
            draw_bars(area, panel, (lo, hi)).map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    encode_png(&rgb, width, height)
}

fn draw_bars(area: &Area, panel: &Bars, (lo, hi): (f64, f64)) -> DrawResult {
    use plotters::coord::ranged1d::SegmentValue::{CenterOf, Exact};
    let n = panel.values.len() as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 17))
        .margin(6)
        .margin_right(14)
        .x_label_area_size(26)
        .y_label_area_size(if panel.y_desc.is_empty() { 44 } else { 62 })
        .build_cartesian_2d((0..n - 1).into_segmented(), lo..hi)?;
    let name = |v: &plotters::coord::ranged1d::SegmentValue<i32>| match v {
        CenterOf(i) | Exact(i) => panel.labels.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .set_all_tick_mark_size(0)
        .y_desc(&panel.y_desc)
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13))
        .x_labels(n as usize)
        .y_labels(5)
        .x_label_formatter(&name)
        .y_label_formatter(&|y| format_tick(*y))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let bars = panel.values.iter().enumerate().map(|(i, &v)| {
        let grey = panel.greyed.get(i).copied().unwrap_or(false);
        let fill = if grey { RGBColor(200, 200, 200) } else { COLORS[0] };
        let mut bar = Rectangle::new([(Exact(i as i32), 0.0), (Exact(i as i32 + 1), v)], fill.filled());
        bar.set_margin(0, 0, 3, 3);
        bar
    });
    chart.draw_series(bars)?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error + 'static>>;

fn colour(v: f64, (lo, hi): (f64, f64)) -> RGBColor {
    match v.is_finite() {
        true => ViridisRGB.get_color_normalized(v as f32, lo as f32, hi as f32),
        false => RGBColor(200, 200, 200),
    }
}

/// One panel: a cell per value, the column and row names at the cells' centres (about ten
/// of each when there are many).
fn draw_heatmap(area: &Area, panel: &Heatmap, (rows, cols): (usize, usize), range: (f64, f64)) -> DrawResult {
    use plotters::coord::ranged1d::SegmentValue::{self, CenterOf, Exact};
    let (r, c) = (rows as i32, cols as i32);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 17))
        .margin(6)
        .margin_right(14)
        .x_label_area_size(if panel.x_desc.is_empty() { 26 } else { 44 })
        .y_label_area_size(if panel.y_desc.is_empty() { 34 } else { 52 })
        .build_cartesian_2d((0..c - 1).into_segmented(), (0..r - 1).into_segmented())?;
    // Row 0 is drawn at the top: the row of y index i is r - 1 - i. Every cell is a key point;
    // the label of every `step`-th (counted from the top left) is drawn, no tick marks.
    let (x_step, y_step) = (label_step(cols, &panel.x_labels), label_step(rows, &panel.y_labels));
    let name = |labels: &[String], i: usize, step: usize| match i % step {
        0 => labels.get(i).cloned().unwrap_or_else(|| i.to_string()),
        _ => String::new(),
    };
    let x_label = |v: &SegmentValue<i32>| match v {
        CenterOf(i) | Exact(i) if (0..c).contains(i) => name(&panel.x_labels, *i as usize, x_step),
        _ => String::new(),
    };
    let y_label = |v: &SegmentValue<i32>| match v {
        CenterOf(i) | Exact(i) if (0..r).contains(i) => name(&panel.y_labels, (r - 1 - i) as usize, y_step),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .set_all_tick_mark_size(0)
        .x_desc(&panel.x_desc)
        .y_desc(&panel.y_desc)
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13))
        .x_labels(cols)
        .y_labels(rows)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .draw()?;
    let cells = panel.values.iter().enumerate().flat_map(|(row, values)| {
        let y = r - 1 - row as i32;
        values.iter().enumerate().map(move |(col, &v)| {
            let x = col as i32;
            Rectangle::new([(Exact(x), Exact(y)), (Exact(x + 1), Exact(y + 1))], colour(v, range).filled())
        })
    });
    chart.draw_series(cells)?;
    Ok(())
}

/// Label every how many cells: each one up to 40 names, else a round step leaving about ten
/// labels (numbers, or names of a long axis).
fn label_step(n: usize, names: &[String]) -> usize {
    if !names.is_empty() && n <= 40 {
        return 1;
    }
    let steps = [1, 2, 5].into_iter().cycle().zip((0..).flat_map(|e| [10usize.pow(e); 3]));
    steps.map(|(m, p)| m * p).find(|&step| n.div_ceil(step) <= 10).unwrap_or(n)
}

/// The colour scale: a vertical bar from the lowest value (bottom) to the highest.
fn draw_colour_bar(area: &Area, (lo, hi): (f64, f64)) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(60)
        .margin_right(8)
        .right_y_label_area_size(56)
        .build_cartesian_2d(0.0..1.0, lo..hi)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .label_style((FONT, 13))
        .y_labels(6)
        .y_label_formatter(&|y| format_tick(*y))
        .draw()?;
    const STEPS: usize = 100;
    let step = (hi - lo) / STEPS as f64;
    let bands = (0..STEPS).map(|k| {
        let y = lo + step * k as f64;
        Rectangle::new([(0.0, y), (1.0, y + step)], colour(y + step / 2.0, (lo, hi)).filled())
    });
    chart.draw_series(bands)?;
    Ok(())
}

/// Axis numbers without needless decimals: `3000`, `2.45`, `1e-4`; a tick that is zero up to
/// float rounding (the axis' steps added up: `2.8e-17`) is `0`.
fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        "0".into()
    } else if (1e-2..1e5).contains(&a) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn png_size(figure: &Figure) -> (u32, u32) {
        let info = png::Decoder::new(figure.png()).read_info().expect("a PNG").info().clone();
        (info.width, info.height)
    }

    #[test]
    fn values_are_printed_without_the_shape_footer() {
        let m = Tensor::arange(6, (Kind::Int64, Device::Cpu)).view([2, 3]);
        assert!(format!("{m}").trim_end().ends_with("Tensor[[2, 3], Int64]"), "{m}");
        assert_eq!(values(&m), "[[0, 1, 2],\n [3, 4, 5]]");
        assert_eq!(values(&Tensor::from_slice(&[0.5f32, -1.0])), "[ 0.5000, -1.0000]");
    }

    #[test]
    fn tick_labels_are_short_and_a_rounded_zero_is_zero() {
        let labels: Vec<String> = [3000.0, 2.45, 1e-4, 0.0, 2.8e-17, -0.1].map(format_tick).to_vec();
        assert_eq!(labels, ["3000", "2.45", "1e-4", "0", "0", "-0.1"]);
    }

    #[test]
    fn heatmaps_draw_one_panel_per_matrix_on_one_scale() {
        let m = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]);
        let panel = Heatmap::new("m", &m).unwrap();
        assert_eq!(
            panel.values,
            vec![vec![0.0, 1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0, 7.0], vec![8.0, 9.0, 10.0, 11.0]]
        );
        let named = panel.clone().axes("key", "query").labels(["a", "b", "c", "d"], ["x", "y", "z"]);
        assert_eq!((named.x_labels.len(), named.y_desc.as_str()), (4, "query"));
        let one = heatmap(&named).unwrap();
        let four = heatmaps("four", &vec![panel; 4], 2).unwrap();
        let ((w1, _), (w4, h4)) = (png_size(&one), png_size(&four));
        assert_eq!((w1, w4), (800 + 100, 2 * 320 + 100));
        assert!(h4 > 2 * 200, "two rows of panels: {h4} px");
    }

    #[test]
    fn bad_heatmaps_are_errors() {
        let err = |r: Result<Figure>| r.unwrap_err().to_string();
        assert!(Heatmap::new("v", &Tensor::ones([5], (Kind::Float, Device::Cpu)))
            .unwrap_err()
            .to_string()
            .contains("2-D"));
        let panel = Heatmap::new("m", &Tensor::ones([2, 3], (Kind::Float, Device::Cpu))).unwrap();
        assert!(err(heatmap(&panel.clone().labels(["a", "b"], ["x", "y"])))
            .contains("2 column labels for 3 columns"));
        let ragged = Heatmap { values: vec![vec![1.0, 2.0], vec![3.0]], ..panel.clone() };
        assert!(err(heatmap(&ragged)).contains("row 1 has 1 values"));
        assert!(err(heatmaps("none", &[], 2)).contains("no panels"));
        // Non-finite values are drawn grey, not refused.
        let nan = Heatmap { values: vec![vec![f64::NAN, 1.0]], ..panel };
        heatmap(&nan).unwrap();
    }

    #[test]
    fn bar_charts_share_one_scale_and_refuse_what_they_cannot_draw() {
        let bars =
            Bars::new("p", ["a", "b", "c"], &[0.5, 0.3, 0.2]).grey([false, false, true]).axis("probability");
        let figure = bar_charts("three", &[bars.clone(), bars.clone(), bars.clone()], 2).unwrap();
        assert_eq!(png_size(&figure), (2 * 300, 50 + 2 * 300));
        let err = |b: Bars| bar_charts("x", &[b], 1).unwrap_err().to_string();
        assert!(err(Bars::new("p", ["a"], &[0.5, 0.5])).contains("1 labels for 2 bars"));
        assert!(err(bars.clone().grey([true])).contains("1 grey flags for 3 bars"));
        assert!(err(Bars::new("p", ["a"], &[f64::NAN])).contains("not finite"));
        assert!(err(Bars::new("p", Vec::<String>::new(), &[])).contains("no values"));
        assert!(bar_charts("none", &[], 1).unwrap_err().to_string().contains("no panels"));
    }

    #[test]
    fn labels_make_whitespace_visible_and_thin_out_long_axes() {
        assert_eq!(char_labels("a b\n"), ["a", "␣", "b", "⏎"]);
        let names = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!((label_step(16, &names(16)), label_step(16, &[])), (1, 2));
        assert_eq!((label_step(64, &[]), label_step(128, &[]), label_step(100, &names(100))), (10, 20, 10));
    }
}
