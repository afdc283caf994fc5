/*!
The report as one self-contained HTML file: inline CSS, inline SVG charts, no scripts, fonts,
images or links to fetch, so it can be mailed, archived and opened offline years later. It reads on
a phone (a narrow column, tables that scroll sideways) and prints cleanly (sections that ask for a
new page get one).

maud escapes every string the document supplies. The only raw markup is what this module and
[`chart::svg`] write, and the attachment, whose `</` is written `<\/` (the same JSON to a parser)
so it cannot close its `<script>` element.

[`style`], [`block`] and [`marker`] are public so the dashboard can draw with the same look.
*/

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::chart::{self, Colour};
use super::doc::{Align, Block, Document, Fact, Span, Table, Tone, Verdict};

/// Width and height a chart is drawn at (it scales down to the column on a phone).
pub const CHART_SIZE: (f64, f64) = (720.0, 220.0);

/// The report's stylesheet: the PDF's colours and type, for screen and print.
pub fn style() -> &'static str {
    r#":root{--good:#1a7f37;--warning:#9a6700;--bad:#cf222e;--text:#1f2328;--grey:#57606a;--rule:#d0d7de;--shade:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;color:var(--text);background:#fff;font:15px/1.5 "DejaVu Sans",-apple-system,"Segoe UI",Helvetica,Arial,sans-serif}
.report{max-width:860px;margin:0 auto;padding:24px 16px 48px}
.title{border-bottom:2px solid var(--text);margin-bottom:1.2em}
h1{font-size:1.9em;line-height:1.2;margin:0 0 .2em}
.subtitle{color:var(--grey);margin:0 0 .8em}
h2{font-size:1.35em;border-bottom:1px solid var(--rule);padding-bottom:.2em;margin:1.6em 0 .6em}
section.new-page{border-top:3px double var(--rule);margin-top:2.2em;padding-top:.2em}
h3{font-size:1.05em;margin:1.2em 0 .4em}
.tone-good{color:var(--good)}.tone-warning{color:var(--warning)}.tone-bad{color:var(--bad)}
.verdicts{list-style:none;padding:0;margin:0 0 1em}
.verdict{position:relative;padding:.55em 0 .6em 1.7em;border-bottom:1px solid var(--rule)}
.verdict>.marker{position:absolute;left:.1em;top:.95em}
.verdict .word{font-weight:bold;margin-right:.6em;letter-spacing:.02em}
.verdict .subject{font-weight:bold;overflow-wrap:anywhere}
.verdict .headline{font-size:1.35em;line-height:1.3;margin:.1em 0}
.verdict .details{list-style:none;padding:0;margin:0;color:var(--grey);font-size:.9em}
code,.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.92em;overflow-wrap:anywhere}
.facts{display:grid;grid-template-columns:minmax(8em,max-content) 1fr;gap:.25em 1.2em;margin:0 0 1em}
.facts dt{color:var(--grey)}.facts dd{margin:0;overflow-wrap:anywhere}
.facts .marker{margin-right:.4em}
.table-scroll{overflow-x:auto;margin:0 0 1em;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:.88em;min-width:100%}
th{background:var(--shade);color:var(--grey);text-align:left;border-bottom:1px solid var(--grey);white-space:nowrap}
th,td{padding:.3em .55em;vertical-align:top}
td{border-bottom:1px solid var(--rule);white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums}
td.mark{padding-right:0;width:1em}
tr.tone-good td{color:var(--good)}tr.tone-warning td{color:var(--warning)}tr.tone-bad td{color:var(--bad)}
tr td:nth-child(2){color:var(--text)}
.chart{margin:.6em 0 1.2em}.chart svg{display:block;max-width:100%;height:auto}
.note{color:var(--grey);font-size:.85em}
.small-print{color:var(--grey);font-size:.75em;border-top:1px solid var(--rule);margin-top:2.5em;padding-top:.6em;overflow-wrap:anywhere}
.marker{display:inline-block;vertical-align:baseline}
@media (max-width:600px){body{font-size:14px}.facts{grid-template-columns:1fr;gap:0}.facts dd{margin-bottom:.5em}.verdict .headline{font-size:1.2em}}
@media print{body{font-size:10pt}.report{max-width:none;padding:0}section.new-page{break-before:page;border-top:0;margin-top:0}
.verdict,.chart,tr,.facts{break-inside:avoid}h2,h3{break-after:avoid}thead{display:table-header-group}
.table-scroll{overflow:visible}td{white-space:normal}*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
@page{margin:18mm}
"#
}

/// The CSS class of a tone (`tone-bad`); empty for neutral.
pub fn tone_class(tone: Tone) -> &'static str {
    match tone {
        Tone::Neutral => "",
        Tone::Good => "tone-good",
        Tone::Warning => "tone-warning",
        Tone::Bad => "tone-bad",
    }
}

/// The tone's marker as in the PDF: a dot (good), a square (warning), a cross (bad), a small grey
/// dot (neutral); shapes differ so a grey print still tells them apart.
pub fn marker(tone: Tone) -> Markup {
    let c = match tone {
        Tone::Neutral => Colour::GREY,
        t => Colour::of(t),
    }
    .hex();
    let shape = match tone {
        Tone::Good => format!(r#"<circle cx="5" cy="5" r="4.5" fill="{c}"/>"#),
        Tone::Neutral => format!(r#"<circle cx="5" cy="5" r="2.7" fill="{c}"/>"#),
        Tone::Warning => format!(r#"<rect x="1" y="1" width="8" height="8" fill="{c}"/>"#),
        Tone::Bad => format!(
            r#"<path d="M1 1L9 9M1 9L9 1" stroke="{c}" stroke-width="2.6" stroke-linecap="square"/>"#
        ),
    };
    PreEscaped(format!(
        r#"<svg class="marker" viewBox="0 0 10 10" width="10" height="10" aria-hidden="true">{shape}</svg>"#
    ))
}

/// A chart as inline SVG (without the namespace URL, which inline SVG does not need).
pub fn chart_svg(c: &super::doc::Chart) -> Markup {
    let svg = chart::svg(c, CHART_SIZE.0, CHART_SIZE.1);
    PreEscaped(svg.replacen(r#" xmlns="http://www.w3.org/2000/svg""#, "", 1))
}

fn span(s: &Span) -> Markup {
    let inner = html! {
        @if s.mono { code { (s.text) } } @else { (s.text) }
    };
    let inner = if s.bold {
        html! { strong { (inner) } }
    } else {
        inner
    };
    if s.tone == Tone::Neutral {
        inner
    } else {
        html! { span class=(tone_class(s.tone)) { (inner) } }
    }
}

fn verdict(v: &Verdict) -> Markup {
    html! {
        li class={ "verdict " (tone_class(v.tone)) } {
            (marker(v.tone))
            @if !v.tone.word().is_empty() { span class="word" { (v.tone.word()) } }
            span class="subject" { (v.subject) }
            p class="headline" { (v.headline) }
            @if !v.details.is_empty() {
                ul class="details" { @for d in &v.details { li { (d) } } }
            }
        }
    }
}

fn dd_class(f: &Fact) -> Option<String> {
    let class = format!(
        "{} {}",
        tone_class(f.tone),
        if f.mono { "mono" } else { "" }
    );
    let class = class.trim();
    (!class.is_empty()).then(|| class.to_string())
}

fn facts(facts: &[Fact]) -> Markup {
    html! {
        dl class="facts" {
            @for f in facts {
                dt { (f.label) }
                dd class=[dd_class(f)] {
                    @if f.tone != Tone::Neutral { (marker(f.tone)) }
                    (f.value)
                }
            }
        }
    }
}

fn table(t: &Table) -> Markup {
    if t.rows.is_empty() || t.columns.is_empty() {
        return html! { p class="note" { (t.empty) } };
    }
    let marks = t.rows.iter().any(|r| r.tone != Tone::Neutral);
    let class = |c: usize| {
        let col = &t.columns[c];
        match (col.align, col.mono) {
            (Align::Right, true) => "num mono",
            (Align::Right, false) => "num",
            (Align::Left, true) => "mono",
            (Align::Left, false) => "",
        }
    };
    html! {
        div class="table-scroll" {
            table {
                thead { tr {
                    @if marks { th class="mark" {} }
                    @for (c, col) in t.columns.iter().enumerate() { th class=(class(c)) { (col.title) } }
                } }
                tbody {
                    @for row in &t.rows {
                        tr class=(tone_class(row.tone)) {
                            @if marks {
                                td class="mark" { @if row.tone != Tone::Neutral { (marker(row.tone)) } }
                            }
                            @for c in 0..t.columns.len() {
                                td class=(class(c)) { (row.cells.get(c).map(String::as_str).unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One block as HTML, styled by [`style`].
pub fn block(b: &Block) -> Markup {
    match b {
        Block::Verdicts(vs) => html! { ul class="verdicts" { @for v in vs { (verdict(v)) } } },
        Block::Paragraph(spans) => html! { p { @for s in spans { (span(s)) } } },
        Block::Subheading(text) => html! { h3 { (text) } },
        Block::Facts(fs) => facts(fs),
        Block::Table(t) => table(t),
        Block::Chart(c) => html! { figure class="chart" { (chart_svg(c)) } },
        Block::Note(text) => html! { p class="note" { (text) } },
    }
}

/// The document as one HTML file.
pub fn render(doc: &Document) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="generator" content={ "OffsiteDB " (crate::VERSION) };
                title { (doc.running_header) }
                style { (PreEscaped(style())) }
            }
            body {
                main class="report" {
                    header class="title" {
                        h1 { (doc.title) }
                        p class="subtitle" { (doc.subtitle) }
                    }
                    @for (i, s) in doc.sections.iter().enumerate() {
                        section class=[(s.new_page && i > 0).then_some("new-page")] {
                            h2 { (s.heading) }
                            @for b in &s.blocks { (block(b)) }
                        }
                    }
                    footer class="small-print" { (doc.footer) }
                }
                @if let Some(json) = &doc.attachment {
                    script type="application/json" id="offsitedb-report" {
                        // `<` only appears inside JSON strings, where \u003c means the same: nothing in
                        // the data can close the tag or open a comment.
                        (PreEscaped(json.replace('<', "\\u003c")))
                    }
                }
            }
        }
    };
    page.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::doc::Section;

    fn doc(blocks: Vec<Block>, attachment: Option<&str>) -> Document {
        Document {
            title: "Restore Drill Report".into(),
            subtitle: "November 2026".into(),
            running_header: "Restore Drill Report — November 2026".into(),
            footer: "OffsiteDB".into(),
            sections: vec![Section {
                heading: "Summary".into(),
                new_page: false,
                blocks,
            }],
            attachment: attachment.map(str::to_string),
        }
    }

    #[test]
    fn document_text_is_escaped_everywhere() {
        let evil = "<img src=x onerror=alert(1)>";
        let d = doc(
            vec![
                Block::Verdicts(vec![Verdict {
                    tone: Tone::Bad,
                    subject: evil.into(),
                    headline: evil.into(),
                    details: vec![evil.into()],
                }]),
                Block::Paragraph(vec![Span::mono(evil).toned(Tone::Warning)]),
                Block::Facts(vec![Fact::new(evil, evil)]),
                Block::Note(evil.into()),
            ],
            None,
        );
        let page = render(&d);
        assert!(!page.contains("<img"), "{page}");
        assert_eq!(page.matches("&lt;img src=x").count(), 7, "{page}");
        assert!(
            !page.contains("<script"),
            "no attachment, no script element"
        );
        assert!(page.contains(">FAILED<"));
    }

    #[test]
    fn attachment_cannot_close_its_script_element() {
        let json = r#"{"name":"</script><script>alert(1)</script>"}"#;
        let page = render(&doc(vec![], Some(json)));
        assert_eq!(page.matches("</script>").count(), 1, "{page}");
        assert!(page.contains(r#"{"name":"\u003c/script>\u003cscript>alert(1)\u003c/script>"}"#));
    }
}
