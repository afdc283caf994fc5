/*!
The report as a document: what it says, in what order, and how each thing is judged, decided once
here and drawn by two renderers that know nothing of backups: [`super::pdf`] (pages) and
[`super::html`] (one self-contained file). The dashboard draws its charts from the same
[`Chart`] through [`super::chart`], so a restore-time chart looks the same in a PDF, a report page
and the dashboard.

A document is a title block, then sections; a section is a heading and blocks. Blocks are few on
purpose: a verdict list (the first page's one line per source), paragraphs, key/value facts,
tables, charts and small notes. Tones carry judgement (good, warning, bad) so that both renderers
colour it the same way, and every tone is also said in words (a printed report is often grey).
*/

use serde::Serialize;

/// How a line or cell is judged. Renderers colour it; the words next to it say it too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    #[default]
    Neutral,
    Good,
    Warning,
    Bad,
}

impl Tone {
    /// The tone in words, printed next to its colour so a grey copy reads the same; empty for
    /// neutral, which needs no word.
    pub fn word(self) -> &'static str {
        match self {
            Tone::Neutral => "",
            Tone::Good => "OK",
            Tone::Warning => "WARNING",
            Tone::Bad => "FAILED",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Document {
    /// "Restore Drill Report".
    pub title: String,
    /// Under the title: the period and the repository, e.g. "November 2026 · s3://bucket/prefix".
    pub subtitle: String,
    /// The running header of every page after the first (PDF) / the page title (HTML).
    pub running_header: String,
    /// Small print at the foot of every page (PDF) and of the HTML: version, generated time,
    /// fingerprint.
    pub footer: String,
    pub sections: Vec<Section>,
    /// Machine-readable content carried inside the document (the report's JSON): attached to the
    /// PDF as `report.json`, embedded in the HTML in `<script type="application/json"
    /// id="offsitedb-report">`. Stored uncompressed so `offsitedb report verify` can find it.
    pub attachment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Section {
    pub heading: String,
    /// Start this section on a new page (PDF); a rule before it (HTML).
    pub new_page: bool,
    pub blocks: Vec<Block>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "block", rename_all = "snake_case")]
pub enum Block {
    /// The summary's lines: one per source, its verdict in large type and the details under it.
    Verdicts(Vec<Verdict>),
    /// A paragraph of running text (wrapped).
    Paragraph(Vec<Span>),
    /// A sub-heading inside a section.
    Subheading(String),
    /// Label / value pairs, two columns.
    Facts(Vec<Fact>),
    Table(Table),
    Chart(Chart),
    /// Small grey text: explanations, what a number means.
    Note(String),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Span {
    pub text: String,
    pub bold: bool,
    /// Monospace (ids, commands, digests).
    pub mono: bool,
    pub tone: Tone,
}

impl Span {
    pub fn plain(text: impl Into<String>) -> Span {
        Span {
            text: text.into(),
            bold: false,
            mono: false,
            tone: Tone::Neutral,
        }
    }

    pub fn bold(text: impl Into<String>) -> Span {
        Span {
            bold: true,
            ..Span::plain(text)
        }
    }

    pub fn mono(text: impl Into<String>) -> Span {
        Span {
            mono: true,
            ..Span::plain(text)
        }
    }

    pub fn toned(mut self, tone: Tone) -> Span {
        self.tone = tone;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub tone: Tone,
    /// The source's name.
    pub subject: String,
    /// One short sentence: "All 30 snapshots drilled and passed".
    pub headline: String,
    /// Figures under the headline: "Tested restore time 42 s (objective 30 min)".
    pub details: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fact {
    pub label: String,
    pub value: String,
    pub tone: Tone,
    pub mono: bool,
}

impl Fact {
    pub fn new(label: impl Into<String>, value: impl Into<String>) -> Fact {
        Fact {
            label: label.into(),
            value: value.into(),
            tone: Tone::Neutral,
            mono: false,
        }
    }

    pub fn toned(mut self, tone: Tone) -> Fact {
        self.tone = tone;
        self
    }

    pub fn mono(mut self) -> Fact {
        self.mono = true;
        self
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Align {
    #[default]
    Left,
    Right,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Column {
    pub title: String,
    pub align: Align,
    /// Monospace cells (ids, digests).
    pub mono: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub cells: Vec<String>,
    /// Colours the row's marker (PDF) / the row (HTML).
    pub tone: Tone,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    /// Shown instead of an empty table.
    pub empty: String,
}

/// What a value on a chart's y axis is, so ticks read "1 min 30 s" or "1.5 GiB".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Seconds,
    Bytes,
    Count,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    /// Points joined by a line (restore times).
    Line,
    /// One bar per point (sizes).
    Bars,
}

/// A time series over a period: x is seconds since the Unix epoch, inside `x_range`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Chart {
    pub title: String,
    pub kind: ChartKind,
    pub unit: Unit,
    /// The period shown, `[start, end)` in Unix seconds.
    pub x_range: (f64, f64),
    pub points: Vec<Point>,
    /// A horizontal line with its label: the objective (RTO) a value should stay under.
    pub threshold: Option<Threshold>,
    /// Said instead of drawing when there are no points.
    pub empty: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    /// A failed drill is a bad point (drawn in red, and not joined as a restore time).
    pub tone: Tone,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threshold {
    pub y: f64,
    pub label: String,
}
