/*!
The monthly Restore Drill Report, written by `serve`: an hour after a month has ended (its last
jobs' drills finish), its report goes into
the repository (`reports/<YYYY-MM>`, sealed, written once) and, when email alerts are configured,
out as a PDF attachment. Checked every few minutes on its own thread, so a daemon that was down on
the 1st writes it when it comes back; a month that is stored already is not written or sent again
(so two daemons on one repository send it once: the create-if-absent write decides).

A month before the repository's first backup gets no report (a new install would otherwise
announce "no backups" for the months before it existed).
*/

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{error, info, warn};

use crate::alerts::smtp::{Attachment, Mail};
use crate::catalog::Repository;
use crate::config::Settings;
use crate::error::Result;
use crate::ops::report::{self as op, Format};
use crate::report::compose;
use crate::report::model::{Period, Report, Scope, VerdictKind};
use crate::report::pdf::Paper;

/// How often the daemon looks for a month to write.
const EVERY: Duration = Duration::from_secs(300);
/// How long after a month's end its report is written.
const SETTLE: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);
/// Attempts at sending the mail (a mail server that is briefly down).
const MAIL_ATTEMPTS: u32 = 3;

pub(super) struct Monthly {
    next: Instant,
    running: Option<JoinHandle<()>>,
}

impl Monthly {
    pub(super) fn new() -> Monthly {
        Monthly {
            next: Instant::now(),
            running: None,
        }
    }

    pub(super) fn tick(&mut self, settings: &Arc<Settings>, mail: Option<&Mail>) {
        if self.running.as_ref().is_some_and(|h| h.is_finished()) {
            let _ = self.running.take().map(|h| h.join());
        }
        if self.running.is_some() || Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + EVERY;
        let (settings, mail) = (settings.clone(), mail.cloned());
        self.running = std::thread::Builder::new()
            .name("monthly-report".into())
            .spawn(move || {
                if let Err(e) = write_last_month(&settings, mail.as_ref(), Timestamp::now()) {
                    error!(error = %e.message(), "cannot write the monthly report (trying again in 5 minutes)");
                }
            })
            .ok();
    }

    /// Waits for a report being written, until `deadline`.
    pub(super) fn finish(&mut self, deadline: Instant) {
        if let Some(h) = self.running.take() {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// Writes (and mails) the report of the month before `now`, unless it is stored already.
/// Returns the report when it wrote one.
pub fn write_last_month(
    settings: &Settings,
    mail: Option<&Mail>,
    now: Timestamp,
) -> Result<Option<Report>> {
    let period = Period::last_full(now);
    // The month's last jobs (a 23:30 backup's drill) finish after midnight: give them an hour.
    if now < period.end + SETTLE {
        return Ok(None);
    }
    let store = settings.open_store()?;
    let key = settings.master_key(&mut |w| warn!("{w}"))?;
    let facts = op::repository_facts(&settings.location()?, &key);
    let repo = Repository::open(store, key)?;
    if op::month_stored(&repo, &period.month)? || !existed_before(&repo, period.end)? {
        return Ok(None);
    }
    let facts = crate::report::model::RepositoryFacts {
        object_lock: op::object_lock_fact(repo.store()),
        ..facts
    };
    let configured = settings.configured_sources(None)?;
    let state = settings.state_at()?.open()?;
    let scope = Scope {
        period,
        source: None,
        configured: &configured,
        history: Some(&state),
        repository: facts,
        now,
    };
    let r = op::generate(&repo, &scope, &mut |w| warn!("{w}"))?;
    if !op::store_month(&repo, &r)? {
        // Another daemon wrote it between our look and our write: it sends the mail.
        return Ok(None);
    }
    info!(month = %r.period.month, fingerprint = %r.fingerprint, "wrote the monthly report into the repository");
    if let Some(mail) = mail {
        send(mail, &r);
    }
    Ok(Some(r))
}

/// Whether the repository holds a snapshot or base backup from before `end`.
fn existed_before<S: crate::storage::ReadStore + ?Sized>(
    repo: &Repository<S>,
    end: Timestamp,
) -> Result<bool> {
    if repo.entries(None)?.iter().any(|e| e.id.time() < end) {
        return Ok(true);
    }
    Ok(repo.base_entries(None)?.iter().any(|b| b.id.time() < end))
}

/// The mail: the summary in the text, the PDF attached.
fn send(mail: &Mail, r: &Report) {
    let pdf = match op::render(r, Format::Pdf(Paper::A4)) {
        Ok(b) => b,
        Err(e) => {
            error!(error = %e.message(), "cannot draw the monthly report's PDF: not mailed");
            return;
        }
    };
    let subject = format!("[OffsiteDB] {} {}", compose::TITLE, r.period.title());
    let body = summary_text(r);
    let attachment = Attachment {
        name: format!("offsitedb-report-{}.pdf", r.period.month),
        content_type: "application/pdf".into(),
        bytes: pdf,
    };
    for attempt in 1..=MAIL_ATTEMPTS {
        match mail.send_with(&subject, &body, std::slice::from_ref(&attachment)) {
            Ok(()) => {
                info!(server = %mail.server(), "mailed the monthly report");
                return;
            }
            Err(f) if f.retry && attempt < MAIL_ATTEMPTS => {
                std::thread::sleep(Duration::from_secs(10 * u64::from(attempt)))
            }
            Err(f) => {
                error!(server = %mail.server(), error = %f.message, "cannot mail the monthly report (it is in the repository)");
                return;
            }
        }
    }
}

/// The report's first page as plain text.
pub fn summary_text(r: &Report) -> String {
    let mut s = format!(
        "{} for {}\nRepository: {}\n\n",
        compose::TITLE,
        r.period.title(),
        r.repository.location
    );
    for src in &r.sources {
        s.push_str(&format!(
            "{}: {}: {}\n",
            src.name,
            compose::verdict_word(src.verdict.kind),
            src.verdict.headline
        ));
        for reason in &src.verdict.reasons {
            s.push_str(&format!("  - {reason}\n"));
        }
    }
    let failed = r
        .sources
        .iter()
        .filter(|s| s.verdict.kind == VerdictKind::Failed)
        .count();
    if failed > 0 {
        s.push_str(&format!(
            "\n{failed} source(s) FAILED: see the attached report.\n"
        ));
    }
    s.push_str(&format!(
        "\nThe full report is attached (PDF). Fingerprint {}: `offsitedb report verify FILE` checks it.\n",
        r.fingerprint
    ));
    s
}
