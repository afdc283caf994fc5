/*!
Prune and Object Lock: before deleting a snapshot (or a base backup, or a WAL file), prune asks
the store until when each of its objects is locked ([`crate::storage::ReadStore::retention`]:
what the store says, else the upload time plus the configured days plus a margin). While any
object is locked, none is deleted: the snapshot stays whole and listed, the report says until
when, and a later prune deletes it. Deleting the manifest and then being refused the data
would leave a snapshot that is neither listed nor gone.

A delete the store refuses all the same (a bucket default longer than ours, a legal hold, two
clocks that disagree) is reported the same way by prune and the rest goes on: nothing is lost,
so neither is an error, and prune exits 0.
*/

use jiff::Timestamp;

use crate::error::Result;
use crate::storage::ReadStore;
use crate::storage::lock::iso8601;

/// Objects that cannot be deleted yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The latest retain-until date among them: the first moment all can go.
    pub until: Timestamp,
    /// How many of the objects are locked.
    pub objects: usize,
    /// Some object is under a legal hold (no date ends it).
    pub legal_hold: bool,
    /// Some date is an estimate (the store did not say).
    pub estimated: bool,
}

/// Whether any of `keys` is still locked at `now`, and until when. One HEAD per key, and none
/// for a store without a lock configured.
pub fn held<S: ReadStore + ?Sized>(
    store: &S,
    keys: &[String],
    now: Timestamp,
) -> Result<Option<Held>> {
    let mut out: Option<Held> = None;
    for k in keys {
        let Some(r) = store.retention(k)? else {
            continue;
        };
        if !r.holds_at(now) {
            continue;
        }
        let h = out.get_or_insert(Held {
            until: r.until,
            objects: 0,
            legal_hold: false,
            estimated: false,
        });
        h.until = h.until.max(r.until);
        h.objects += 1;
        h.legal_hold |= r.legal_hold;
        h.estimated |= r.estimated;
    }
    Ok(out)
}

impl Held {
    /// "kept until DATE by Object Lock: N objects of WHAT; a later prune deletes them".
    pub fn describe(&self, what: &str) -> String {
        let n = match self.objects {
            1 => "1 object".to_string(),
            n => format!("{n} objects"),
        };
        let when = if self.legal_hold {
            "a legal hold is lifted".to_string()
        } else if self.estimated {
            format!(
                "about {} (estimated from the upload time: the store does not say)",
                iso8601(self.until)
            )
        } else {
            iso8601(self.until)
        };
        format!("kept until {when} by Object Lock: {n} of {what}; a later prune deletes them")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_hold_says() {
        let h = Held {
            until: "2026-12-05T17:06:31Z".parse().unwrap(),
            objects: 3,
            legal_hold: false,
            estimated: false,
        };
        assert_eq!(
            h.describe("snapshot db/20261204T170631Z-abcdef"),
            "kept until 2026-12-05T17:06:31Z by Object Lock: 3 objects of snapshot db/20261204T170631Z-abcdef; a later prune deletes them"
        );
        let one = Held {
            objects: 1,
            estimated: true,
            ..h.clone()
        };
        assert!(
            one.describe("x")
                .starts_with("kept until about 2026-12-05T17:06:31Z (estimated"),
            "{}",
            one.describe("x")
        );
        assert!(one.describe("x").contains(": 1 object of x;"));
    }
}
