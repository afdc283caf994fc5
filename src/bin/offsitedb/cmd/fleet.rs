//! `offsitedb fleet`: the workers and every scheduled job, from the (shared) state.

use anyhow::Result;

use super::Global;
use crate::output;

/// The workers of a fleet (last heartbeat, labels, what they run) and every source's jobs
/// (next due time, who runs them, the last result), from the shared state database
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, g: &Global) -> Result<()> {
    let s = g.settings()?;
    let at = s.state_at()?;
    if !at.exists() {
        output::info(&format!(
            "no state yet ({} does not exist): start `offsitedb serve`",
            at.describe()
        ));
        return Ok(());
    }
    let view = offsitedb::ops::fleet::view(&at.open()?, jiff::Timestamp::now())?;
    if g.json {
        super::print_json(&view)
    } else {
        output::fleet(&view);
        Ok(())
    }
}
