/*!
The monthly Restore Drill Report: the document you forward when someone asks whether the backups
are tested. [`doc`] is the document model both renderers draw.
*/

pub mod chart;
pub mod doc;
pub mod fonts;
pub mod html;
pub mod pdf;
