/*!
The dashboard's look: one stylesheet, inlined in every page (its charts and sparklines are the
report's, `report::chart`). No external assets: the pages work offline and under a strict
Content-Security-Policy.
*/

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
