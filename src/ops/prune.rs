/*!
`offsitedb prune`: applies a source's retention policy ([`crate::retention`]) to the repository.

A snapshot is deleted manifest first, so it leaves `list` in one step; its drills and data
follow. Snapshots without a manifest (interrupted uploads, or a prune that stopped half-way) are
removed once they are older than a grace period, and so are the store's unfinished multipart
uploads. An object the store refuses to delete because it is under Object Lock is skipped and
reported, not an error: it is deleted by a later prune once its retention ends. While the
source's backups fail, nothing at all is deleted.

"Newest" and the hold are decided at `now` from the snapshots this machine's clock has reached
(see [`crate::retention`]): a future-dated snapshot is kept and named in the plan, and a snapshot
whose latest drill record is unreadable is kept whatever the policy says.
*/

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::catalog::{SnapshotId, Summary, repo};
use crate::error::{Error, ErrorKind, Result};
use crate::retention::{Candidate, Keep, Plan};
use crate::storage::WriteStore;

/// How long a snapshot without a manifest may be an upload still in progress.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(48 * 3600);

#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub keep: Keep,
    pub tz: TimeZone,
    pub dry_run: bool,
    /// Why the source's newest backups count as failing, from the run history.
    pub failing: Option<String>,
    pub grace: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    pub source: String,
    pub dry_run: bool,
    pub policy: String,
    pub plan: Plan,
    /// Snapshots whose deletion finished.
    pub deleted: Vec<String>,
    /// Objects left alone, with why (Object Lock).
    pub skipped: Vec<String>,
    /// Leftovers without a manifest (interrupted uploads) that were, or would be, removed.
    pub leftovers_removed: Vec<String>,
    /// Leftovers still within the grace period.
    pub leftovers_kept: Vec<String>,
    pub unfinished_uploads_aborted: usize,
}

/// Prunes one source. `snapshots` are its summaries (from [`super::list::list`]).
pub fn run<S: WriteStore + ?Sized>(
    repository: &crate::catalog::Repository<S>,
    source: &str,
    snapshots: &[Summary],
    opts: &PruneOptions,
    now: Timestamp,
) -> Result<PruneReport> {
    let store = repository.store();
    let candidates: Vec<Candidate> = snapshots
        .iter()
        .filter(|s| s.source == source)
        .map(|s| Candidate {
            id: s.id.to_string(),
            // A snapshot is as new as its id or its manifest says, whichever is later: either
            // can be forged or come from a host whose clock runs ahead.
            time: s.created.max(s.id.time()),
            status: s.status,
            pinned: s.drill_unreadable.then(|| {
                "its latest drill record is unreadable: counted as a failed drill, and kept until a drill writes a readable one".to_string()
            }),
        })
        .collect();
    // The newest snapshot failing its drill, or damaged, counts as failing backups too: the
    // plan decides that from the snapshots this machine's clock has reached.
    let plan = crate::retention::plan(
        &candidates,
        &opts.keep,
        &opts.tz,
        opts.failing.as_deref(),
        now,
    );
    let mut report = PruneReport {
        source: source.to_string(),
        dry_run: opts.dry_run,
        policy: opts.keep.to_string(),
        plan,
        deleted: Vec::new(),
        skipped: Vec::new(),
        leftovers_removed: Vec::new(),
        leftovers_kept: Vec::new(),
        unfinished_uploads_aborted: 0,
    };

    // Every object of the source, by snapshot id.
    let prefix = format!("snapshots/{source}/");
    let mut objects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in store.list(&prefix)? {
        if let Some(id) = o.key[prefix.len()..].split('/').next() {
            objects
                .entry(id.to_string())
                .or_default()
                .push(o.key.clone());
        }
    }

    let doomed: Vec<String> = report.plan.deletions().map(|d| d.id.clone()).collect();
    for id in doomed {
        if opts.dry_run {
            continue;
        }
        let sid = SnapshotId::parse(&id)?;
        let keys = objects.remove(&id).unwrap_or_default();
        match delete_snapshot(store, source, &sid, &keys)? {
            None => report.deleted.push(id),
            Some(why) => report.skipped.push(format!("{id}: {why}")),
        }
    }

    // While backups fail nothing at all is deleted, leftovers included.
    let hold = report.plan.held.is_some();

    // Leftovers: ids with objects but no manifest.
    let listed: std::collections::BTreeSet<String> =
        snapshots.iter().map(|s| s.id.to_string()).collect();
    for (id, keys) in objects {
        // Not a snapshot id: not ours to touch.
        let Ok(sid) = SnapshotId::parse(&id) else {
            continue;
        };
        if listed.contains(&id) || keys.contains(&repo::manifest_key(source, &sid)) {
            continue;
        }
        let age = now.duration_since(sid.time());
        if hold || age.as_secs() < opts.grace.as_secs() as i64 {
            report.leftovers_kept.push(if hold {
                format!("{id} (interrupted upload, kept while backups fail)")
            } else {
                format!("{id} (started {}, may still be uploading)", sid.time())
            });
            continue;
        }
        if !opts.dry_run {
            if let Some(why) = delete_snapshot(store, source, &sid, &keys)? {
                report.skipped.push(format!("{id}: {why}"));
                continue;
            }
        }
        report.leftovers_removed.push(id);
    }

    for u in store.incomplete_uploads(&prefix)? {
        let old = u
            .started
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok())
            // An upload of unknown age may be a backup running right now: left alone.
            .is_some_and(|t| now.duration_since(t).as_secs() >= opts.grace.as_secs() as i64);
        if old && !hold {
            if !opts.dry_run {
                store.abort_incomplete(&u)?;
            }
            report.unfinished_uploads_aborted += 1;
        }
    }
    Ok(report)
}

/// Deletes one snapshot's objects, manifest first. `Some(reason)` when the store refused
/// because of Object Lock (then nothing after the refused object is attempted).
fn delete_snapshot<S: WriteStore + ?Sized>(
    store: &S,
    source: &str,
    id: &SnapshotId,
    keys: &[String],
) -> Result<Option<String>> {
    let manifest = repo::manifest_key(source, id);
    let mut order: Vec<&String> = keys.iter().filter(|k| **k == manifest).collect();
    order.extend(keys.iter().filter(|k| **k != manifest));
    if order.is_empty() {
        // Listed before but gone now: someone else pruned it.
        return Ok(None);
    }
    for k in order {
        match store.delete(k) {
            Ok(()) => {}
            Err(e) if locked(&e) => {
                return Ok(Some(format!(
                    "the store refuses to delete {k} (Object Lock retention?): {}",
                    e.message()
                )));
            }
            Err(e) => return Err(e.context(format!("cannot delete snapshot {source}/{id}"))),
        }
    }
    Ok(None)
}

/// The store refused because of Object Lock (S3 answers "Access Denied because object protected
/// by object lock"). A plain access denied (a key without delete permission) stays an error: a
/// retention that can never delete must not look like one that works.
fn locked(e: &Error) -> bool {
    e.kind() == ErrorKind::Storage && {
        let m = e.message().to_ascii_lowercase();
        m.contains("object lock") || m.contains("objectlock") || m.contains("retention")
    }
}
