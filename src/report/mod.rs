/*!
The monthly Restore Drill Report: the document you forward when someone asks whether the backups
are tested. [`doc`] is the document model both renderers draw: [`pdf`] (pages, with [`fonts`] to
measure text) and [`html`] (one self-contained file); [`chart`] lays charts out once for both and
for the dashboard.
*/

pub mod chart;
pub mod doc;
pub mod fonts;
pub mod html;
pub mod pdf;
