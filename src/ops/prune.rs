/*!
`offsitedb prune`: applies a source's retention policy ([`crate::retention`]) to the repository.

A snapshot is deleted manifest first, so it leaves `list` in one step; its drills and data
follow. Snapshots without a manifest (interrupted uploads, or a prune that stopped half-way) are
removed once they are older than a grace period, and so are the store's unfinished multipart
uploads. An object under Object Lock is not tried, and one the store refuses to delete anyway
is skipped; both are reported, not errors: a later prune deletes them once their retention ends
([`super::prune_lock`]). While the source's backups fail, nothing at all is deleted.

Base backups (point-in-time recovery) follow the same `keep` rules as snapshots, in a plan of
their own, with their PITR drills (`drill --pitr`) as a snapshot's drills: the latest record
that is not future-dated makes one sealed (passed) or drill failed (failed, or unreadable: then
it is also kept), so the newest drill-passed base backup is kept while newer ones fail their
drills, and a newest one that failed holds everything. One whose data object is missing or of
the wrong size counts as damaged (and holds everything when it is the newest). A chain is kept whole: an incremental that is kept keeps every base backup it is based
on, down to its full backup, with a reason saying so ([`crate::retention::keep_needed`]); one
whose chain has a missing link counts as damaged. They are deleted manifest first too. Then the WAL: every file (segments, `.partial`,
`.backup`) below the start segment of the oldest base backup still there (kept, or whose
deletion the store refused), on every timeline, oldest first, so what goes is a prefix of each
timeline and nothing a remaining backup or the restore window after it reads
([`crate::wal::timeline::Archive::prunable`]). History files are never deleted. No WAL is
deleted while anything is held, while a base backup manifest cannot be read (nor any base backup
older than it: it may be an incremental that needs them), or when the source has no base backup.

"Newest" and the hold are decided at `now` from the snapshots this machine's clock has reached
(see [`crate::retention`]): a future-dated snapshot is kept and named in the plan, and a snapshot
whose latest drill record is unreadable is kept whatever the policy says.
*/

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::catalog::base::{base_manifest_key, base_prefix};
use crate::catalog::log::{Event, Pruned};
use crate::catalog::{Repository, SnapshotId, Status, Summary, repo};
use crate::error::{Error, ErrorKind, Result};
use crate::retention::{Candidate, Keep, Plan};
use crate::storage::{ObjectInfo, WriteStore};
use crate::wal::object as wal_object;

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
    /// Base backups, when the source has any (or leftovers of one).
    pub base_backups: Option<BasePrune>,
    /// The WAL archive, when the source has one or base backups.
    pub wal: Option<WalPrune>,
}

/// What a prune does to a source's base backups.
#[derive(Clone, Debug, Serialize)]
pub struct BasePrune {
    pub plan: Plan,
    /// Base backups whose deletion finished.
    pub deleted: Vec<String>,
    /// Objects left alone, with why (Object Lock).
    pub skipped: Vec<String>,
    pub leftovers_removed: Vec<String>,
    pub leftovers_kept: Vec<String>,
    /// Base backups whose manifest cannot be read: left alone, and the WAL is kept whole.
    pub unreadable: Vec<String>,
}

/// What a prune does to a source's WAL archive.
#[derive(Clone, Debug, Serialize)]
pub struct WalPrune {
    pub segment_size: u64,
    /// The first segment number kept on every timeline, as the oldest remaining base
    /// backup's start segment.
    pub keep_from: Option<String>,
    /// Why no WAL is deleted, when a rule keeps it all.
    pub held: Option<String>,
    /// What was (in a dry run: would be) deleted, per timeline, oldest first.
    pub deleted: Vec<WalDeleted>,
    pub files_deleted: usize,
    pub bytes_deleted: u64,
    pub files_kept: usize,
    pub bytes_kept: u64,
    /// Objects the store refused to delete (Object Lock), with why.
    pub skipped: Vec<String>,
}

/// A run of deleted WAL files of one timeline.
#[derive(Clone, Debug, Serialize)]
pub struct WalDeleted {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub files: usize,
    pub bytes: u64,
}

/// Prunes one source. `snapshots` are its summaries (from [`super::list::list`]).
pub fn run<S: WriteStore + ?Sized>(
    repository: &crate::catalog::Repository<S>,
    source: &str,
    snapshots: &[Summary],
    opts: &PruneOptions,
    now: Timestamp,
) -> Result<PruneReport> {
    if opts.dry_run {
        return plan_and_run(repository, source, snapshots, opts, now);
    }
    // The log hears of every deletion before it happens (a prune that stops half-way leaves
    // objects the log says are deleted, never deleted objects it does not explain): the plan is
    // made once without deleting, written, then carried out.
    let intent = plan_and_run(
        repository,
        source,
        snapshots,
        &PruneOptions {
            dry_run: true,
            ..opts.clone()
        },
        now,
    )?;
    let announced = pruned(&intent, source);
    if !announced.is_empty() {
        repository.append_log(
            source,
            Event::Prune {
                deleted: announced.clone(),
                late: false,
            },
        )?;
    }
    let report = plan_and_run(repository, source, snapshots, opts, now)?;
    // The repository may have changed in between (a backup pushed another snapshot out).
    let late: Vec<Pruned> = pruned(&report, source)
        .into_iter()
        .filter(|p| !announced.iter().any(|a| a.prefix == p.prefix))
        .collect();
    if !late.is_empty() {
        repository.append_log(
            source,
            Event::Prune {
                deleted: late,
                late: true,
            },
        )?;
    }
    Ok(report)
}

/// What a prune report deletes (or, in a dry run, would), as log entries say it.
fn pruned(r: &PruneReport, source: &str) -> Vec<Pruned> {
    let rule = |why: &str| format!("{why} ({})", r.policy);
    let mut out: Vec<Pruned> = Vec::new();
    let snapshot = |id: &str| format!("snapshots/{source}/{id}/");
    let dry = r.dry_run;
    let deleted: Vec<&String> = if dry {
        r.plan.deletions().map(|d| &d.id).collect()
    } else {
        r.deleted.iter().collect()
    };
    for id in deleted {
        out.push(Pruned {
            prefix: snapshot(id),
            rule: rule("retention: no rule keeps it"),
        });
    }
    for id in &r.leftovers_removed {
        out.push(Pruned {
            prefix: snapshot(id),
            rule: "interrupted upload without a manifest, older than the grace period".into(),
        });
    }
    if let Some(b) = &r.base_backups {
        let deleted: Vec<&String> = if dry {
            b.plan.deletions().map(|d| &d.id).collect()
        } else {
            b.deleted.iter().collect()
        };
        for id in deleted {
            out.push(Pruned {
                prefix: format!("{}{id}/", base_prefix(source)),
                rule: rule("retention of base backups: no rule keeps it"),
            });
        }
        for id in &b.leftovers_removed {
            out.push(Pruned {
                prefix: format!("{}{id}/", base_prefix(source)),
                rule: "interrupted base backup without a manifest, older than the grace period"
                    .into(),
            });
        }
    }
    if let Some(w) = &r.wal {
        for d in &w.deleted {
            out.push(Pruned {
                prefix: format!("wal/{source}/{:08X}/", d.timeline),
                rule: format!(
                    "WAL {}..{} ({} files), below the oldest kept base backup's start {}",
                    d.first,
                    d.last,
                    d.files,
                    w.keep_from.as_deref().unwrap_or("?")
                ),
            });
        }
    }
    out
}

fn plan_and_run<S: WriteStore + ?Sized>(
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
        base_backups: None,
        wal: None,
    };

    // Every object of the source, by snapshot id.
    let prefix = format!("snapshots/{source}/");
    let mut objects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in store.list(&prefix)? {
        // A store may list keys outside the prefix asked for: not ours to slice or delete.
        if let Some(id) = o
            .key
            .strip_prefix(&prefix)
            .and_then(|r| r.split('/').next())
        {
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
        match delete_snapshot(store, source, &sid, &keys, now)? {
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
            if let Some(why) = delete_snapshot(store, source, &sid, &keys, now)? {
                report.skipped.push(format!("{id}: {why}"));
                continue;
            }
        }
        report.leftovers_removed.push(id);
    }

    // One hold for both: failing backups hold the base backups and the WAL too.
    let failing = report.plan.failing.clone();
    prune_pitr(
        repository,
        source,
        opts,
        failing.as_deref(),
        now,
        &mut report,
    )?;
    let base_hold = hold
        || report
            .base_backups
            .as_ref()
            .is_some_and(|b| b.plan.held.is_some());

    for (prefix, hold) in [(prefix, hold), (base_prefix(source), base_hold)] {
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
    }
    Ok(report)
}

/// Deletes one snapshot's objects, manifest first. `Some(reason)` when Object Lock keeps
/// them: none is tried while one is locked ([`super::prune_lock`]), and when the store refuses
/// one anyway nothing after it is attempted.
fn delete_snapshot<S: WriteStore + ?Sized>(
    store: &S,
    source: &str,
    id: &SnapshotId,
    keys: &[String],
    now: Timestamp,
) -> Result<Option<String>> {
    let manifest = repo::manifest_key(source, id);
    delete_objects(
        store,
        &format!("snapshot {source}/{id}"),
        &manifest,
        keys,
        now,
    )
}

/// Deletes `keys`, `manifest` first; see [`delete_snapshot`].
fn delete_objects<S: WriteStore + ?Sized>(
    store: &S,
    what: &str,
    manifest: &str,
    keys: &[String],
    now: Timestamp,
) -> Result<Option<String>> {
    let mut order: Vec<&String> = keys.iter().filter(|k| **k == manifest).collect();
    order.extend(keys.iter().filter(|k| **k != manifest));
    if order.is_empty() {
        // Listed before but gone now: someone else pruned it.
        return Ok(None);
    }
    if let Some(h) = super::prune_lock::held(store, keys, now)? {
        return Ok(Some(h.describe(what)));
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
            Err(e) => return Err(e.context(format!("cannot delete {what}"))),
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

/// Applies the retention to the source's base backups, then deletes the WAL no remaining base
/// backup needs. Leaves `report.base_backups` and `report.wal` unset when the source has
/// neither base backups nor WAL.
fn prune_pitr<S: WriteStore + ?Sized>(
    repository: &Repository<S>,
    source: &str,
    opts: &PruneOptions,
    failing: Option<&str>,
    now: Timestamp,
    report: &mut PruneReport,
) -> Result<()> {
    let store = repository.store();
    let prefix = base_prefix(source);
    let mut objects: BTreeMap<String, Vec<ObjectInfo>> = BTreeMap::new();
    for o in store.list(&prefix)? {
        if let Some(id) = o
            .key
            .strip_prefix(&prefix)
            .and_then(|r| r.split('/').next())
        {
            objects.entry(id.to_string()).or_default().push(o.clone());
        }
    }
    if objects.is_empty() && store.any(&wal_object::source_prefix(source))?.is_none() {
        return Ok(());
    }
    let loaded = super::wal_show::load(repository, source, &mut |_| {})?;

    // A base backup is damaged when its data object is missing or not the size its manifest
    // says, or (an incremental) a link of its chain is gone; else its latest PITR drill record
    // says (passed: sealed; failed or unreadable: drill failed), or it is not drilled.
    let present: std::collections::BTreeSet<String> = loaded
        .bases
        .iter()
        .map(|m| m.backup_id.to_string())
        .chain(
            loaded
                .unreadable_bases
                .iter()
                .filter_map(|u| u.split(':').next().map(str::to_string)),
        )
        .collect();
    let needs: BTreeMap<String, Vec<String>> = loaded
        .bases
        .iter()
        .filter_map(|m| {
            let chain = &m.incremental.as_ref()?.chain;
            Some((
                m.backup_id.to_string(),
                chain.iter().map(|c| c.to_string()).collect(),
            ))
        })
        .collect();
    let drills = repository.base_drill_ids(source)?;
    let mut candidates: Vec<Candidate> = Vec::new();
    for m in &loaded.bases {
        let data = objects
            .get(m.backup_id.as_str())
            .and_then(|v| v.iter().find(|o| o.key == m.data.key));
        let intact = data.is_some_and(|o| {
            o.size == m.sizes.stored_bytes
                && needs
                    .get(m.backup_id.as_str())
                    .is_none_or(|c| c.iter().all(|id| present.contains(id)))
        });
        let (status, pinned) = if intact {
            let ids = drills.get(&m.backup_id).map_or(&[][..], Vec::as_slice);
            base_drill_status(repository, source, &m.backup_id, ids, now)?
        } else {
            (Status::Damaged, None)
        };
        candidates.push(Candidate {
            id: m.backup_id.to_string(),
            time: m.started.max(m.backup_id.time()),
            status,
            pinned,
        });
    }
    let mut plan = crate::retention::plan(&candidates, &opts.keep, &opts.tz, failing, now);
    for_base_backups(&mut plan, failing.is_some());
    crate::retention::keep_needed(&mut plan, &needs);
    keep_below_unreadable(&mut plan, &loaded.unreadable_bases);
    let mut base = BasePrune {
        plan,
        deleted: Vec::new(),
        skipped: Vec::new(),
        leftovers_removed: Vec::new(),
        leftovers_kept: Vec::new(),
        unreadable: loaded.unreadable_bases.clone(),
    };
    let hold = base.plan.held.is_some();

    let doomed: Vec<String> = base.plan.deletions().map(|d| d.id.clone()).collect();
    let mut refused = std::collections::BTreeSet::new();
    for id in doomed {
        if opts.dry_run {
            continue;
        }
        let sid = SnapshotId::parse(&id)?;
        let keys: Vec<String> = objects
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|o| o.key)
            .collect();
        let manifest = base_manifest_key(source, &sid);
        match delete_objects(
            store,
            &format!("base backup {source}/{id}"),
            &manifest,
            &keys,
            now,
        )? {
            None => base.deleted.push(id),
            Some(why) => {
                base.skipped.push(format!("{id}: {why}"));
                refused.insert(id);
            }
        }
    }

    // Leftovers: ids with objects but no manifest (an interrupted backup-push).
    let listed: std::collections::BTreeSet<String> = loaded
        .bases
        .iter()
        .map(|m| m.backup_id.to_string())
        .collect();
    for (id, objs) in objects {
        let Ok(sid) = SnapshotId::parse(&id) else {
            continue;
        };
        let keys: Vec<String> = objs.into_iter().map(|o| o.key).collect();
        let manifest = base_manifest_key(source, &sid);
        if listed.contains(&id) || keys.contains(&manifest) {
            continue;
        }
        let age = now.duration_since(sid.time());
        if hold || age.as_secs() < opts.grace.as_secs() as i64 {
            base.leftovers_kept.push(if hold {
                format!("{id} (interrupted base backup, kept while backups fail)")
            } else {
                format!("{id} (started {}, may still be uploading)", sid.time())
            });
            continue;
        }
        if !opts.dry_run
            && let Some(why) = delete_objects(
                store,
                &format!("base backup {source}/{id}"),
                &manifest,
                &keys,
                now,
            )?
        {
            base.skipped.push(format!("{id}: {why}"));
            continue;
        }
        base.leftovers_removed.push(id);
    }

    // The WAL: a prefix of every timeline, below the oldest base backup that remains.
    let remaining: Vec<&crate::catalog::base::BaseManifest> = loaded
        .bases
        .iter()
        .filter(|m| {
            let id = m.backup_id.to_string();
            refused.contains(&id) || base.plan.decisions.iter().any(|d| d.id == id && d.keep)
        })
        .collect();
    let starts: Vec<Option<u64>> = remaining
        .iter()
        .map(|m| loaded.base_start(m).map(|b| b.start_segment))
        .collect();
    let sizes: std::collections::BTreeSet<u64> =
        loaded.bases.iter().map(|m| m.segment_size).collect();
    let held = if let Some(h) = &base.plan.held {
        Some(h.clone())
    } else if let Some(u) = loaded.unreadable_bases.first() {
        Some(format!(
            "base backup {u}: the WAL it needs is unknown, so none is deleted"
        ))
    } else if loaded.bases.is_empty() {
        Some("no base backup: the WAL is kept until one exists".to_string())
    } else if sizes.len() > 1 {
        Some(format!(
            "the base backups disagree on the WAL segment size ({}), so none is deleted",
            sizes
                .iter()
                .map(|s| crate::units::bytes(*s))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        starts.iter().position(Option::is_none).map(|i| {
            format!(
                "base backup {} names no WAL segment to start from ({:?}), so no WAL is deleted",
                remaining[i].backup_id, remaining[i].start_wal
            )
        })
    };
    let mut wal = WalPrune {
        segment_size: loaded.segment_size,
        keep_from: None,
        held: held.clone(),
        deleted: Vec::new(),
        files_deleted: 0,
        bytes_deleted: 0,
        files_kept: loaded.archived.len(),
        bytes_kept: loaded.archived.iter().map(|a| a.size).sum(),
        skipped: Vec::new(),
    };
    let starts: Vec<u64> = starts.into_iter().flatten().collect();
    if held.is_none()
        && let Some((cut, files)) = loaded.archive.prunable(&starts)
    {
        // The oldest remaining backup's own start names the cut.
        wal.keep_from = remaining
            .iter()
            .filter_map(|m| loaded.base_start(m).map(|b| (b.start_segment, m)))
            .find(|(n, _)| *n == cut)
            .map(|(_, m)| m.start_wal.clone());
        let mut stopped = std::collections::BTreeSet::new();
        for f in files {
            let tl = f.name.timeline;
            if stopped.contains(&tl) {
                continue;
            }
            if !opts.dry_run {
                let key = wal_object::key(source, &f.name);
                if let Some(h) = super::prune_lock::held(store, std::slice::from_ref(&key), now)? {
                    // Later files were uploaded later: this timeline stops here.
                    wal.skipped.push(format!(
                        "{} (and the files after it on timeline {tl}): {}",
                        f.name,
                        h.describe("this WAL file")
                    ));
                    stopped.insert(tl);
                    continue;
                }
                match store.delete(&key) {
                    Ok(()) => {}
                    Err(e) if locked(&e) => {
                        // A later file is locked for at least as long: this timeline stops
                        // here, and what remains of its prefix waits for a later prune.
                        wal.skipped.push(format!(
                            "{} (and older-than-window files after it on timeline {tl}): the store refuses to delete it (Object Lock retention?): {}",
                            f.name,
                            e.message()
                        ));
                        stopped.insert(tl);
                        continue;
                    }
                    Err(e) => {
                        return Err(e.context(format!("cannot delete WAL file {}", f.name)));
                    }
                }
            }
            wal.files_deleted += 1;
            wal.bytes_deleted += f.size;
            wal.files_kept -= 1;
            wal.bytes_kept -= f.size;
            match wal.deleted.last_mut() {
                Some(r) if r.timeline == tl => {
                    r.last = f.name.to_string();
                    r.files += 1;
                    r.bytes += f.size;
                }
                _ => wal.deleted.push(WalDeleted {
                    timeline: tl,
                    first: f.name.to_string(),
                    last: f.name.to_string(),
                    files: 1,
                    bytes: f.size,
                }),
            }
        }
    }
    report.base_backups = Some(base);
    report.wal = Some(wal);
    Ok(())
}

/// Keeps every base backup older than one whose manifest cannot be read (`unreadable`: "id:
/// why"): that one may be an incremental whose chain they are, and [`keep_needed`] cannot see
/// its chain. They stay until its manifest reads again or it is removed.
///
/// [`keep_needed`]: crate::retention::keep_needed
fn keep_below_unreadable(plan: &mut Plan, unreadable: &[String]) {
    let ids: Vec<SnapshotId> = unreadable
        .iter()
        .filter_map(|u| SnapshotId::parse(u.split(':').next()?).ok())
        .collect();
    for d in plan.decisions.iter_mut().filter(|d| !d.keep) {
        let Ok(id) = SnapshotId::parse(&d.id) else {
            continue;
        };
        if let Some(u) = ids.iter().filter(|u| **u > id).min() {
            d.keep = true;
            d.reasons.push(format!(
                "older than base backup {u}, whose manifest is unreadable: it may be an incremental that needs this one"
            ));
        }
    }
}

/// A base backup's status from its PITR drill records (`ids`, oldest first), as a snapshot's
/// rests on its drills ([`super::list`]): the latest record that is not future-dated decides,
/// passed is sealed and failed is a failed drill; a latest record that cannot be read counts
/// as a failed drill and pins the base backup, so garbage under a record's name can neither
/// lift the hold nor let a drill-passed copy age out.
fn base_drill_status<S: WriteStore + ?Sized>(
    repository: &Repository<S>,
    source: &str,
    base: &SnapshotId,
    ids: &[SnapshotId],
    now: Timestamp,
) -> Result<(Status, Option<String>)> {
    for id in ids.iter().rev() {
        if crate::catalog::future_dated(id.time(), now) {
            continue;
        }
        match repository.base_drill(source, base, id) {
            Ok(r) if crate::catalog::future_dated(r.started.max(r.finished), now) => continue,
            Ok(r) if r.passed() => return Ok((Status::Sealed, None)),
            Ok(_) => return Ok((Status::DrillFailed, None)),
            Err(e) if super::wal_show::unreadable(&e) => {
                return Ok((
                    Status::DrillFailed,
                    Some(format!(
                        "its latest PITR drill record ({id}) is unreadable ({}): counted as a failed drill, and kept until a drill writes a readable one",
                        e.message()
                    )),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((Status::NotDrilled, None))
}

/// Words for base backups in a plan made by the snapshots' rules: most are never drilled, so
/// "not drilled" says nothing; "the newest snapshot" is the newest base backup, and "sealed"
/// means its latest PITR drill passed. A hold
/// handed on from the snapshots (`inherited`) keeps its words: it is about a snapshot.
fn for_base_backups(plan: &mut Plan, inherited: bool) {
    const HELD: &str = "nothing is deleted while backups are failing";
    let fix = |r: &str| {
        r.replace(" (not sealed: not drilled)", "")
            .replace(
                "newest sealed snapshot",
                "newest base backup whose PITR drill passed",
            )
            .replace("newest snapshot", "newest base backup")
    };
    for d in &mut plan.decisions {
        for r in &mut d.reasons {
            if !(inherited && r.starts_with(HELD)) {
                *r = fix(r);
            }
        }
    }
    if !inherited {
        plan.held = plan.held.as_deref().map(fix);
    }
}

/// Aborts the store's unfinished uploads under `prefix` (`snapshots/NAME/`, or a source's base
/// backups) that began before `before`, whatever their age: for a worker that took over a job
/// from a worker whose lease expired (dead, or cut off: its upload must not finish behind the new
/// one). Returns how many it aborted.
pub fn abort_uploads_before<S: WriteStore + ?Sized>(
    store: &S,
    prefix: &str,
    before: Timestamp,
) -> Result<usize> {
    let mut n = 0;
    for u in store.incomplete_uploads(prefix)? {
        let early = u
            .started
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok())
            .is_some_and(|t| t < before);
        if early {
            store.abort_incomplete(&u)?;
            n += 1;
        }
    }
    Ok(n)
}
