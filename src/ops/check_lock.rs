/*!
`offsitedb check`'s Object Lock lines: the bucket's setting against `[repository] object_lock`,
and how far the lock covers what each source's retention keeps ([`crate::storage::lock`]).

A lock configured on a bucket without Object Lock fails (every upload would be refused). A
lock shorter than what a policy keeps leaves the older copies deletable by whoever steals the
bucket's keys; one much longer makes prune leave dropped copies stored until their lock ends.
Both are warnings with the numbers: each may be a choice.
*/

use super::check::{Item, Status};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::storage::ObjectLock;
use crate::storage::lock::{Coverage, LockSetting, coverage, policy_span_days};

const SUBJECT: &str = "repository";

fn item(check: &'static str, status: Status, detail: String, fix: Option<&str>) -> Item {
    Item {
        subject: SUBJECT.to_string(),
        check,
        status,
        detail,
        fix: fix.map(str::to_string),
        kind: None,
    }
}

fn fail(check: &'static str, e: &Error) -> Item {
    Item {
        subject: SUBJECT.to_string(),
        check,
        status: Status::Fail,
        detail: e.message().to_string(),
        fix: e.hint().map(str::to_string),
        kind: Some(e.kind()),
    }
}

/// The lines for a store whose Object Lock setting reads as `bucket`.
pub fn items(settings: &Settings, bucket: Result<Option<ObjectLock>>) -> Vec<Item> {
    let setting = match settings.object_lock() {
        Ok(s) => s,
        Err(e) => return vec![fail("lock", &e)],
    };
    let default = |lock: &ObjectLock| match (&lock.mode, &lock.retention) {
        (Some(m), Some(r)) => format!(" ({m}, {r} by default)"),
        _ => " (no default retention)".to_string(),
    };
    let Some(setting) = setting else {
        return vec![match bucket {
            Ok(None) => item("lock", Status::Ok, "a folder: no Object Lock".into(), None),
            Ok(Some(lock)) if !lock.enabled => item(
                "lock",
                Status::Ok,
                "Object Lock is off: a pruned snapshot is gone at once (enable it on the bucket to keep backups safe from deletion)".into(),
                None,
            ),
            Ok(Some(lock)) => item(
                "lock",
                Status::Ok,
                format!(
                    "Object Lock is on{}: a pruned snapshot's objects stay as old versions until their retention ends",
                    default(&lock)
                ),
                None,
            ),
            Err(e) => item(
                "lock",
                Status::Warn,
                format!("cannot read the bucket's Object Lock setting: {}", e.message()),
                Some("nothing to do unless you rely on Object Lock: then give the credentials s3:GetBucketObjectLockConfiguration"),
            ),
        }];
    };
    match bucket {
        // A folder with a lock is refused by `settings.object_lock()` above.
        Ok(None) => vec![],
        Ok(Some(lock)) if !lock.enabled => vec![fail(
            "lock",
            &Error::config(format!(
                "object_lock is set under [repository] ({setting}), but the bucket has no Object Lock: the store refuses every locked upload"
            ))
            .with_hint(
                "most stores (Backblaze B2, MinIO, SeaweedFS, Cloudflare R2) turn Object Lock on only when a bucket is created (AWS S3 also on an existing versioned bucket): create a new bucket with Object Lock enabled and point url at it, or remove object_lock",
            ),
        )],
        Ok(Some(lock)) => {
            let mut out = vec![item(
                "lock",
                Status::Ok,
                format!(
                    "Object Lock is on{}: every upload is locked for {} in {} mode; prune deletes what the policy drops once its lock ends",
                    default(&lock),
                    days(setting.days),
                    setting.mode
                ),
                None,
            )];
            out.extend(policies(settings, &setting));
            out
        }
        Err(e) => vec![item(
            "lock",
            Status::Warn,
            format!(
                "object_lock is set ({setting}), but the bucket's Object Lock setting cannot be read: {}",
                e.message()
            ),
            Some("give the credentials s3:GetBucketObjectLockConfiguration so that check can confirm uploads will be locked"),
        )],
    }
}

/// One line per source with a retention: whether the lock covers what it keeps.
fn policies(settings: &Settings, setting: &LockSetting) -> Vec<Item> {
    let mut out = Vec::new();
    for s in &settings.file.sources {
        let Some(keep) = &s.keep else { continue };
        let span = policy_span_days(keep);
        if span == 0 {
            continue;
        }
        let name = &s.name;
        out.push(match coverage(setting.days, span) {
            Coverage::Covers => item(
                "lock policy",
                Status::Ok,
                format!(
                    "source {name}: a lock of {} covers every copy its retention keeps ({keep}: about {})",
                    days(setting.days),
                    days(span)
                ),
                None,
            ),
            Coverage::Short { lock, span } => item(
                "lock policy",
                Status::Warn,
                format!(
                    "source {name}: its retention keeps copies for about {} ({keep}), but they are locked for {}: copies older than {} can be deleted by anyone holding the bucket's keys",
                    days(span),
                    days(lock),
                    days(lock)
                ),
                Some(&format!(
                    "set days = {span} (or more) in object_lock under [repository] to protect every copy kept, or accept that older copies are unprotected"
                )),
            ),
            Coverage::Long { lock, span } => item(
                "lock policy",
                Status::Warn,
                format!(
                    "source {name}: objects are locked for {}, but its retention keeps copies for about {} ({keep}): prune leaves each copy it drops stored (and billed) until its lock ends, up to {} longer",
                    days(lock),
                    days(span),
                    days(lock - span)
                ),
                Some(&format!(
                    "lower days in object_lock to about {span}, or accept the extra storage"
                )),
            ),
        });
    }
    out
}

fn days(n: u32) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
}
