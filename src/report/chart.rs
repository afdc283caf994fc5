/*!
Chart geometry, decided once and drawn twice. [`layout`] turns a [`Chart`] into plain [`Shape`]s
(lines, dots, bars, text with an anchor) in a box whose origin is the top-left corner and whose y
grows downwards, as in SVG and in krilla; [`svg`] draws them for the HTML report and the dashboard,
and the PDF renderer draws the same shapes as vector paths. So a chart cannot look one way on
paper and another on screen.

Judgement is drawn the same way everywhere: a bad point (a failed drill) is a red cross, not a dot,
and the line does not pass through it, because a failed restore has no restore time to join.
*/

use std::fmt::Write as _;

use super::doc::{Chart, ChartKind, Tone, Unit};

/// An sRGB colour. The report's palette is the `const`s below; both renderers use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Colour(pub u8, pub u8, pub u8);

impl Colour {
    pub const GOOD: Colour = Colour(0x1a, 0x7f, 0x37);
    pub const WARNING: Colour = Colour(0x9a, 0x67, 0x00);
    pub const BAD: Colour = Colour(0xcf, 0x22, 0x2e);
    /// Body text.
    pub const TEXT: Colour = Colour(0x1f, 0x23, 0x28);
    /// Secondary text: notes, labels, axes.
    pub const GREY: Colour = Colour(0x57, 0x60, 0x6a);
    /// Gridlines and table rules.
    pub const RULE: Colour = Colour(0xd0, 0xd7, 0xde);
    /// Table header background.
    pub const SHADE: Colour = Colour(0xf6, 0xf8, 0xfa);
    /// A series that carries no judgement (the restore-time line, size bars).
    pub const SERIES: Colour = Colour(0x09, 0x69, 0xda);

    /// The colour a tone is drawn in; neutral is body text.
    pub fn of(tone: Tone) -> Colour {
        match tone {
            Tone::Neutral => Colour::TEXT,
            Tone::Good => Colour::GOOD,
            Tone::Warning => Colour::WARNING,
            Tone::Bad => Colour::BAD,
        }
    }

    /// `#1a7f37`.
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// One thing to draw. Coordinates are points (PDF) or CSS pixels (SVG), origin top-left.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    Line {
        from: (f64, f64),
        to: (f64, f64),
        colour: Colour,
        width: f64,
        dashed: bool,
    },
    /// Joined points, stroked, not filled.
    Polyline {
        points: Vec<(f64, f64)>,
        colour: Colour,
        width: f64,
    },
    Rect {
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        fill: Colour,
    },
    Circle {
        cx: f64,
        cy: f64,
        r: f64,
        fill: Colour,
    },
    /// `y` is the baseline.
    Text {
        x: f64,
        y: f64,
        text: String,
        anchor: Anchor,
        size: f64,
        bold: bool,
        colour: Colour,
    },
}

const TITLE_SIZE: f64 = 10.0;
const LABEL_SIZE: f64 = 7.5;

fn text(x: f64, y: f64, s: impl Into<String>, anchor: Anchor, size: f64, colour: Colour) -> Shape {
    Shape::Text {
        x,
        y,
        text: s.into(),
        anchor,
        size,
        bold: false,
        colour,
    }
}

fn line(from: (f64, f64), to: (f64, f64), colour: Colour, width: f64) -> Shape {
    Shape::Line {
        from,
        to,
        colour,
        width,
        dashed: false,
    }
}

/// A red cross: a failed point, readable as "not a dot" in a grey print too.
fn cross(cx: f64, cy: f64, r: f64, colour: Colour) -> [Shape; 2] {
    [
        line((cx - r, cy - r), (cx + r, cy + r), colour, 1.6),
        line((cx - r, cy + r), (cx + r, cy - r), colour, 1.6),
    ]
}

/// The chart's shapes in a `width` x `height` box: title, axes, gridlines, ticks, the series, the
/// threshold, or the `empty` sentence when there is nothing to draw.
pub fn layout(chart: &Chart, width: f64, height: f64) -> Vec<Shape> {
    let mut out = Vec::new();
    let mut title = text(
        0.0,
        TITLE_SIZE,
        &chart.title,
        Anchor::Start,
        TITLE_SIZE,
        Colour::TEXT,
    );
    if let Shape::Text { bold, .. } = &mut title {
        *bold = true;
    }
    out.push(title);

    let (left, right, top, bottom) = (52.0, 8.0, TITLE_SIZE + 12.0, 16.0);
    let (pw, ph) = (
        (width - left - right).max(1.0),
        (height - top - bottom).max(1.0),
    );
    let base = top + ph;
    let points: Vec<_> = chart
        .points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    if points.is_empty() {
        out.push(line((left, base), (left + pw, base), Colour::RULE, 0.8));
        out.push(text(
            left + pw / 2.0,
            top + ph / 2.0,
            &chart.empty,
            Anchor::Middle,
            9.0,
            Colour::GREY,
        ));
        return out;
    }

    let top_value = points
        .iter()
        .map(|p| p.y)
        .chain(chart.threshold.as_ref().map(|t| t.y))
        .fold(0.0_f64, f64::max);
    let ticks = y_ticks(chart.unit, top_value);
    let y_max = *ticks.last().unwrap_or(&1.0);
    let y_of = |v: f64| base - (v.clamp(0.0, y_max) / y_max) * ph;
    for &t in &ticks {
        let y = y_of(t);
        let colour = if t == 0.0 { Colour::GREY } else { Colour::RULE };
        out.push(line((left, y), (left + pw, y), colour, 0.6));
        out.push(text(
            left - 4.0,
            y + LABEL_SIZE * 0.35,
            format_value(chart.unit, t),
            Anchor::End,
            LABEL_SIZE,
            Colour::GREY,
        ));
    }

    let (x0, x1) = x_bounds(chart, &points);
    let x_of = |x: f64| left + ((x - x0) / (x1 - x0)).clamp(0.0, 1.0) * pw;
    for (x, label) in x_ticks(x0, x1, (pw / 36.0).floor().max(2.0) as usize) {
        let px = x_of(x);
        out.push(line((px, base), (px, base + 3.0), Colour::GREY, 0.6));
        out.push(text(
            px,
            base + 4.0 + LABEL_SIZE,
            label,
            Anchor::Middle,
            LABEL_SIZE,
            Colour::GREY,
        ));
    }

    let mut sorted = points.clone();
    sorted.sort_by(|a, b| a.x.total_cmp(&b.x));
    match chart.kind {
        ChartKind::Bars => {
            let slot = pw * 86_400.0 / (x1 - x0);
            let bw = (slot * 0.7).clamp(1.5, 14.0);
            for p in &sorted {
                let y = y_of(p.y);
                let colour = match p.tone {
                    Tone::Neutral | Tone::Good => Colour::SERIES,
                    t => Colour::of(t),
                };
                out.push(Shape::Rect {
                    x: x_of(p.x) - bw / 2.0,
                    y,
                    w: bw,
                    h: (base - y).max(0.5),
                    fill: colour,
                });
                if p.tone == Tone::Bad {
                    out.extend(cross(x_of(p.x), y - 6.0, 3.0, Colour::BAD));
                }
            }
        }
        ChartKind::Line => {
            let joined: Vec<_> = sorted
                .iter()
                .filter(|p| p.tone != Tone::Bad)
                .map(|p| (x_of(p.x), y_of(p.y)))
                .collect();
            if joined.len() > 1 {
                out.push(Shape::Polyline {
                    points: joined,
                    colour: Colour::SERIES,
                    width: 1.4,
                });
            }
            for p in &sorted {
                let (cx, cy) = (x_of(p.x), y_of(p.y));
                match p.tone {
                    Tone::Bad => out.extend(cross(cx, cy, 3.5, Colour::BAD)),
                    Tone::Warning => out.push(Shape::Circle {
                        cx,
                        cy,
                        r: 2.6,
                        fill: Colour::WARNING,
                    }),
                    _ => out.push(Shape::Circle {
                        cx,
                        cy,
                        r: 2.2,
                        fill: Colour::SERIES,
                    }),
                }
            }
        }
    }

    if let Some(t) = &chart.threshold {
        let y = y_of(t.y);
        out.push(Shape::Line {
            from: (left, y),
            to: (left + pw, y),
            colour: Colour::BAD,
            width: 0.9,
            dashed: true,
        });
        out.push(text(
            left + pw - 2.0,
            y - 3.0,
            &t.label,
            Anchor::End,
            LABEL_SIZE,
            Colour::BAD,
        ));
    }
    if sorted.iter().any(|p| p.tone == Tone::Bad) {
        out.extend(cross(width - 48.0, TITLE_SIZE - 3.0, 3.0, Colour::BAD));
        out.push(text(
            width - 42.0,
            TITLE_SIZE,
            "failed",
            Anchor::Start,
            LABEL_SIZE + 0.5,
            Colour::BAD,
        ));
    }
    out
}

/// The x extent: the chart's period, widened to its points if one falls outside it.
fn x_bounds(chart: &Chart, points: &[&super::doc::Point]) -> (f64, f64) {
    let (mut x0, mut x1) = chart.x_range;
    if !(x0.is_finite() && x1.is_finite() && x1 > x0) {
        x0 = points.iter().map(|p| p.x).fold(f64::INFINITY, f64::min);
        x1 = points.iter().map(|p| p.x).fold(f64::NEG_INFINITY, f64::max);
    }
    if x1 - x0 < 86_400.0 {
        x1 = x0 + 86_400.0;
    }
    (x0, x1)
}

/// Round y ticks from 0 to at least `max`: steps a person would pick for the unit (30 s, 5 min,
/// 1 h; 256 MiB, 1 GiB; 1, 2, 5 x 10^n), four to six of them.
pub fn y_ticks(unit: Unit, max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let steps: Vec<f64> = match unit {
        Unit::Seconds => {
            let mut s = vec![
                1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
                7200.0, 10800.0, 21600.0, 43200.0,
            ];
            s.extend((0..12).map(|i| 86_400.0 * [1.0, 2.0, 5.0][i % 3] * 10f64.powi(i as i32 / 3)));
            s
        }
        Unit::Bytes => (0..7)
            .flat_map(|p| {
                [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
                    .map(|m| m * 1024f64.powi(p))
            })
            .collect(),
        Unit::Count => (0..16)
            .flat_map(|p| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(p)))
            .collect(),
    };
    let step = steps
        .iter()
        .copied()
        .find(|s| max / s <= 5.0)
        .unwrap_or_else(|| max / 5.0);
    let n = (max / step).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// A y value in its unit: `45 s`, `2 min`, `1 h 5 min`, `1.5 GiB`, `1200`.
pub fn format_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Seconds => {
            let s = v.round().max(0.0) as u64;
            let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
            let parts: Vec<String> = if s < 60 {
                vec![format!("{sec} s")]
            } else if s < 3600 {
                vec![format!("{m} min"), format!("{sec} s")]
            } else if s < 86_400 {
                vec![format!("{h} h"), format!("{m} min")]
            } else {
                vec![format!("{d} d"), format!("{h} h")]
            };
            let kept: Vec<&str> = parts
                .iter()
                .enumerate()
                .filter(|(i, p)| *i == 0 || !p.starts_with("0 "))
                .map(|(_, p)| p.as_str())
                .collect();
            kept.join(" ")
        }
        Unit::Bytes => crate::units::bytes(v.max(0.0) as u64).replace(".0 ", " "),
        Unit::Count => {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        }
    }
}

/// Ticks on the x axis at UTC midnights: every day, or every few days, labelled with the day of
/// the month (the month's name where it changes); month starts for long periods.
pub fn x_ticks(x0: f64, x1: f64, max_labels: usize) -> Vec<(f64, String)> {
    use jiff::{Timestamp, tz::TimeZone};
    let day = 86_400.0;
    let date = |x: f64| {
        Timestamp::from_second(x.floor() as i64)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(TimeZone::UTC)
            .date()
    };
    let span_days = (x1 - x0) / day;
    let mut out = Vec::new();
    if span_days <= 92.0 {
        let step = [1.0, 2.0, 3.0, 5.0, 7.0, 14.0, 28.0]
            .into_iter()
            .find(|s| span_days / s <= max_labels as f64)
            .unwrap_or(28.0);
        let mut x = (x0 / day).ceil() * day;
        let mut last_month = None;
        while x < x1 {
            let d = date(x);
            let label = if last_month == Some(d.month()) {
                d.day().to_string()
            } else {
                d.strftime("%b %-d").to_string()
            };
            last_month = Some(d.month());
            out.push((x, label));
            x += step * day;
        }
    } else {
        // Month starts, every `step` months.
        let step = ((span_days / 30.0) / max_labels as f64).ceil().max(1.0) as i8;
        let first = date(x0);
        let mut m = first.first_of_month();
        if m < first {
            m = m.checked_add(jiff::Span::new().months(1)).unwrap_or(m);
        }
        while let Ok(ts) = m
            .to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp().as_second() as f64)
        {
            if ts >= x1 {
                break;
            }
            out.push((ts, m.strftime("%b %Y").to_string()));
            match m.checked_add(jiff::Span::new().months(step)) {
                Ok(next) => m = next,
                Err(_) => break,
            }
        }
    }
    out
}

/// Escapes text for SVG/HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Numbers in SVG: two decimals at most, no `-0`.
fn n(v: f64) -> String {
    let r = (v * 100.0).round() / 100.0;
    if r == 0.0 { "0".into() } else { format!("{r}") }
}

fn svg_shapes(out: &mut String, shapes: &[Shape]) {
    for s in shapes {
        let _ = match s {
            Shape::Line {
                from,
                to,
                colour,
                width,
                dashed,
            } => writeln!(
                out,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="{}"{}/>"#,
                n(from.0),
                n(from.1),
                n(to.0),
                n(to.1),
                colour.hex(),
                n(*width),
                if *dashed {
                    r#" stroke-dasharray="4 3""#
                } else {
                    ""
                }
            ),
            Shape::Polyline {
                points,
                colour,
                width,
            } => {
                let pts: Vec<String> = points
                    .iter()
                    .map(|(x, y)| format!("{},{}", n(*x), n(*y)))
                    .collect();
                writeln!(
                    out,
                    r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round"/>"#,
                    pts.join(" "),
                    colour.hex(),
                    n(*width)
                )
            }
            Shape::Rect { x, y, w, h, fill } => writeln!(
                out,
                r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>"#,
                n(*x),
                n(*y),
                n(*w),
                n(*h),
                fill.hex()
            ),
            Shape::Circle { cx, cy, r, fill } => writeln!(
                out,
                r#"<circle cx="{}" cy="{}" r="{}" fill="{}"/>"#,
                n(*cx),
                n(*cy),
                n(*r),
                fill.hex()
            ),
            Shape::Text {
                x,
                y,
                text,
                anchor,
                size,
                bold,
                colour,
            } => writeln!(
                out,
                r#"<text x="{}" y="{}" font-size="{}" fill="{}"{}{}>{}</text>"#,
                n(*x),
                n(*y),
                n(*size),
                colour.hex(),
                match anchor {
                    Anchor::Start => "",
                    Anchor::Middle => r#" text-anchor="middle""#,
                    Anchor::End => r#" text-anchor="end""#,
                },
                if *bold { r#" font-weight="bold""# } else { "" },
                escape(text)
            ),
        };
    }
}

/// The chart as a standalone `<svg>` element: no external references, its title said to screen
/// readers (`role="img"`, `aria-label`, `<title>`), scaled down on narrow screens.
pub fn svg(chart: &Chart, width: f64, height: f64) -> String {
    let title = escape(&chart.title);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{title}" font-family="DejaVu Sans, Verdana, Arial, sans-serif" style="max-width:100%;height:auto">
<title>{title}</title>
"#,
        w = n(width),
        h = n(height),
    );
    svg_shapes(&mut out, &layout(chart, width, height));
    out.push_str("</svg>");
    out
}

/// A tiny trend for a table cell: the values evenly spaced from left to right, joined by a line
/// except bad ones, which are red dots. Decorative (`aria-hidden`): the cell says the figures.
pub fn sparkline(values: &[(f64, Tone)], width: f64, height: f64) -> String {
    let mut shapes = Vec::new();
    let pad = 2.0;
    let max = values
        .iter()
        .map(|v| v.0)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let step = if values.len() > 1 {
        (width - 2.0 * pad) / (values.len() - 1) as f64
    } else {
        0.0
    };
    let at = |i: usize, y: f64| {
        let y = if y.is_finite() {
            y.clamp(0.0, max)
        } else {
            0.0
        };
        (
            if values.len() > 1 {
                pad + i as f64 * step
            } else {
                width / 2.0
            },
            height - pad - y / max * (height - 2.0 * pad),
        )
    };
    let joined: Vec<_> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.1 != Tone::Bad)
        .map(|(i, v)| at(i, v.0))
        .collect();
    if joined.len() > 1 {
        shapes.push(Shape::Polyline {
            points: joined,
            colour: Colour::SERIES,
            width: 1.2,
        });
    } else if let Some(&(cx, cy)) = joined.first() {
        shapes.push(Shape::Circle {
            cx,
            cy,
            r: 1.5,
            fill: Colour::SERIES,
        });
    }
    for (i, v) in values.iter().enumerate() {
        if v.1 == Tone::Bad {
            let (cx, cy) = at(i, v.0);
            shapes.push(Shape::Circle {
                cx,
                cy,
                r: 2.0,
                fill: Colour::BAD,
            });
        }
    }
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="sparkline" viewBox="0 0 {w} {h}" width="{w}" height="{h}" aria-hidden="true">
"#,
        w = n(width),
        h = n(height)
    );
    svg_shapes(&mut out, &shapes);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::doc::{Point, Threshold};

    const NOV_1: f64 = 1_793_491_200.0; // 2026-11-01T00:00:00Z

    fn chart(kind: ChartKind, unit: Unit, points: Vec<Point>) -> Chart {
        Chart {
            title: "Restore time".into(),
            kind,
            unit,
            x_range: (NOV_1, NOV_1 + 30.0 * 86_400.0),
            points,
            threshold: None,
            empty: "No drills ran in this period".into(),
        }
    }

    fn pt(day: f64, y: f64, tone: Tone) -> Point {
        Point {
            x: NOV_1 + day * 86_400.0 + 3600.0,
            y,
            tone,
        }
    }

    fn texts(shapes: &[Shape]) -> Vec<&str> {
        shapes
            .iter()
            .filter_map(|s| match s {
                Shape::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn seconds_ticks_are_round_and_read_as_durations() {
        assert_eq!(
            y_ticks(Unit::Seconds, 42.0),
            vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
        );
        let t = y_ticks(Unit::Seconds, 1900.0);
        assert_eq!(t, vec![0.0, 600.0, 1200.0, 1800.0, 2400.0]);
        assert_eq!(format_value(Unit::Seconds, 45.0), "45 s");
        assert_eq!(format_value(Unit::Seconds, 120.0), "2 min");
        assert_eq!(format_value(Unit::Seconds, 90.0), "1 min 30 s");
        assert_eq!(format_value(Unit::Seconds, 3900.0), "1 h 5 min");
        assert_eq!(format_value(Unit::Seconds, 7200.0), "2 h");
        assert_eq!(format_value(Unit::Seconds, 0.0), "0 s");
    }

    #[test]
    fn byte_ticks_are_binary_and_read_as_sizes() {
        let gib = 1024.0 * 1024.0 * 1024.0;
        let t = y_ticks(Unit::Bytes, 1.4 * gib);
        assert_eq!(*t.last().unwrap(), 1.5 * gib, "{t:?}");
        assert!(t.len() >= 4 && t.len() <= 7, "{t:?}");
        assert_eq!(format_value(Unit::Bytes, 1.5 * gib), "1.5 GiB");
        assert_eq!(format_value(Unit::Bytes, gib), "1 GiB");
        assert_eq!(format_value(Unit::Bytes, 0.0), "0 B");
        assert_eq!(y_ticks(Unit::Count, 7.0), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        // A flat zero series still gets an axis.
        assert_eq!(y_ticks(Unit::Count, 0.0), vec![0.0, 1.0]);
    }

    #[test]
    fn x_ticks_are_days_of_the_month_inside_the_range() {
        let t = x_ticks(NOV_1, NOV_1 + 30.0 * 86_400.0, 10);
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            ["Nov 1", "4", "7", "10", "13", "16", "19", "22", "25", "28"]
        );
        assert!(
            t.iter()
                .all(|(x, _)| *x >= NOV_1 && *x < NOV_1 + 30.0 * 86_400.0)
        );
        let year = x_ticks(NOV_1, NOV_1 + 365.0 * 86_400.0, 12);
        assert_eq!(year[0].1, "Nov 2026");
        assert_eq!(
            year[1].1, "Jan 2027",
            "every second month for a year in 12 labels"
        );
    }

    #[test]
    fn an_empty_chart_says_so_and_draws_no_series() {
        let shapes = layout(&chart(ChartKind::Line, Unit::Seconds, vec![]), 400.0, 160.0);
        assert_eq!(
            texts(&shapes),
            ["Restore time", "No drills ran in this period"]
        );
        assert!(
            !shapes
                .iter()
                .any(|s| matches!(s, Shape::Polyline { .. } | Shape::Circle { .. }))
        );
    }

    #[test]
    fn bad_points_are_crosses_and_not_joined_into_the_line() {
        let mut c = chart(
            ChartKind::Line,
            Unit::Seconds,
            vec![
                pt(1.0, 40.0, Tone::Good),
                pt(2.0, 900.0, Tone::Bad),
                pt(3.0, 44.0, Tone::Good),
            ],
        );
        c.threshold = Some(Threshold {
            y: 1800.0,
            label: "objective 30 min".into(),
        });
        let shapes = layout(&c, 400.0, 160.0);
        let lines: Vec<_> = shapes
            .iter()
            .filter_map(|s| match s {
                Shape::Polyline { points, .. } => Some(points),
                _ => None,
            })
            .collect();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), 2, "the failed point is not on the line");
        let red_marks = shapes
            .iter()
            .filter(|s| matches!(s, Shape::Line { colour, dashed: false, .. } if *colour == Colour::BAD))
            .count();
        assert_eq!(red_marks, 4, "a cross at the point and one in the legend");
        assert!(
            shapes
                .iter()
                .any(|s| matches!(s, Shape::Line { dashed: true, .. }))
        );
        assert!(texts(&shapes).contains(&"objective 30 min"));
        assert!(texts(&shapes).contains(&"30 min"), "{:?}", texts(&shapes));
    }

    #[test]
    fn svg_escapes_text_and_names_the_chart() {
        let mut c = chart(
            ChartKind::Bars,
            Unit::Bytes,
            vec![pt(1.0, 1e9, Tone::Neutral)],
        );
        c.title = "Size of <script>alert(1)</script> & \"co\"".into();
        let s = svg(&c, 400.0, 160.0);
        assert!(!s.contains("<script"), "{s}");
        assert!(s.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;co&quot;"));
        assert!(s.contains(r#"role="img""#) && s.contains("<title>Size of &lt;script"));
        assert!(s.contains("<rect "));
        assert!(!s.contains("href"), "no external references");
    }

    #[test]
    fn sparkline_marks_bad_values_red_and_skips_them() {
        let s = sparkline(
            &[(1.0, Tone::Good), (5.0, Tone::Bad), (2.0, Tone::Good)],
            60.0,
            16.0,
        );
        assert!(s.contains("<polyline"));
        assert_eq!(s.matches(&Colour::BAD.hex()).count(), 1);
        let pts = s
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(pts.split(' ').count(), 2, "{pts}");
    }
}
