/*!
The monthly Restore Drill Report: the document you forward when someone asks whether the backups
are tested. [`model`] is its content, read from the repository ([`measure`] holds the pure
judgements, [`fingerprint`] the keyed digest); [`compose`] says it as a document. [`doc`] is the
document model both renderers draw: [`pdf`] (pages, with [`fonts`] to measure text) and [`html`]
(one self-contained file); [`chart`] lays charts out once for both and for the dashboard.
*/

pub mod chart;
pub mod compose;
pub mod doc;
pub mod fingerprint;
pub mod fonts;
mod gather;
pub mod html;
pub mod measure;
pub mod model;
pub mod pdf;
