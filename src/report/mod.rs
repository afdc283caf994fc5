/*!
The monthly Restore Drill Report: the document you forward when someone asks whether the backups
are tested. [`doc`] is the document model both renderers draw.
*/

pub mod compose;
pub mod doc;
pub mod fingerprint;
mod gather;
pub mod html;
pub mod measure;
pub mod model;
pub mod pdf;
