//! The report renderers on a synthetic document: the PDF checked with Debian's poppler-utils (page
//! size and count, embedded fonts, extracted text, the attachment), pages 1 and 2 rendered to PNG
//! under target/test-artifacts/report/ for a person to look at; the HTML checked for being one
//! self-contained, escaped file.

use std::path::{Path, PathBuf};
use std::process::Command;

use offsitedb::report::doc::{
    Align, Block, Chart, ChartKind, Column, Document, Fact, Point, Row, Section, Span, Table,
    Threshold, Tone, Unit, Verdict,
};
use offsitedb::report::{html, pdf};

const NOV_1: f64 = 1_793_491_200.0; // 2026-11-01T00:00:00Z
const DAY: f64 = 86_400.0;
/// The report's JSON: long and repetitive, so that any compression would change its bytes.
fn attachment() -> String {
    let drills: Vec<String> = (1..=60)
        .map(|i| {
            format!(
                r#"{{"snapshot":"snap-{i:04}","result":"passed","seconds":{}}}"#,
                30 + i
            )
        })
        .collect();
    format!(
        r#"{{"format":"offsitedb-report/1","period":"2026-11","sources":[{{"name":"billing","note":"</script><b>not markup</b>","drills":[{}]}}]}}"#,
        drills.join(",")
    )
}

fn verdict(tone: Tone, subject: &str, headline: &str, details: &[&str]) -> Verdict {
    Verdict {
        tone,
        subject: subject.into(),
        headline: headline.into(),
        details: details.iter().map(|d| d.to_string()).collect(),
    }
}

fn column(title: &str, align: Align, mono: bool) -> Column {
    Column {
        title: title.into(),
        align,
        mono,
    }
}

/// A month of drills for three sources: every kind of block, a table long enough to paginate,
/// two charts (one with a failed point and an objective), long paragraphs.
fn sample() -> Document {
    let long = "Every snapshot taken this month was restored into a throwaway PostgreSQL cluster \
                and checked: the restore finished, the row counts matched the source at the time \
                of the dump, and the checksums of the stored objects matched their manifests. "
        .repeat(3);
    let rows = (1..=60)
        .map(|i| {
            let failed = i % 17 == 0;
            Row {
                cells: vec![
                    format!("2026-11-{:02} 03:{:02}", (i - 1) / 2 + 1, i % 60),
                    ["billing", "crm", "analytics-warehouse-with-a-long-name"][i % 3].into(),
                    format!("snap-{i:04}-7f3a9c2e41d8b6a05e9d3c7b1f2a4e6d8c0b9a7f"),
                    format!("{} s", 30 + i),
                    if failed { "failed" } else { "passed" }.into(),
                ],
                tone: if failed { Tone::Bad } else { Tone::Neutral },
            }
        })
        .collect();
    let restore_points = (0..30)
        .map(|d| Point {
            x: NOV_1 + d as f64 * DAY + 3.0 * 3600.0,
            y: if d == 12 {
                2400.0
            } else {
                40.0 + (d % 7) as f64 * 9.0
            },
            tone: if d == 12 { Tone::Bad } else { Tone::Good },
        })
        .collect();
    let size_points = (0..30)
        .map(|d| Point {
            x: NOV_1 + d as f64 * DAY + 3.0 * 3600.0,
            y: 1.2e9 + d as f64 * 2.5e7,
            tone: Tone::Neutral,
        })
        .collect();
    Document {
        title: "Restore Drill Report".into(),
        subtitle: "November 2026 · s3://acme-backups/prod".into(),
        running_header: "Restore Drill Report — November 2026 — s3://acme-backups/prod".into(),
        footer: "OffsiteDB 0.1.0 · generated 2026-12-01 06:00 UTC · report fingerprint \
                 sha256:4f2a9c0e7b1d3f5a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a"
            .into(),
        sections: vec![
            Section {
                heading: "Summary".into(),
                new_page: false,
                blocks: vec![
                    Block::Verdicts(vec![
                        verdict(
                            Tone::Good,
                            "crm",
                            "All 30 snapshots drilled and passed",
                            &[
                                "Tested restore time 42 s (objective 30 min)",
                                "Newest snapshot 3 h old",
                            ],
                        ),
                        verdict(
                            Tone::Warning,
                            "analytics",
                            "Drills passed but the newest is 9 days old",
                            &["Drill schedule: weekly; 4 of 4 passed"],
                        ),
                        verdict(
                            Tone::Bad,
                            "billing",
                            "2 of 30 drills failed this month",
                            &["Last failure 2026-11-13: pg_restore exited with status 1"],
                        ),
                    ]),
                    Block::Paragraph(vec![
                        Span::plain(long.clone()),
                        Span::bold("Bold words, "),
                        Span::mono("offsitedb drill --source billing"),
                        Span::plain(" and "),
                        Span::plain("a failing figure").toned(Tone::Bad),
                        Span::plain(" in one paragraph."),
                    ]),
                ],
            },
            Section {
                heading: "Repository".into(),
                new_page: false,
                blocks: vec![
                    Block::Facts(vec![
                        Fact::new("Repository", "s3://acme-backups/prod"),
                        Fact::new("Key fingerprint", "a1b2c3d4e5f60718293a4b5c6d7e8f90").mono(),
                        Fact::new("Drills this month", "88 passed, 2 failed").toned(Tone::Bad),
                        Fact::new("Stored", "41.3 GiB in 1 204 objects").toned(Tone::Good),
                    ]),
                    Block::Note("Sizes are after compression and encryption.".into()),
                ],
            },
            Section {
                heading: "Restore times".into(),
                new_page: true,
                blocks: vec![
                    Block::Subheading("billing".into()),
                    Block::Chart(Chart {
                        title: "Restore time, billing".into(),
                        kind: ChartKind::Line,
                        unit: Unit::Seconds,
                        x_range: (NOV_1, NOV_1 + 30.0 * DAY),
                        points: restore_points,
                        threshold: Some(Threshold {
                            y: 1800.0,
                            label: "objective 30 min".into(),
                        }),
                        empty: "No drills ran".into(),
                    }),
                    Block::Chart(Chart {
                        title: "Snapshot size, billing".into(),
                        kind: ChartKind::Bars,
                        unit: Unit::Bytes,
                        x_range: (NOV_1, NOV_1 + 30.0 * DAY),
                        points: size_points,
                        threshold: None,
                        empty: "No snapshots".into(),
                    }),
                    Block::Paragraph(vec![Span::plain(long)]),
                ],
            },
            Section {
                heading: "Every drill".into(),
                new_page: true,
                blocks: vec![
                    Block::Table(Table {
                        columns: vec![
                            column("When", Align::Left, false),
                            column("Source", Align::Left, false),
                            column("Snapshot", Align::Left, true),
                            column("Restore time", Align::Right, false),
                            column("Result", Align::Left, false),
                        ],
                        rows,
                        empty: "No drills ran".into(),
                    }),
                    Block::Note("A failed drill is marked with a red cross.".into()),
                ],
            },
        ],
        attachment: Some(attachment()),
    }
}

/// Runs a poppler tool, failing loudly when it is not installed.
pub fn poppler(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {tool} ({e}): install Debian's poppler-utils \
             (`apt-get install -y poppler-utils`; scripts/test.sh does it)"
        )
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/report");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn check_pdf(paper: pdf::Paper, name: &str, size: (f64, f64)) {
    let doc = sample();
    let bytes = pdf::render(&doc, paper).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.pdf"));
    std::fs::write(&file, &bytes).unwrap();
    let path = file.to_str().unwrap();

    let info = poppler("pdfinfo", &[path]);
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in pdfinfo output:\n{info}"))
            .trim()
            .to_string()
    };
    let dims: Vec<f64> = field("Page size:")
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    assert!(
        (dims[0] - size.0).abs() < 0.5 && (dims[1] - size.1).abs() < 0.5,
        "page size {dims:?}, want {size:?}"
    );
    let pages: usize = field("Pages:").parse().unwrap();
    assert!(pages > 2, "{pages} pages: the table should paginate");
    assert_eq!(field("Title:"), "Restore Drill Report");
    assert!(field("Creator:").starts_with("OffsiteDB "), "{info}");
    assert!(!field("CreationDate:").is_empty());

    let fonts = poppler("pdffonts", &[path]);
    let dejavu: Vec<&str> = fonts.lines().filter(|l| l.contains("DejaVu")).collect();
    for face in ["DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono"] {
        assert!(
            dejavu.iter().any(|l| l.contains(&format!("+{face} "))),
            "{face} missing:\n{fonts}"
        );
    }
    for l in &dejavu {
        let t: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(t[t.len() - 5], "yes", "not embedded: {l}");
    }

    let text = poppler("pdftotext", &["-layout", path, "-"]);
    let last = &doc.sections[3].blocks[0];
    let Block::Table(table) = last else { panic!() };
    let mut wanted = vec![
        "Restore Drill Report",
        "All 30 snapshots drilled and passed",
        "Drills passed but the newest is 9 days old",
        "2 of 30 drills failed this month",
        "Restore time, billing",
        "Snapshot size, billing",
        "objective 30 min",
        "page 1 of",
        "FAILED",
        "WARNING",
        "88 passed, 2 failed",
    ];
    let last_row = &table.rows[59].cells;
    wanted.extend([last_row[0].as_str(), "90 s", "passed"]);
    for w in wanted {
        assert!(text.contains(w), "{w:?} not in the PDF's text:\n{text}");
    }
    assert!(text.contains(&format!("page {pages} of {pages}")));
    // Long cells are cut, not spilled into the next column.
    assert!(text.contains("…"), "{text}");
    let page2 = poppler("pdftotext", &["-layout", "-f", "2", "-l", "2", path, "-"]);
    assert!(page2.contains(&doc.running_header), "page 2:\n{page2}");
    // The table's last page repeats its header row.
    let n = pages.to_string();
    let last_page = poppler("pdftotext", &["-layout", "-f", &n, "-l", &n, path, "-"]);
    assert!(
        last_page.contains("Snapshot") && last_page.contains("Restore time"),
        "no header row on the last page:\n{last_page}"
    );
    let page1 = poppler("pdftotext", &["-layout", "-f", "1", "-l", "1", path, "-"]);
    assert!(
        !page1.contains(&doc.running_header),
        "page 1 has the title instead"
    );

    // The attachment's bytes are in the file as they are (uncompressed).
    assert!(
        bytes
            .windows(attachment().len())
            .any(|w| w == attachment().as_bytes()),
        "report.json is not stored verbatim"
    );

    let out = artifacts();
    let prefix = out.join(name);
    poppler(
        "pdftoppm",
        &[
            "-png",
            "-r",
            "60",
            "-f",
            "1",
            "-l",
            "2",
            path,
            prefix.to_str().unwrap(),
        ],
    );
    std::fs::copy(&file, out.join(format!("{name}.pdf"))).unwrap();
    let pngs = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&format!("{name}-")) && n.ends_with(".png")
        })
        .count();
    assert!(
        pngs >= 2,
        "pdftoppm wrote {pngs} pages into {}",
        out.display()
    );
}

#[test]
fn pdf_on_a4() {
    check_pdf(pdf::Paper::A4, "a4", (595.28, 841.89));
}

#[test]
fn pdf_on_letter() {
    check_pdf(pdf::Paper::Letter, "letter", (612.0, 792.0));
}

#[test]
fn html_is_one_escaped_self_contained_file() {
    let mut doc = sample();
    let Block::Verdicts(vs) = &mut doc.sections[0].blocks[0] else {
        panic!()
    };
    vs[0].subject = "<script>alert('pwned')</script>".into();
    doc.sections[1]
        .blocks
        .push(Block::Note("Docs: https://example.invalid/report".into()));
    let page = html::render(&doc);
    std::fs::write(artifacts().join("report.html"), &page).unwrap();

    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains(r#"name="viewport""#));
    assert!(!page.contains("<script>alert"), "the source name is markup");
    assert!(page.contains("&lt;script&gt;alert("));
    assert!(!page.contains("<script src"));
    assert!(!page.contains("<link"));
    // The only URL is the one the document says in its own text.
    let urls: Vec<&str> = page
        .match_indices("http")
        .map(|(i, _)| &page[i..i + 30])
        .collect();
    for u in &urls {
        assert!(
            u.starts_with("https://example.invalid/report")
                || u.starts_with("http://www.w3.org/2000/svg"),
            "external reference {u:?}"
        );
    }
    // Every verdict, in words as well as colour; charts inline.
    for w in [
        "All 30 snapshots drilled and passed",
        "2 of 30 drills failed this month",
        "FAILED",
        "WARNING",
        "<svg",
        "Restore time, billing",
    ] {
        assert!(page.contains(w), "{w:?} missing");
    }
    // The attachment is embedded and cannot close its script element.
    let start = r#"<script type="application/json" id="offsitedb-report">"#;
    let body = page.split(start).nth(1).expect("attachment embedded");
    let body = body.split("</script>").next().unwrap();
    assert_eq!(body.replace("\\u003c", "<"), attachment());
    assert!(!body.contains("</"));
}
