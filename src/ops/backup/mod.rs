/*!
`offsitedb backup`: one skeleton for every kind of source. Each backup runs the same steps:

```text
source.prepare ─► (repository created) ─► source.open ─► compress ─► seal ─► upload
                                                    └─► source.describe ─► manifest (written last)
```

1. The source checks what it can before anything is written ([`Source::prepare`]: connect to the
   database and find pg_dump, or read the folder), so a wrong password leaves an empty location
   as it was.
2. The repository is created if new; what earlier failed backups of this source left is swept.
3. The source's bytes stream through the sink ([`crate::pipeline::sink`]): compress, seal and a
   multipart upload, in constant memory, no temporary file. After the bytes end the source says
   whether they are complete (pg_dump's exit status, the folder walk's result); only then is the
   upload completed. Any failure before that aborts it: a failed backup leaves nothing visible.
4. The source describes what it backed up ([`Source::describe`]). [`run`] returns that with
   what every stage of the sink measured ([`Stored`]); the caller assembles the manifest of its
   kind (a snapshot's [`Manifest`], a base backup's [`crate::catalog::base::BaseManifest`]) and writes
   it last: no manifest, no backup.
5. With a state file, the run is recorded in the history ([`recorded`]).

A kind of source (a logical dump in [`logical`], a folder in [`folder`], a base backup in
[`basebackup`]; next WAL segments) is a small implementation of [`Source`], in its own file;
[`Layout`] says where its objects go.
*/

pub mod basebackup;
pub mod folder;
pub mod logical;

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use jiff::Timestamp;

use crate::catalog::manifest::Described;
use crate::catalog::repo::data_key;
use crate::catalog::{Manifest, Repository, SnapshotId, base};
use crate::config::SourceSpec;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::sink::{self, SinkResult, SinkSpec};
use crate::pipeline::{Compression, Counters, Progress};
use crate::state::{Job, Outcome, State};
use crate::storage::WriteStore;

/// Incomplete uploads of a source older than this are leftovers of a crashed backup.
const STALE_UPLOAD_HOURS: i64 = 48;

#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    pub pg_bin_dirs: Vec<PathBuf>,
    /// Show a progress line on a terminal.
    pub progress: bool,
    /// Compression threads; 0 = one per core.
    pub threads: usize,
    /// Skip the dump inspector and count rows in the dump's snapshot instead (troubleshooting;
    /// also `OFFSITEDB_VERIFY=counts`).
    pub counts_only: bool,
    /// Base backups only: incremental on the source's newest base backup (PostgreSQL 17+,
    /// `summarize_wal = on`); an error when there is none to base it on.
    pub incremental: bool,
}

/// A source's bytes, as the sink takes them.
pub struct Stream {
    pub reader: Box<dyn Read + Send>,
    /// Receives every buffer too (an inspector on its own thread); never fails the backup.
    pub tap: Option<SyncSender<Arc<Vec<u8>>>>,
    /// After the reader's end, before the upload is completed: are the bytes complete? Dropped
    /// uncalled when the sink fails first (which must stop the producer: pg_dump is killed).
    pub on_eof: Box<dyn FnOnce() -> Result<()> + Send>,
}

/// Where a kind of backup lives in the repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `snapshots/<source>/<id>/`: logical dumps and folders.
    Snapshot,
    /// `base/<source>/<id>/`: base backups.
    Base,
}

impl Layout {
    pub fn data_key(self, source: &str, id: &SnapshotId) -> String {
        match self {
            Layout::Snapshot => data_key(source, id),
            Layout::Base => base::base_data_key(source, id),
        }
    }

    /// Where a source's objects of this kind are (for sweeping leftovers).
    pub fn prefix(self, source: &str) -> String {
        match self {
            Layout::Snapshot => format!("snapshots/{source}/"),
            Layout::Base => base::base_prefix(source),
        }
    }
}

/// What the skeleton stored: a complete data object, not yet committed (no manifest).
pub struct Stored<D> {
    pub id: SnapshotId,
    /// Our clock, before the source was opened and after it was described.
    pub started: Timestamp,
    pub finished: Timestamp,
    /// The data object's key.
    pub key: String,
    /// What each stage of the sink saw.
    pub sink: SinkResult,
    pub compression: Compression,
    /// What the source said about itself.
    pub described: D,
}

/// One kind of source in the backup skeleton.
pub trait Source {
    /// What [`Source::describe`] returns: a snapshot's [`Described`], or a base backup's
    /// [`crate::catalog::base::BaseDescribed`].
    type Described;

    /// Before anything is written: what can be checked (connect, find programs, read the
    /// folder). Returns an upper estimate of the bytes to come, for the upload's part size.
    fn prepare(&mut self, note: &mut dyn FnMut(String)) -> Result<Option<u64>>;

    /// Starts producing the bytes.
    fn open(&mut self, note: &mut dyn FnMut(String)) -> Result<Stream>;

    /// Once the bytes are stored: who the source is and what a drill will compare with.
    fn describe(self: Box<Self>, note: &mut dyn FnMut(String)) -> Result<Self::Described>;

    /// What the manifest says this source is.
    fn kind(&self) -> crate::catalog::SourceKind;

    /// What is interrupted when Ctrl-C arrives (for the message).
    fn what(&self) -> &'static str {
        "the backup"
    }
}

/// Backs up one source, a database or a folder, records the run when `state` is given, and
/// returns the committed manifest.
pub fn run_source<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    spec: &SourceSpec,
    opts: &BackupOptions,
    state: Option<&State>,
    note: &mut dyn FnMut(String),
) -> Result<Manifest> {
    let source: Box<dyn Source<Described = Described>> = match &spec.dir {
        Some(dir) => Box::new(folder::Folder::new(&spec.name, dir)),
        None => Box::new(logical::Logical::new(spec, opts)),
    };
    recorded(
        state,
        Job::Backup,
        &spec.name,
        || {
            let s = run(
                repo,
                &spec.name,
                spec.compression,
                opts,
                Layout::Snapshot,
                source,
                note,
            )?;
            let manifest = Manifest::assemble(
                s.id,
                s.started,
                s.finished,
                s.described,
                &s.sink,
                s.key,
                s.compression,
                repo.key(),
            );
            repo.commit_manifest(&manifest)?;
            Ok(manifest)
        },
        |m| Outcome {
            snapshot: Some(m.snapshot_id.to_string()),
            plain_bytes: Some(m.sizes.plain_bytes),
            stored_bytes: Some(m.sizes.stored_bytes),
            ..Default::default()
        },
    )
}

/// Runs `work` as one step of the history when `state` is given: started, then finished with
/// `outcome` of its result (or its error).
pub fn recorded<T>(
    state: Option<&State>,
    job: Job,
    source: &str,
    work: impl FnOnce() -> Result<T>,
    outcome: impl FnOnce(&T) -> Outcome,
) -> Result<T> {
    let id = match state {
        Some(st) => Some(st.start(job, source, Timestamp::now())?),
        None => None,
    };
    let result = work();
    if let (Some(st), Some(id)) = (state, id) {
        let o = match &result {
            Ok(v) => outcome(v),
            Err(e) => Outcome::failed(e),
        };
        st.finish(id, Timestamp::now(), &o)?;
    }
    result
}

/// The skeleton: prepare, create the repository, stream through the sink, describe. The caller
/// commits the manifest of its kind from what this returns.
pub fn run<S: WriteStore + ?Sized, D>(
    repo: &Repository<S>,
    name: &str,
    compression: Compression,
    opts: &BackupOptions,
    layout: Layout,
    mut source: Box<dyn Source<Described = D>>,
    note: &mut dyn FnMut(String),
) -> Result<Stored<D>> {
    let size_hint = source.prepare(note)?;
    same_kind(repo, name, source.kind())?;
    // The source answered: now the repository may be created.
    repo.ensure_created()?;
    sweep_leftovers(repo.store(), &layout.prefix(name), note);

    let started = Timestamp::now();
    let id = SnapshotId::new(started)?;
    let key = layout.data_key(name, &id);
    let upload = repo.store().upload(&key, size_hint)?;
    let mut stream = source.open(note)?;
    let counters = Counters::default();
    let progress = Progress::start("backup", &counters, opts.progress);
    let spec = SinkSpec {
        upload,
        key: repo.key(),
        compression,
        threads: opts.threads,
        counters,
    };
    let result = sink::run(spec, &mut stream.reader, stream.tap, stream.on_eof);
    drop(progress);
    let stored = result.map_err(|e| {
        // Ctrl-C reaches pg_dump too; say what happened, not how pg_dump died of it.
        if e.kind() == ErrorKind::Interrupted || crate::interrupt::check().is_err() {
            Error::new(
                ErrorKind::Interrupted,
                format!(
                    "interrupted: {} stopped and its upload was aborted; nothing was stored",
                    source.what()
                ),
            )
        } else {
            e
        }
    })?;
    let described = source.describe(note)?;
    Ok(Stored {
        id,
        started,
        finished: Timestamp::now(),
        key,
        sink: stored,
        compression,
        described,
    })
}

/// A name holds one kind of source: a folder backed up under a database's name (or the other
/// way round) would mix into its snapshots, and drills and retention would compare the wrong
/// things. An unreadable newest manifest does not stop the backup.
fn same_kind<S: WriteStore + ?Sized>(
    repo: &Repository<S>,
    name: &str,
    kind: crate::catalog::SourceKind,
) -> Result<()> {
    if repo.config().is_none() {
        return Ok(());
    }
    let Some(newest) = repo.entries(Some(name))?.pop() else {
        return Ok(());
    };
    match repo.manifest(&newest.source, &newest.id) {
        Ok(m) if m.source.kind != kind => Err(Error::config(format!(
            "the repository's snapshots of {name} are of a {} ({}), and this source is a {}: they would mix",
            m.source.kind.label(),
            m.source.database,
            kind.label()
        ))
        .with_hint("give this source another name (--name NAME)")),
        _ => Ok(()),
    }
}

/// Cleans what earlier failed backups of this source left: uploads whose abort failed while
/// the store was unreachable, and incomplete uploads older than two days.
fn sweep_leftovers<S: WriteStore + ?Sized>(store: &S, prefix: &str, note: &mut dyn FnMut(String)) {
    if let Ok(n) = store.clean_abandoned()
        && n > 0
    {
        note(format!(
            "aborted {n} unfinished upload(s) left by an earlier failed backup"
        ));
    }
    let Ok(leftovers) = store.incomplete_uploads(prefix) else {
        return;
    };
    let cutoff = Timestamp::now() - jiff::SignedDuration::from_hours(STALE_UPLOAD_HOURS);
    for u in leftovers {
        let old = u
            .started
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok())
            .is_some_and(|t| t < cutoff);
        if old && store.abort_incomplete(&u).is_ok() {
            note(format!("removed an interrupted upload of {}", u.key));
        }
    }
}
