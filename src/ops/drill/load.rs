/*!
The load phase of the streamed restore: while the archive downloads, the inspector hands each
part of it to the part of the restore that takes it ([`Feed`]), and table rows are loaded on
`jobs` connections ([`load`]).

```text
download ─► unseal ─► decompress ─► inspector ─┬─ header + TOC ──► pg_restore --section=pre-data
                                               ├─ table rows ────► COPY … FROM STDIN on N connections
                                               └─ large objects ─► pg_restore -L (other data entries)
then pg_restore -j N --section=post-data (indexes, constraints) while tables are read back
```

pg_restore loads a table on one connection; here its rows go, in batches cut at row ends, to
whichever of `jobs` connections has room, each running pg_dump's own COPY statement for it
under pg_restore's session settings. So a big table loads on every core, the download
overlaps the load, and no spool file is written. Everything that is not table data is
restored by pg_restore itself, from the archive's own header and table of contents.
*/

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError};

use crate::dump::{DumpSummary, Observer};
use crate::error::Result;
use crate::postgres::{self, ConnInfo, client};

/// Rows per message to a loading connection are cut at the last row end after this many bytes.
/// `OFFSITEDB_DRILL_BATCH_KIB` changes it (tests make small tables spread over connections).
pub(super) const BATCH_BYTES: u64 = 1 << 20;
/// Batches queued per connection: with 1 MiB batches, a few MiB of rows in flight each.
const QUEUE: usize = 4;

/// What the table of contents says, for the restore to start with.
pub(super) struct TocInfo {
    /// The archive's header and table of contents, exactly as in the archive: a valid archive
    /// without data, which pg_restore reads for the pre-data and post-data sections.
    pub raw: Arc<Vec<u8>>,
    pub encoding: Option<String>,
    pub owners: Vec<String>,
    pub extensions: Vec<String>,
    /// Data-section entries that are not table data (sequence values, large objects).
    pub other_data: Vec<i32>,
}

pub(super) enum Msg {
    Rows {
        table: usize,
        copy: Arc<str>,
        data: Vec<u8>,
    },
    End {
        table: usize,
    },
}

pub(super) enum Report {
    /// The archive's `table`-th table has been handed out whole, to `parts` connections.
    Expect {
        table: usize,
        schema: String,
        name: String,
        parts: usize,
    },
    /// One connection's share of a table is in (rows), or failed.
    Loaded {
        table: usize,
        result: std::result::Result<u64, String>,
    },
}

/// The loading connections' queues, made before the download starts.
pub(super) fn queues(jobs: usize) -> (Vec<SyncSender<Msg>>, Vec<Receiver<Msg>>) {
    (0..jobs)
        .map(|_| std::sync::mpsc::sync_channel(QUEUE))
        .unzip()
}

/// Runs on the download thread, inside the inspector: hands each part of the archive to the
/// part of the restore that takes it. Sends block when the restore is behind (that is the
/// back-pressure on the download); a send to a restore that has gone stops the download.
pub(super) struct Feed {
    toc: Option<SyncSender<TocInfo>>,
    workers: Vec<SyncSender<Msg>>,
    reports: Sender<Report>,
    /// Raw bytes of the other data blocks, for the pg_restore that restores them.
    other: Option<SyncSender<Vec<u8>>>,
    batch_bytes: usize,
    table: usize,
    current: Option<(String, String, Arc<str>)>,
    got: Vec<bool>,
    next: usize,
    batch: Vec<u8>,
}

fn stopped() -> std::io::Error {
    std::io::Error::other("the restore stopped")
}

impl Feed {
    pub(super) fn new(
        toc: SyncSender<TocInfo>,
        workers: Vec<SyncSender<Msg>>,
        reports: Sender<Report>,
        other: SyncSender<Vec<u8>>,
        batch_bytes: usize,
    ) -> Self {
        let n = workers.len();
        Feed {
            toc: Some(toc),
            workers,
            reports,
            other: Some(other),
            batch_bytes,
            table: 0,
            current: None,
            got: vec![false; n],
            next: 0,
            batch: Vec::new(),
        }
    }

    /// Hands a batch of whole rows to the first connection with room, else waits for the next
    /// in turn.
    fn send(&mut self, data: Vec<u8>) -> std::io::Result<()> {
        let copy = self
            .current
            .as_ref()
            .map(|c| c.2.clone())
            .unwrap_or_default();
        let n = self.workers.len();
        let mut msg = Msg::Rows {
            table: self.table,
            copy,
            data,
        };
        for k in 0..n {
            let w = (self.next + k) % n;
            match self.workers[w].try_send(msg) {
                Ok(()) => {
                    self.got[w] = true;
                    self.next = (w + 1) % n;
                    return Ok(());
                }
                Err(TrySendError::Full(m)) => msg = m,
                Err(TrySendError::Disconnected(_)) => return Err(stopped()),
            }
        }
        let w = self.next;
        self.workers[w].send(msg).map_err(|_| stopped())?;
        self.got[w] = true;
        self.next = (w + 1) % n;
        Ok(())
    }
}

impl Observer for Feed {
    fn wants_raw(&self) -> bool {
        true
    }

    fn toc(
        &mut self,
        raw: Vec<u8>,
        summary: &DumpSummary,
        other_data: &[i32],
    ) -> std::io::Result<()> {
        let info = TocInfo {
            raw: Arc::new(raw),
            encoding: summary.encoding.clone(),
            owners: summary.owners.iter().cloned().collect(),
            extensions: summary.extensions.clone(),
            other_data: other_data.to_vec(),
        };
        if other_data.is_empty() {
            self.other = None;
        }
        self.toc
            .take()
            .ok_or_else(stopped)?
            .send(info)
            .map_err(|_| stopped())
    }

    fn table_start(&mut self, schema: &str, name: &str, copy_stmt: &str) -> std::io::Result<()> {
        self.current = Some((schema.to_string(), name.to_string(), Arc::from(copy_stmt)));
        self.got.fill(false);
        self.batch.clear();
        Ok(())
    }

    fn rows(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.batch.extend_from_slice(data);
        if self.batch.len() >= self.batch_bytes
            && let Some(i) = memchr::memrchr(b'\n', &self.batch)
        {
            let mut rest = Vec::with_capacity(self.batch_bytes + (64 << 10));
            rest.extend_from_slice(&self.batch[i + 1..]);
            self.batch.truncate(i + 1);
            let full = std::mem::replace(&mut self.batch, rest);
            self.send(full)?;
        }
        Ok(())
    }

    fn table_end(&mut self) -> std::io::Result<()> {
        // The rest, with pg_dump's `\.` line: sent as pg_restore sends it.
        if !self.batch.is_empty() {
            let rest = std::mem::take(&mut self.batch);
            self.send(rest)?;
        }
        let mut parts = 0;
        for (w, got) in self.got.iter().enumerate() {
            if *got {
                parts += 1;
                self.workers[w]
                    .send(Msg::End { table: self.table })
                    .map_err(|_| stopped())?;
            }
        }
        let (schema, name, _) = self.current.take().unwrap_or_default();
        self.reports
            .send(Report::Expect {
                table: self.table,
                schema,
                name,
                parts,
            })
            .map_err(|_| stopped())?;
        self.table += 1;
        Ok(())
    }

    fn other_data(&mut self, raw: &[u8]) -> std::io::Result<()> {
        // A pg_restore that has gone reports its own failure; the download goes on.
        if let Some(o) = &self.other
            && o.send(raw.to_vec()).is_err()
        {
            self.other = None;
        }
        Ok(())
    }
}

/// pg_restore's session settings (`_doSetFixedOutputState`), for the loading connections.
pub(super) fn load_session_sql(encoding: &str) -> String {
    let mut sql = String::from(
        "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
         SELECT pg_catalog.set_config('search_path', '', false); SET check_function_bodies = false; \
         SET xmloption = content; SET client_min_messages = warning; SET row_security = off;",
    );
    if !encoding.is_empty() {
        sql.push_str(&format!(
            " SET client_encoding = {};",
            super::target::quote_literal(encoding)
        ));
    }
    sql
}

/// Connects one loading connection (before any row is sent, so a failure stops the drill
/// cleanly).
pub(super) fn connect_loader(target: &ConnInfo, session: &str) -> Result<client::Client> {
    let mut c = postgres::connect(target, "the drill database")?;
    c.batch_execute(session)
        .map_err(|e| client::query_error("cannot set up a loading session", &e))?;
    Ok(c)
}

/// One loading connection: runs each table's COPY for the rows it is given, until its queue
/// closes. A queue that closes in the middle of a table (the download failed) aborts that COPY.
pub(super) fn load(mut c: client::Client, rx: Receiver<Msg>, reports: Sender<Report>) {
    let mut next = rx.recv().ok();
    while let Some(msg) = next.take() {
        let Msg::Rows { table, copy, data } = msg else {
            next = rx.recv().ok();
            continue;
        };
        let mut error: Option<String> = None;
        let mut writer = match c.copy_in(&*copy) {
            Ok(w) => Some(w),
            Err(e) => {
                error = Some(client::query_error("COPY failed", &e).message().to_string());
                None
            }
        };
        let write = |w: &mut Option<::postgres::CopyInWriter<'_>>,
                     error: &mut Option<String>,
                     data: &[u8]| {
            if let Some(wr) = w.as_mut()
                && let Err(e) = wr.write_all(data)
            {
                *error = Some(io_message(&e));
                *w = None;
            }
        };
        write(&mut writer, &mut error, &data);
        let ended = loop {
            match rx.recv() {
                Ok(Msg::Rows { table: t, data, .. }) if t == table => {
                    write(&mut writer, &mut error, &data);
                }
                Ok(Msg::End { table: t }) if t == table => break true,
                // Not sent by the feed: keep it for the next round.
                Ok(other) => {
                    next = Some(other);
                    break true;
                }
                Err(_) => break false,
            }
        };
        if !ended {
            // Dropping an unfinished writer aborts the COPY.
            return;
        }
        let result = match (writer, error) {
            (_, Some(e)) => Err(e),
            (Some(w), None) => w
                .finish()
                .map_err(|e| client::query_error("COPY failed", &e).message().to_string()),
            (None, None) => Err("COPY failed".to_string()),
        };
        if reports.send(Report::Loaded { table, result }).is_err() {
            return;
        }
        if next.is_none() {
            next = rx.recv().ok();
        }
    }
}

/// The server's error inside an io::Error from a COPY write, else the io error itself.
fn io_message(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<::postgres::Error>())
    {
        Some(pe) => client::query_error("COPY failed", pe).message().to_string(),
        None => format!("COPY failed: {e}"),
    }
}

/// Feeds a pg_restore the header and TOC, then the raw blocks it is sent, then closes its
/// input. After a write error (pg_restore ended) the rest is read and dropped, so the download
/// never waits for it.
pub(super) fn feed_pg_restore(
    mut stdin: std::process::ChildStdin,
    toc: &[u8],
    blocks: Option<Receiver<Vec<u8>>>,
) {
    let mut ok = stdin.write_all(toc).is_ok();
    if let Some(rx) = blocks {
        for b in rx {
            if ok {
                ok = stdin.write_all(&b).is_ok();
            }
        }
    }
    drop(stdin);
}
