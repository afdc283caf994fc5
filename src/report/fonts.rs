/*!
The PDF's fonts (DejaVu, compiled into the binary so a report renders the same on every machine)
and their advance widths, which the PDF renderer needs to wrap text to a column and to right-align
figures before krilla draws them.

The widths come from the fonts' own `cmap` and `hmtx` tables, read here directly: a few dozen lines
instead of a new dependency. Kerning is ignored, so a measured line is at most a fraction of a
point wider than krilla draws it, which only ever makes wrapping a little cautious.
*/

use std::sync::LazyLock;

pub static REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
pub static BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");
pub static MONO: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Face {
    Regular,
    Bold,
    Mono,
}

impl Face {
    pub fn data(self) -> &'static [u8] {
        match self {
            Face::Regular => REGULAR,
            Face::Bold => BOLD,
            Face::Mono => MONO,
        }
    }

    pub fn metrics(self) -> &'static Metrics {
        static R: LazyLock<Metrics> =
            LazyLock::new(|| Metrics::parse(REGULAR).expect("DejaVuSans"));
        static B: LazyLock<Metrics> =
            LazyLock::new(|| Metrics::parse(BOLD).expect("DejaVuSans-Bold"));
        static M: LazyLock<Metrics> =
            LazyLock::new(|| Metrics::parse(MONO).expect("DejaVuSansMono"));
        match self {
            Face::Regular => &R,
            Face::Bold => &B,
            Face::Mono => &M,
        }
    }

    /// The width of `text` set at `size` points.
    pub fn width(self, text: &str, size: f64) -> f64 {
        self.metrics().width(text, size)
    }
}

/// Horizontal metrics of one TrueType font.
pub struct Metrics {
    data: &'static [u8],
    units_per_em: f64,
    /// Offset of the chosen `cmap` subtable and its format (4 or 12).
    cmap: (usize, u16),
    hmtx: usize,
    long_metrics: u16,
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

impl Metrics {
    pub fn parse(data: &'static [u8]) -> Option<Metrics> {
        let tables = u16_at(data, 4)? as usize;
        let table = |tag: &[u8; 4]| {
            (0..tables).find_map(|i| {
                let rec = 12 + 16 * i;
                (data.get(rec..rec + 4)? == tag)
                    .then(|| u32_at(data, rec + 8).map(|o| o as usize))?
            })
        };
        let (head, hhea, hmtx, cmap) = (
            table(b"head")?,
            table(b"hhea")?,
            table(b"hmtx")?,
            table(b"cmap")?,
        );
        let mut best = None;
        for i in 0..u16_at(data, cmap + 2)? as usize {
            let rec = cmap + 4 + 8 * i;
            let (platform, encoding) = (u16_at(data, rec)?, u16_at(data, rec + 2)?);
            let sub = cmap + u32_at(data, rec + 4)? as usize;
            let format = u16_at(data, sub)?;
            let unicode = platform == 0 || (platform == 3 && (encoding == 1 || encoding == 10));
            if unicode && (format == 12 || (format == 4 && best.is_none())) {
                best = Some((sub, format));
            }
        }
        Some(Metrics {
            data,
            units_per_em: u16_at(data, head + 18)? as f64,
            cmap: best?,
            hmtx,
            long_metrics: u16_at(data, hhea + 34)?,
        })
    }

    pub fn glyph(&self, c: char) -> u16 {
        self.lookup(c as u32).unwrap_or(0)
    }

    fn lookup(&self, c: u32) -> Option<u16> {
        let d = self.data;
        let (sub, format) = self.cmap;
        if format == 12 {
            let groups = u32_at(d, sub + 12)? as usize;
            let (mut lo, mut hi) = (0, groups);
            while lo < hi {
                let mid = (lo + hi) / 2;
                let g = sub + 16 + 12 * mid;
                let (start, end) = (u32_at(d, g)?, u32_at(d, g + 4)?);
                if c < start {
                    hi = mid;
                } else if c > end {
                    lo = mid + 1;
                } else {
                    return Some((u32_at(d, g + 8)? + c - start) as u16);
                }
            }
            return None;
        }
        if c > 0xffff {
            return None;
        }
        let segs = u16_at(d, sub + 6)? as usize / 2;
        let ends = sub + 14;
        let starts = ends + 2 * segs + 2;
        let deltas = starts + 2 * segs;
        let ranges = deltas + 2 * segs;
        let i = (0..segs).find(|&i| u16_at(d, ends + 2 * i).is_some_and(|e| e as u32 >= c))?;
        let start = u16_at(d, starts + 2 * i)? as u32;
        if start > c {
            return None;
        }
        let delta = u16_at(d, deltas + 2 * i)?;
        let range = u16_at(d, ranges + 2 * i)? as usize;
        if range == 0 {
            return Some((c as u16).wrapping_add(delta));
        }
        let g = u16_at(d, ranges + 2 * i + range + 2 * (c - start) as usize)?;
        (g != 0).then(|| g.wrapping_add(delta))
    }

    /// Advance of a glyph in font units.
    fn advance(&self, glyph: u16) -> f64 {
        let i = glyph.min(self.long_metrics.saturating_sub(1)) as usize;
        u16_at(self.data, self.hmtx + 4 * i).unwrap_or(0) as f64
    }

    pub fn width(&self, text: &str, size: f64) -> f64 {
        let units: f64 = text.chars().map(|c| self.advance(self.glyph(c))).sum();
        units * size / self.units_per_em
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_come_from_the_fonts() {
        // DejaVu Sans: 2048 units per em; "a" advances 1255, space 651 (the font's hmtx).
        assert!((Face::Regular.width("a", 2048.0) - 1255.0).abs() < 0.01);
        assert!((Face::Regular.width(" ", 2048.0) - 651.0).abs() < 0.01);
        assert!(Face::Bold.width("Restore", 10.0) > Face::Regular.width("Restore", 10.0));
        // Monospace: every glyph the same width, including the ellipsis.
        let m = Face::Mono.width("i", 10.0);
        assert!(m > 5.0 && (Face::Mono.width("W…", 10.0) - 2.0 * m).abs() < 0.01);
        assert_ne!(Face::Regular.metrics().glyph('·'), 0);
        assert_eq!(Face::Regular.width("", 10.0), 0.0);
    }
}
