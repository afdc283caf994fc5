//! Placeholder until the renderer lands (replaced by the renderer branch).
use super::doc::Document;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paper {
    A4,
    Letter,
}
impl std::str::FromStr for Paper {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Paper> {
        match s {
            "a4" => Ok(Paper::A4),
            "letter" => Ok(Paper::Letter),
            _ => Err(crate::Error::config("paper")),
        }
    }
}
pub fn render(_d: &Document, _p: Paper) -> crate::Result<Vec<u8>> {
    Err(crate::Error::internal("pdf: not yet"))
}
