/*!
The report as a PDF: real, selectable text in embedded DejaVu fonts (krilla subsets them), charts
as vector paths from [`chart::layout`], pages with margins, a running header and "page N of M".

Rendering is two passes. [`Pages`] lays every block out into drawing operations page by page (it
measures text with [`fonts`] to wrap it and break pages); only then, when the number of pages is
known, are the pages, their headers and footers drawn with krilla. The report's JSON goes in as
an attached `report.json`, uncompressed, so its bytes can be found in the file as they are.
*/

use std::str::FromStr;

use krilla::Document as PdfDocument;
use krilla::color::rgb;
use krilla::embed::{AssociationKind, EmbeddedFile, MimeType};
use krilla::geom::{PathBuilder, Point as PdfPoint};
use krilla::metadata::{DateTime, Metadata};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke, StrokeDash};
use krilla::surface::Surface;
use krilla::text::{Font, TextDirection};

use super::chart::{self, Anchor, Colour, Shape};
use super::doc::{Align, Block, Document, Fact, Span, Table, Tone, Verdict};
use super::fonts::Face;
use crate::error::{Error, Result};

/// The paper a PDF is laid out for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Paper {
    #[default]
    A4,
    Letter,
}

impl Paper {
    /// Width and height in points.
    pub fn size(self) -> (f64, f64) {
        match self {
            Paper::A4 => (595.28, 841.89),
            Paper::Letter => (612.0, 792.0),
        }
    }
}

impl FromStr for Paper {
    type Err = Error;

    fn from_str(s: &str) -> Result<Paper> {
        match s.trim().to_ascii_lowercase().as_str() {
            "a4" => Ok(Paper::A4),
            "letter" => Ok(Paper::Letter),
            _ => {
                Err(Error::config(format!("unknown paper size {s:?}"))
                    .with_hint("use a4 or letter"))
            }
        }
    }
}

const MARGIN: f64 = 56.0;
const BODY: f64 = 9.5;
const SMALL: f64 = 8.0;
const CHART_HEIGHT: f64 = 170.0;
const ELLIPSIS: &str = "…";

/// One drawing operation, positioned on its page (origin top-left, y down).
#[derive(Clone, Debug, PartialEq)]
enum Op {
    /// `y` is the baseline.
    Text {
        x: f64,
        y: f64,
        face: Face,
        size: f64,
        colour: Colour,
        text: String,
    },
    Shape(Shape),
}

/// A piece of a wrapped line: text in one face and colour, `x` from the line's start.
#[derive(Clone, Debug, PartialEq)]
struct Piece {
    x: f64,
    text: String,
    face: Face,
    colour: Colour,
}

/// Wraps styled runs to `width`: breaks at spaces, splits a word longer than the line, keeps
/// newlines. Each line is pieces of one style, ready to draw.
fn wrap(runs: &[(&str, Face, Colour)], size: f64, width: f64) -> Vec<Vec<Piece>> {
    let mut lines: Vec<Vec<Piece>> = vec![vec![]];
    let mut x = 0.0;
    // A space waiting to be placed before the next word, in the style it was written in.
    let mut space: Option<(Face, Colour)> = None;
    let push = |lines: &mut Vec<Vec<Piece>>, x: &mut f64, text: &str, face: Face, colour| {
        let line = lines.last_mut().expect("a line");
        match line.last_mut() {
            Some(p) if p.face == face && p.colour == colour => p.text.push_str(text),
            _ => line.push(Piece {
                x: *x,
                text: text.to_string(),
                face,
                colour,
            }),
        }
        *x += face.width(text, size);
    };
    for &(text, face, colour) in runs {
        for (i, para) in text.split('\n').enumerate() {
            if i > 0 {
                lines.push(vec![]);
                x = 0.0;
                space = None;
            }
            let mut words = para.split(' ').peekable();
            if para.starts_with(' ') && x > 0.0 {
                space = Some((face, colour));
            }
            while let Some(word) = words.next() {
                if word.is_empty() {
                    continue;
                }
                let sp = match space {
                    Some((f, _)) if x > 0.0 => f.width(" ", size),
                    _ => 0.0,
                };
                let w = face.width(word, size);
                if x > 0.0 && x + sp + w > width {
                    lines.push(vec![]);
                    x = 0.0;
                } else if let (true, Some((f, c))) = (sp > 0.0, space) {
                    push(&mut lines, &mut x, " ", f, c);
                }
                if w <= width {
                    push(&mut lines, &mut x, word, face, colour);
                } else {
                    // A word longer than the line (a digest, a path): split it where it must.
                    let mut chunk = String::new();
                    for c in word.chars() {
                        chunk.push(c);
                        if x + face.width(&chunk, size) > width && chunk.chars().count() > 1 {
                            chunk.pop();
                            push(&mut lines, &mut x, &chunk, face, colour);
                            lines.push(vec![]);
                            x = 0.0;
                            chunk = c.to_string();
                        }
                    }
                    push(&mut lines, &mut x, &chunk, face, colour);
                }
                space = words.peek().is_some().then_some((face, colour));
            }
            if para.ends_with(' ') {
                space = Some((face, colour));
            }
        }
    }
    lines
}

/// `text` cut to `width` with an ellipsis when it does not fit.
fn fit(text: &str, face: Face, size: f64, width: f64) -> String {
    if face.width(text, size) <= width {
        return text.to_string();
    }
    let mut s: String = text.to_string();
    while !s.is_empty() && face.width(&format!("{s}{ELLIPSIS}"), size) > width {
        s.pop();
    }
    format!("{}{ELLIPSIS}", s.trim_end())
}

/// A tone's marker: a dot for good, a square for warning, a cross for bad, a ring-less grey dot
/// for neutral; the shape differs so the marker still reads in grey.
fn marker(tone: Tone, cx: f64, cy: f64, r: f64) -> Vec<Shape> {
    let colour = match tone {
        Tone::Neutral => Colour::GREY,
        t => Colour::of(t),
    };
    match tone {
        Tone::Good | Tone::Neutral => vec![Shape::Circle {
            cx,
            cy,
            r: if tone == Tone::Neutral { r * 0.6 } else { r },
            fill: colour,
        }],
        Tone::Warning => vec![Shape::Rect {
            x: cx - r * 0.9,
            y: cy - r * 0.9,
            w: r * 1.8,
            h: r * 1.8,
            fill: colour,
        }],
        Tone::Bad => [(-1.0, -1.0, 1.0, 1.0), (-1.0, 1.0, 1.0, -1.0)]
            .iter()
            .map(|&(a, b, c, d)| Shape::Line {
                from: (cx + a * r, cy + b * r),
                to: (cx + c * r, cy + d * r),
                colour,
                width: r * 0.7,
                dashed: false,
            })
            .collect(),
    }
}

/// The layout pass: pages of operations and a cursor.
struct Pages {
    width: f64,
    height: f64,
    pages: Vec<Vec<Op>>,
    /// Top of the next thing to place.
    y: f64,
    /// Nothing placed on this page yet (besides the title block).
    fresh: bool,
}

impl Pages {
    fn left(&self) -> f64 {
        MARGIN
    }

    fn column(&self) -> f64 {
        self.width - 2.0 * MARGIN
    }

    fn bottom(&self) -> f64 {
        self.height - MARGIN
    }

    fn new_page(&mut self) {
        self.pages.push(vec![]);
        self.y = MARGIN + 4.0;
        self.fresh = true;
    }

    /// Breaks the page unless `need` points fit under the cursor.
    fn ensure(&mut self, need: f64) {
        if self.y + need > self.bottom() && !self.fresh {
            self.new_page();
        }
    }

    fn op(&mut self, op: Op) {
        self.fresh = false;
        self.pages.last_mut().expect("a page").push(op);
    }

    fn text(&mut self, x: f64, y: f64, face: Face, size: f64, colour: Colour, text: &str) {
        if !text.is_empty() {
            self.op(Op::Text {
                x,
                y,
                face,
                size,
                colour,
                text: text.to_string(),
            });
        }
    }

    /// Places a shape from [`chart`] or [`marker`], moved by `(dx, dy)`; text anchors are resolved
    /// here, where the font is known.
    fn shape(&mut self, shape: Shape, dx: f64, dy: f64) {
        let m = |(x, y): (f64, f64)| (x + dx, y + dy);
        let op = match shape {
            Shape::Text {
                x,
                y,
                text,
                anchor,
                size,
                bold,
                colour,
            } => {
                let face = if bold { Face::Bold } else { Face::Regular };
                let w = face.width(&text, size);
                let x = match anchor {
                    Anchor::Start => x,
                    Anchor::Middle => x - w / 2.0,
                    Anchor::End => x - w,
                };
                Op::Text {
                    x: x + dx,
                    y: y + dy,
                    face,
                    size,
                    colour,
                    text,
                }
            }
            Shape::Line {
                from,
                to,
                colour,
                width,
                dashed,
            } => Op::Shape(Shape::Line {
                from: m(from),
                to: m(to),
                colour,
                width,
                dashed,
            }),
            Shape::Polyline {
                points,
                colour,
                width,
            } => Op::Shape(Shape::Polyline {
                points: points.into_iter().map(m).collect(),
                colour,
                width,
            }),
            Shape::Rect { x, y, w, h, fill } => Op::Shape(Shape::Rect {
                x: x + dx,
                y: y + dy,
                w,
                h,
                fill,
            }),
            Shape::Circle { cx, cy, r, fill } => Op::Shape(Shape::Circle {
                cx: cx + dx,
                cy: cy + dy,
                r,
                fill,
            }),
        };
        self.op(op);
    }

    fn rule(&mut self, y: f64, colour: Colour, width: f64) {
        let (l, r) = (self.left(), self.left() + self.column());
        self.shape(
            Shape::Line {
                from: (l, y),
                to: (r, y),
                colour,
                width,
                dashed: false,
            },
            0.0,
            0.0,
        );
    }

    /// Wrapped runs at `x`, `width` wide, breaking pages between lines.
    fn lines(&mut self, runs: &[(&str, Face, Colour)], size: f64, x: f64, width: f64) {
        let lh = size * 1.4;
        for line in wrap(runs, size, width) {
            self.ensure(lh);
            for p in line {
                self.text(x + p.x, self.y + size, p.face, size, p.colour, &p.text);
            }
            self.y += lh;
        }
    }

    fn title(&mut self, doc: &Document) {
        let (l, w) = (self.left(), self.column());
        self.lines(&[(&doc.title, Face::Bold, Colour::TEXT)], 22.0, l, w);
        self.y += 2.0;
        self.lines(&[(&doc.subtitle, Face::Regular, Colour::GREY)], 11.0, l, w);
        self.y += 6.0;
        self.rule(self.y, Colour::TEXT, 1.2);
        self.y += 8.0;
        self.fresh = true;
    }

    fn heading(&mut self, text: &str, new_page: bool) {
        if new_page && !self.fresh {
            self.new_page();
        }
        if !self.fresh {
            self.y += 14.0;
        }
        // Keep a heading with the start of what follows it.
        self.ensure(80.0);
        let (l, w) = (self.left(), self.column());
        self.lines(&[(text, Face::Bold, Colour::TEXT)], 15.0, l, w);
        self.rule(self.y, Colour::RULE, 0.6);
        self.y += 8.0;
    }

    fn block(&mut self, block: &Block) {
        let (l, w) = (self.left(), self.column());
        match block {
            Block::Verdicts(vs) => vs.iter().for_each(|v| self.verdict(v)),
            Block::Paragraph(spans) => {
                let runs: Vec<_> = spans.iter().map(span_run).collect();
                self.lines(&runs, BODY, l, w);
                self.y += 5.0;
            }
            Block::Subheading(text) => {
                self.y += 4.0;
                self.ensure(50.0);
                self.lines(&[(text, Face::Bold, Colour::TEXT)], 11.5, l, w);
                self.y += 2.0;
            }
            Block::Facts(facts) => self.facts(facts),
            Block::Table(table) => self.table(table),
            Block::Chart(c) => {
                self.ensure(CHART_HEIGHT + 8.0);
                let y = self.y;
                for s in chart::layout(c, w, CHART_HEIGHT) {
                    self.shape(s, l, y);
                }
                self.y += CHART_HEIGHT + 12.0;
            }
            Block::Note(text) => {
                self.lines(&[(text, Face::Regular, Colour::GREY)], SMALL, l, w);
                self.y += 5.0;
            }
        }
    }

    /// A summary line: marker, the tone in words and the subject; the headline large under them;
    /// the details small and grey.
    fn verdict(&mut self, v: &Verdict) {
        let (l, w) = (self.left(), self.column());
        let indent = 18.0;
        let need = 16.0 + 14.0 * 1.4 * 2.0 + v.details.len().min(2) as f64 * SMALL * 1.5;
        self.ensure(need);
        let base = self.y + 11.0;
        for s in marker(v.tone, 6.0, -3.6, 4.5) {
            self.shape(s, l, base);
        }
        let word = v.tone.word();
        let colour = match v.tone {
            Tone::Neutral => Colour::GREY,
            t => Colour::of(t),
        };
        self.text(l + indent, base, Face::Bold, 10.0, colour, word);
        let gap = if word.is_empty() {
            0.0
        } else {
            Face::Bold.width(word, 10.0) + 8.0
        };
        let subject = fit(&v.subject, Face::Bold, 10.0, w - indent - gap);
        self.text(
            l + indent + gap,
            base,
            Face::Bold,
            10.0,
            Colour::TEXT,
            &subject,
        );
        self.y += 16.0;
        self.lines(
            &[(&v.headline, Face::Regular, Colour::TEXT)],
            14.0,
            l + indent,
            w - indent,
        );
        for d in &v.details {
            self.lines(
                &[(d, Face::Regular, Colour::GREY)],
                9.0,
                l + indent,
                w - indent,
            );
        }
        self.y += 10.0;
    }

    fn facts(&mut self, facts: &[Fact]) {
        let (l, w) = (self.left(), self.column());
        let widest = facts
            .iter()
            .map(|f| Face::Regular.width(&f.label, BODY))
            .fold(0.0, f64::max);
        let label_w = (widest + 14.0).min(w * 0.38);
        let lh = BODY * 1.45;
        for f in facts {
            let labels = wrap(
                &[(&f.label, Face::Regular, Colour::GREY)],
                BODY,
                label_w - 10.0,
            );
            let (vx, vw) = if f.tone == Tone::Neutral {
                (l + label_w, w - label_w)
            } else {
                (l + label_w + 12.0, w - label_w - 12.0)
            };
            let face = if f.mono { Face::Mono } else { Face::Regular };
            let values = wrap(&[(&f.value, face, Colour::of(f.tone))], BODY, vw);
            let rows = labels.len().max(values.len());
            self.ensure(rows as f64 * lh);
            let top = self.y;
            if f.tone != Tone::Neutral {
                for s in marker(f.tone, 4.0, BODY * 0.65, 3.2) {
                    self.shape(s, l + label_w, top);
                }
            }
            for (i, line) in labels.iter().enumerate() {
                for p in line {
                    let y = top + i as f64 * lh + BODY;
                    self.text(l + p.x, y, p.face, BODY, p.colour, &p.text);
                }
            }
            for (i, line) in values.iter().enumerate() {
                for p in line {
                    let y = top + i as f64 * lh + BODY;
                    self.text(vx + p.x, y, p.face, BODY, p.colour, &p.text);
                }
            }
            self.y = top + rows as f64 * lh + 1.5;
        }
        self.y += 5.0;
    }

    fn table(&mut self, t: &Table) {
        let (l, w) = (self.left(), self.column());
        if t.rows.is_empty() || t.columns.is_empty() {
            self.lines(&[(&t.empty, Face::Regular, Colour::GREY)], BODY, l, w);
            self.y += 5.0;
            return;
        }
        let size = 8.5;
        let pad = 4.0;
        let gutter = if t.rows.iter().any(|r| r.tone != Tone::Neutral) {
            12.0
        } else {
            0.0
        };
        let face_of = |c: usize| {
            if t.columns[c].mono {
                Face::Mono
            } else {
                Face::Regular
            }
        };
        let natural: Vec<f64> = (0..t.columns.len())
            .map(|c| {
                let cells = t.rows.iter().filter_map(|r| r.cells.get(c));
                cells
                    .map(|s| face_of(c).width(s, size))
                    .fold(Face::Bold.width(&t.columns[c].title, size), f64::max)
                    + 2.0 * pad
            })
            .collect();
        let widths = share(&natural, w - gutter);
        let row_h = size * 1.75;
        let header = |p: &mut Pages| {
            p.ensure(row_h * 2.0);
            let y = p.y;
            p.shape(
                Shape::Rect {
                    x: l,
                    y,
                    w,
                    h: row_h,
                    fill: Colour::SHADE,
                },
                0.0,
                0.0,
            );
            let mut x = l + gutter;
            for (c, col) in t.columns.iter().enumerate() {
                p.cell(
                    &col.title,
                    Face::Bold,
                    Colour::GREY,
                    col.align,
                    x,
                    widths[c],
                    pad,
                    size,
                );
                x += widths[c];
            }
            p.y += row_h;
            p.rule(p.y, Colour::GREY, 0.6);
        };
        header(self);
        for row in &t.rows {
            if self.y + row_h > self.bottom() {
                self.new_page();
                header(self);
            }
            if row.tone != Tone::Neutral {
                for s in marker(row.tone, gutter / 2.0, row_h / 2.0, 3.0) {
                    self.shape(s, l, self.y);
                }
            }
            let mut x = l + gutter;
            for (c, col) in t.columns.iter().enumerate() {
                let text = row.cells.get(c).map(String::as_str).unwrap_or("");
                let colour = if c == 0 || row.tone == Tone::Neutral {
                    Colour::TEXT
                } else {
                    Colour::of(row.tone)
                };
                self.cell(text, face_of(c), colour, col.align, x, widths[c], pad, size);
                x += widths[c];
            }
            self.y += row_h;
            self.rule(self.y, Colour::RULE, 0.4);
        }
        self.y += 8.0;
    }

    /// One table cell on the current row, cut with an ellipsis when it does not fit.
    #[allow(clippy::too_many_arguments)]
    fn cell(
        &mut self,
        text: &str,
        face: Face,
        colour: Colour,
        align: Align,
        x: f64,
        width: f64,
        pad: f64,
        size: f64,
    ) {
        let s = fit(text, face, size, width - 2.0 * pad);
        let tx = match align {
            Align::Left => x + pad,
            Align::Right => x + width - pad - face.width(&s, size),
        };
        self.text(tx, self.y + size * 1.25, face, size, colour, &s);
    }
}

fn span_run(s: &Span) -> (&str, Face, Colour) {
    let face = if s.mono {
        Face::Mono
    } else if s.bold {
        Face::Bold
    } else {
        Face::Regular
    };
    (&s.text, face, Colour::of(s.tone))
}

/// Column widths for `total`: the natural widths if they fit (the spare shared out evenly),
/// otherwise the widest columns are capped at the same width until they fit.
fn share(natural: &[f64], total: f64) -> Vec<f64> {
    let sum: f64 = natural.iter().sum();
    if sum <= total {
        let extra = (total - sum) / natural.len() as f64;
        return natural.iter().map(|w| w + extra).collect();
    }
    let mut sorted = natural.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mut rest = total;
    let mut cap = total / natural.len() as f64;
    for (i, w) in sorted.iter().enumerate() {
        let left = (natural.len() - i) as f64;
        if w * left > rest {
            cap = rest / left;
            break;
        }
        rest -= w;
    }
    natural.iter().map(|w| w.min(cap)).collect()
}

/// Lays the document out into pages of drawing operations.
fn lay_out(doc: &Document, paper: Paper) -> Pages {
    let (width, height) = paper.size();
    let mut p = Pages {
        width,
        height,
        pages: vec![],
        y: 0.0,
        fresh: true,
    };
    p.new_page();
    p.title(doc);
    for (i, section) in doc.sections.iter().enumerate() {
        // The first section belongs under the title, whatever it asks for.
        p.heading(&section.heading, section.new_page && i > 0);
        for b in &section.blocks {
            p.block(b);
        }
    }
    p
}

fn paint(c: Colour) -> rgb::Color {
    rgb::Color::new(c.0, c.1, c.2)
}

fn draw(surface: &mut Surface, op: &Op, fonts: &[(Face, Font)]) {
    match op {
        Op::Text {
            x,
            y,
            face,
            size,
            colour,
            text,
        } => {
            let font = fonts
                .iter()
                .find(|(f, _)| f == face)
                .expect("a font")
                .1
                .clone();
            surface.set_stroke(None);
            surface.set_fill(Some(Fill {
                paint: paint(*colour).into(),
                opacity: NormalizedF32::ONE,
                rule: Default::default(),
            }));
            surface.draw_text(
                PdfPoint::from_xy(*x as f32, *y as f32),
                font,
                *size as f32,
                text,
                false,
                TextDirection::Auto,
            );
        }
        Op::Shape(shape) => {
            let mut pb = PathBuilder::new();
            let (fill, stroke) = match shape {
                Shape::Line {
                    from,
                    to,
                    colour,
                    width,
                    dashed,
                } => {
                    pb.move_to(from.0 as f32, from.1 as f32);
                    pb.line_to(to.0 as f32, to.1 as f32);
                    (None, Some((*colour, *width, *dashed)))
                }
                Shape::Polyline {
                    points,
                    colour,
                    width,
                } => {
                    for (i, (x, y)) in points.iter().enumerate() {
                        if i == 0 {
                            pb.move_to(*x as f32, *y as f32);
                        } else {
                            pb.line_to(*x as f32, *y as f32);
                        }
                    }
                    (None, Some((*colour, *width, false)))
                }
                Shape::Rect { x, y, w, h, fill } => {
                    let (x, y, w, h) = (*x as f32, *y as f32, *w as f32, *h as f32);
                    pb.move_to(x, y);
                    pb.line_to(x + w, y);
                    pb.line_to(x + w, y + h);
                    pb.line_to(x, y + h);
                    pb.close();
                    (Some(*fill), None)
                }
                Shape::Circle { cx, cy, r, fill } => {
                    // Four cubic arcs; k places the control points of a quarter circle.
                    let (cx, cy, r) = (*cx as f32, *cy as f32, *r as f32);
                    let k = 0.552_284_8 * r;
                    pb.move_to(cx + r, cy);
                    pb.cubic_to(cx + r, cy + k, cx + k, cy + r, cx, cy + r);
                    pb.cubic_to(cx - k, cy + r, cx - r, cy + k, cx - r, cy);
                    pb.cubic_to(cx - r, cy - k, cx - k, cy - r, cx, cy - r);
                    pb.cubic_to(cx + k, cy - r, cx + r, cy - k, cx + r, cy);
                    pb.close();
                    (Some(*fill), None)
                }
                Shape::Text { .. } => unreachable!("text is laid out as Op::Text"),
            };
            let Some(path) = pb.finish() else { return };
            surface.set_fill(fill.map(|c| Fill {
                paint: paint(c).into(),
                opacity: NormalizedF32::ONE,
                rule: Default::default(),
            }));
            surface.set_stroke(stroke.map(|(c, width, dashed)| Stroke {
                paint: paint(c).into(),
                width: width as f32,
                dash: dashed.then(|| StrokeDash {
                    array: vec![4.0, 3.0],
                    offset: 0.0,
                }),
                ..Default::default()
            }));
            surface.draw_path(&path);
        }
    }
}

/// The running header (pages after the first) and the foot of every page: the small print on the
/// left, "page N of M" on the right.
fn furniture(doc: &Document, p: &Pages, index: usize) -> Vec<Op> {
    let mut f = Pages {
        width: p.width,
        height: p.height,
        pages: vec![vec![]],
        y: 0.0,
        fresh: true,
    };
    let (l, w) = (f.left(), f.column());
    if index > 0 {
        let header = fit(&doc.running_header, Face::Regular, SMALL, w);
        f.text(
            l,
            MARGIN - 22.0,
            Face::Regular,
            SMALL,
            Colour::GREY,
            &header,
        );
        f.rule(MARGIN - 16.0, Colour::RULE, 0.5);
    }
    let foot = p.height - MARGIN + 18.0;
    f.rule(foot - 10.0, Colour::RULE, 0.5);
    let number = format!("page {} of {}", index + 1, p.pages.len());
    let nw = Face::Regular.width(&number, SMALL);
    f.text(
        l + w - nw,
        foot,
        Face::Regular,
        SMALL,
        Colour::GREY,
        &number,
    );
    let print = wrap(
        &[(&doc.footer, Face::Regular, Colour::GREY)],
        6.5,
        w - nw - 16.0,
    );
    for (i, line) in print.iter().take(3).enumerate() {
        for piece in line {
            let y = foot + i as f64 * 8.5;
            f.text(l + piece.x, y, piece.face, 6.5, piece.colour, &piece.text);
        }
    }
    f.pages.pop().unwrap_or_default()
}

fn pdf_now() -> DateTime {
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    DateTime::new(now.year() as u16)
        .month(now.month() as u8)
        .day(now.day() as u8)
        .hour(now.hour() as u8)
        .minute(now.minute() as u8)
        .second(now.second() as u8)
        .utc_offset_hour(0)
        .utc_offset_minute(0)
}

/// The document as PDF bytes, laid out for `paper`.
pub fn render(doc: &Document, paper: Paper) -> Result<Vec<u8>> {
    let pages = lay_out(doc, paper);
    let fonts: Vec<(Face, Font)> = [Face::Regular, Face::Bold, Face::Mono]
        .into_iter()
        .map(|face| {
            Font::new(face.data().into(), 0)
                .map(|font| (face, font))
                .ok_or_else(|| Error::internal(format!("cannot load the embedded font {face:?}")))
        })
        .collect::<Result<_>>()?;
    let mut pdf = PdfDocument::new();
    let now = pdf_now();
    pdf.set_metadata(
        Metadata::new()
            .title(doc.title.clone())
            .description(doc.subtitle.clone())
            .creator(format!("OffsiteDB {}", crate::VERSION))
            .creation_date(now)
            .language("en".into()),
    );
    for (i, ops) in pages.pages.iter().enumerate() {
        let settings = PageSettings::from_wh(pages.width as f32, pages.height as f32)
            .ok_or_else(|| Error::internal("bad page size"))?;
        let mut page = pdf.start_page_with(settings);
        let mut surface = page.surface();
        for op in ops.iter().chain(&furniture(doc, &pages, i)) {
            draw(&mut surface, op, &fonts);
        }
        surface.finish();
        page.finish();
    }
    if let Some(json) = &doc.attachment {
        pdf.embed_file(EmbeddedFile {
            path: "report.json".into(),
            mime_type: MimeType::new("application/json"),
            description: Some("The report's content, machine-readable".into()),
            association_kind: AssociationKind::Source,
            data: json.as_bytes().to_vec().into(),
            modification_date: Some(now),
            // Uncompressed: the bytes stay findable in the file as they are.
            compress: Some(false),
            location: None,
        })
        .ok_or_else(|| Error::internal("report.json attached twice"))?;
    }
    pdf.finish()
        .map_err(|e| Error::internal(format!("cannot write the pdf: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_names() {
        assert_eq!("a4".parse::<Paper>().unwrap(), Paper::A4);
        assert_eq!("Letter".parse::<Paper>().unwrap(), Paper::Letter);
        let e = "legal".parse::<Paper>().unwrap_err();
        assert_eq!(e.message(), "unknown paper size \"legal\"");
        assert_eq!(e.hint(), Some("use a4 or letter"));
    }

    #[test]
    fn wrapping_keeps_every_word_and_the_width() {
        let text = "The quick brown fox jumps over the lazy dog, and a digest \
                    sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let lines = wrap(&[(text, Face::Regular, Colour::TEXT)], 10.0, 120.0);
        assert!(lines.len() > 3);
        let joined: Vec<String> = lines
            .iter()
            .map(|l| l.iter().map(|p| p.text.as_str()).collect())
            .collect();
        for l in &joined {
            assert!(Face::Regular.width(l, 10.0) <= 120.0 + 0.01, "{l:?}");
        }
        assert_eq!(joined.concat().replace(' ', ""), text.replace(' ', ""));
        // Styles switch inside a line without losing the space between them.
        let mixed = wrap(
            &[
                ("restore ", Face::Regular, Colour::TEXT),
                ("abc", Face::Mono, Colour::TEXT),
            ],
            10.0,
            500.0,
        );
        assert_eq!(mixed.len(), 1);
        assert_eq!(mixed[0][1].text, "abc");
        assert!((mixed[0][1].x - Face::Regular.width("restore ", 10.0)).abs() < 0.01);
    }

    #[test]
    fn long_cells_are_cut_with_an_ellipsis() {
        let s = fit("a-very-long-source-name-indeed", Face::Regular, 9.0, 60.0);
        assert!(
            s.ends_with('…') && Face::Regular.width(&s, 9.0) <= 60.0,
            "{s}"
        );
        assert_eq!(fit("short", Face::Regular, 9.0, 60.0), "short");
    }

    #[test]
    fn columns_share_the_width() {
        assert_eq!(share(&[10.0, 20.0], 40.0), vec![15.0, 25.0]);
        let w = share(&[10.0, 300.0, 200.0], 210.0);
        assert_eq!(w, vec![10.0, 100.0, 100.0]);
    }
}
