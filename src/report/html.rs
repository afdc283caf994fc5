//! Placeholder until the renderer lands (replaced by the renderer branch).
pub fn render(d: &super::doc::Document) -> String {
    format!("{d:?}")
}
