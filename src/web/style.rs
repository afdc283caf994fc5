/*!
The dashboard's look: one stylesheet and one sparkline, each a single function so the report's
(`report::html` CSS, `report::chart::sparkline`) can take their place. No external assets: the
pages work offline and under a strict Content-Security-Policy.
*/

use maud::{Markup, html};

/// The stylesheet, inlined in every page.
pub fn css() -> &'static str {
    r#"
:root{--fg:#1b1f24;--muted:#57606a;--bg:#fff;--line:#d0d7de;--green:#1a7f37;--amber:#9a6700;--red:#cf222e;--link:#0550ae}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--link)}
a:focus-visible,button:focus-visible,input:focus-visible,summary:focus-visible{outline:3px solid #0969da;outline-offset:2px}
.skip{position:absolute;left:-999px;top:0;background:#fff;padding:.5rem}
.skip:focus{left:.5rem}
header,main,footer{max-width:72rem;margin:0 auto;padding:.75rem 1rem}
header{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;border-bottom:1px solid var(--line)}
header nav a{margin-right:1rem}
header form{margin-left:auto}
h1{font-size:1.5rem;margin:.5rem 0}
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}
.table{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.95rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:700;white-space:nowrap}
.state::before{content:"";display:inline-block;width:.7em;height:.7em;border-radius:50%;margin-right:.35em;background:currentColor}
.green{color:var(--green)}.amber{color:var(--amber)}.red{color:var(--red)}
ul.reasons{margin:.25rem 0;padding-left:1.1rem}
.msg{border:2px solid var(--green);padding:.5rem 1rem;border-radius:4px}
.msg.bad{border-color:var(--red)}
pre{background:#f6f8fa;padding:.5rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
button{font:inherit;padding:.35rem .8rem;border:1px solid var(--fg);border-radius:4px;background:#f6f8fa;cursor:pointer}
input{font:inherit;padding:.3rem}
.actions{display:flex;gap:.5rem;flex-wrap:wrap}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}
dt{font-weight:600}dd{margin:0}
.muted{color:var(--muted)}
svg.spark{vertical-align:middle}
@media (max-width:40rem){dl{grid-template-columns:1fr}th,td{padding:.3rem}
table.cards thead{position:absolute;left:-9999px}
table.cards tr{display:block;border-bottom:2px solid var(--line);padding:.5rem 0}
table.cards th,table.cards td{display:block;border:0;text-align:left}
table.cards td[data-label]::before{content:attr(data-label) ": ";font-weight:600}}
"#
}

/// A small line of `values` (oldest first), `label` read out for screen readers; empty when there
/// is nothing to draw.
pub fn sparkline(values: &[f64], label: &str) -> Markup {
    if values.is_empty() {
        return html! {};
    }
    let (w, h) = (120.0, 24.0);
    let max = values.iter().cloned().fold(f64::MIN, f64::max).max(0.001);
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - 2.0 - (v / max) * (h - 4.0)
            )
        })
        .collect();
    html! {
        svg class="spark" role="img" width=(w) height=(h) viewBox={"0 0 " (w) " " (h)} aria-label=(label) {
            @if values.len() == 1 {
                circle cx="3" cy=(points[0].split(',').nth(1).unwrap_or("12")) r="3" fill="#0550ae" {}
            } @else {
                polyline fill="none" stroke="#0550ae" stroke-width="2" points=(points.join(" ")) {}
            }
        }
    }
}
