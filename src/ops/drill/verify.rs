/*!
Verifying the restored database against the manifest, table by table, as tables become ready.
A [`Pool`] takes tables one by one (as they finish loading, or all at once after a spooled
restore) and reads them back on several connections; a big table is read in block ranges on
several connections at once: the digest is a sum, so the parts add up to the table. Partitions
pg_dump wrote through their root are compared together ([`Group`]), and rows an extension put
into its own table before the restore (see [`super::readback::after_pre_data`]) are taken off.
How a table is read back (session, COPY, digest) is [`super::readback`].
*/

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::catalog::Manifest;
use crate::catalog::drill::TableCheck;
use crate::catalog::manifest::TableRecord;
use crate::dump;
use crate::error::{Error, Result};
use crate::postgres::ConnInfo;

use super::readback::{
    Conn, SessionSql, copy_digest, copy_parts, count_rows, heap_blocks, parse_qualified,
    range_digest,
};

/// Tables at least this big (on disk, after the restore) are read in block ranges on several
/// connections, on servers with TID range scans (14+). `OFFSITEDB_DRILL_SPLIT_MIB` changes it.
pub(super) const SPLIT_BYTES: u64 = 64 << 20;
/// A split table is read in this many block ranges per connection.
const PARTS_PER_JOB: u64 = 4;

enum Item {
    Table(usize),
    /// Heap blocks `[from, to)` of a table; `to` = None: to the end.
    Part {
        table: usize,
        from: u64,
        to: Option<u64>,
    },
}

#[derive(Default)]
struct Sum {
    parts_left: usize,
    rows: u64,
    digest: u128,
    error: Option<String>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Item>,
    closed: bool,
    /// Items being worked on.
    active: usize,
    sums: HashMap<usize, Sum>,
    results: Vec<(usize, TableCheck, Option<String>)>,
    warnings: Vec<String>,
    errors: Vec<Error>,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
    groups: Vec<Group>,
}

/// A table (or part) as read back: rows and digest, or why it could not be read.
type ReadBack = std::result::Result<(u64, u128), String>;

/// Tables pg_dump wrote through their partition root (`--load-via-partition-root`, which it
/// forces for hash partitioning on an enum): the restore routes their rows again, possibly into
/// other partitions, so only the partitions together can be compared with the dump.
#[derive(Default)]
struct Group {
    /// The root, as named by the COPY statements.
    root: (String, String),
    members: Vec<usize>,
    pushed: std::collections::HashSet<usize>,
    reads: Vec<(usize, ReadBack)>,
}

/// Verifies the manifest's tables, given one by one (by index into
/// `m.verification.tables`) as they become ready, on `jobs` connections ([`Pool::work`]).
pub(super) struct Pool<'a> {
    m: &'a Manifest,
    target: &'a ConnInfo,
    settings: &'a SessionSql,
    /// Big tables are split (server 14+, and more than one connection).
    split: bool,
    split_bytes: u64,
    jobs: usize,
    /// Manifest table -> its group in `State::groups`.
    group_of: HashMap<usize, usize>,
    /// Rows an extension created in its own table before any data was restored ([`super::readback::after_pre_data`]).
    baseline: HashMap<usize, (u64, u128)>,
    state: Mutex<State>,
    ready: Condvar,
}

impl<'a> Pool<'a> {
    pub(super) fn new(
        m: &'a Manifest,
        target: &'a ConnInfo,
        settings: &'a SessionSql,
        server_major: u32,
        jobs: usize,
        split_bytes: u64,
        baseline: HashMap<usize, (u64, u128)>,
    ) -> Self {
        let mut groups: Vec<Group> = Vec::new();
        let mut group_of = HashMap::new();
        for (i, t) in m.verification.tables.iter().enumerate() {
            let Some(root) = t
                .copy
                .as_deref()
                .and_then(copy_parts)
                .and_then(|(table, _)| parse_qualified(table))
                .filter(|(s, n)| (s.as_str(), n.as_str()) != (&t.schema, &t.name))
            else {
                continue;
            };
            let g = match groups.iter().position(|g| g.root == root) {
                Some(g) => g,
                None => {
                    groups.push(Group {
                        root,
                        ..Group::default()
                    });
                    groups.len() - 1
                }
            };
            groups[g].members.push(i);
            group_of.insert(i, g);
        }
        Pool {
            m,
            target,
            settings,
            split: server_major >= 14 && jobs > 1,
            split_bytes,
            jobs,
            group_of,
            baseline,
            state: Mutex::new(State {
                groups,
                ..State::default()
            }),
            ready: Condvar::new(),
        }
    }

    /// Queues a table (an index into the manifest's tables) whose data is in. A partition
    /// loaded through its root waits for the root's other partitions: until they are all in,
    /// rows may still arrive in it.
    pub(super) fn push(&self, table: usize) {
        let mut st = self.state.lock().unwrap();
        if let Some(&g) = self.group_of.get(&table) {
            let group = &mut st.groups[g];
            group.pushed.insert(table);
            if group.pushed.len() < group.members.len() {
                return;
            }
            let members = group.members.clone();
            st.queue.extend(members.into_iter().map(Item::Table));
            self.ready.notify_all();
            return;
        }
        st.queue.push_back(Item::Table(table));
        self.ready.notify_one();
    }

    /// No more tables: the workers return when the queue is empty.
    pub(super) fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.ready.notify_all();
    }

    /// One verify connection: takes items until the pool is closed and empty. An error that
    /// stops the connection itself is kept for [`Pool::finish`] and closes the pool.
    pub(super) fn work(&self) {
        if let Err(e) = self.work_inner() {
            let mut st = self.state.lock().unwrap();
            st.errors.push(e);
            st.closed = true;
            st.queue.clear();
            self.ready.notify_all();
        }
    }

    fn work_inner(&self) -> Result<()> {
        let (mut c, warning) = Conn::open(self.target, self.settings)?;
        if let Some(w) = warning {
            self.state.lock().unwrap().warnings.push(w);
        }
        loop {
            let item = {
                let mut st = self.state.lock().unwrap();
                loop {
                    if let Some(item) = st.queue.pop_front() {
                        st.first_start.get_or_insert_with(Instant::now);
                        st.active += 1;
                        break item;
                    }
                    // An item in progress may still queue parts of its table.
                    if st.closed && st.active == 0 {
                        return Ok(());
                    }
                    st = self.ready.wait(st).unwrap();
                }
            };
            match item {
                Item::Table(i) => self.table(&mut c, i),
                Item::Part { table, from, to } => {
                    let t = &self.m.verification.tables[table];
                    let read = range_digest(&mut c, t, from, to);
                    self.add_part(table, read);
                }
            }
            let mut st = self.state.lock().unwrap();
            st.last_end = Some(Instant::now());
            st.active -= 1;
            // Waiting connections may leave now (or take parts this item queued).
            self.ready.notify_all();
        }
    }

    fn table(&self, c: &mut Conn, i: usize) {
        let t = &self.m.verification.tables[i];
        if let (true, Some(copy), Some(_)) = (self.split, &t.copy, &t.digest)
            && copy_parts(copy).is_some()
            && let Some(blocks) = heap_blocks(&mut c.c, t)
                .filter(|&(b, size)| size >= self.split_bytes && b > 1)
                .map(|(b, _)| b)
        {
            // Several parts per connection, taken as connections come free, so that they all
            // finish at about the same time (ranges of equal size do not read equally fast).
            let n = (self.jobs as u64 * PARTS_PER_JOB).min(blocks);
            let step = blocks.div_ceil(n);
            {
                let mut st = self.state.lock().unwrap();
                st.sums.insert(
                    i,
                    Sum {
                        parts_left: n as usize,
                        ..Sum::default()
                    },
                );
                // The other parts go to the front, so idle connections take them at once.
                for k in (1..n).rev() {
                    let to = (k + 1 < n).then_some((k + 1) * step);
                    st.queue.push_front(Item::Part {
                        table: i,
                        from: k * step,
                        to,
                    });
                }
                self.ready.notify_all();
            }
            let read = range_digest(c, t, 0, Some(step));
            self.add_part(i, read);
            return;
        }
        let read = match (&t.copy, &t.digest) {
            (Some(_), Some(_)) if self.group_of.contains_key(&i) => range_digest(c, t, 0, None),
            (Some(copy), Some(_)) => copy_digest(c, copy),
            _ => count_rows(&mut c.c, t).map(|n| (n, 0)),
        };
        let mut st = self.state.lock().unwrap();
        self.record(&mut st, i, read);
    }

    /// A table's read, less what its extension created, judged alone or with its group.
    fn record(&self, st: &mut State, i: usize, read: ReadBack) {
        let read = read.map(|(rows, digest)| match self.baseline.get(&i) {
            Some(&(r, d)) => (rows.saturating_sub(r), digest.wrapping_sub(d)),
            None => (rows, digest),
        });
        let tables = &self.m.verification.tables;
        let Some(&g) = self.group_of.get(&i) else {
            let (check, problem) = judge(&tables[i], read);
            st.results.push((i, check, problem));
            return;
        };
        let group = &mut st.groups[g];
        group.reads.push((i, read));
        if group.reads.len() < group.members.len() {
            return;
        }
        // The partitions as one table named after the root: what pg_dump wrote for them
        // against what the restore put into them, wherever each row went.
        let members: Vec<&TableRecord> = group.members.iter().map(|&m| &tables[m]).collect();
        let digests: Option<Vec<u128>> = members
            .iter()
            .map(|t| {
                t.digest
                    .as_deref()
                    .and_then(|d| u128::from_str_radix(d, 16).ok())
            })
            .collect();
        let whole = TableRecord {
            schema: group.root.0.clone(),
            name: group.root.1.clone(),
            rows: members.iter().map(|t| t.rows).sum(),
            digest: digests
                .map(|d| dump::digest_hex(d.into_iter().fold(0u128, |a, b| a.wrapping_add(b)))),
            copy: None,
        };
        let read = group
            .reads
            .iter()
            .try_fold((0u64, 0u128), |(r, d), (_, read)| {
                read.clone().map(|(r2, d2)| (r + r2, d.wrapping_add(d2)))
            });
        let (check, problem) = judge(&whole, read);
        let names: Vec<String> = members.iter().map(|t| t.qualified()).collect();
        let problem = problem.map(|p| {
            format!(
                "{p} (the partitions {}, which pg_dump wrote through their root, counted together)",
                names.join(", ")
            )
        });
        st.results.push((group.members[0], check, problem));
    }

    fn add_part(&self, i: usize, read: std::result::Result<(u64, u128), String>) {
        let mut st = self.state.lock().unwrap();
        let sum = st.sums.get_mut(&i).expect("a split table has a sum");
        match read {
            Ok((rows, digest)) => {
                sum.rows += rows;
                sum.digest = sum.digest.wrapping_add(digest);
            }
            Err(e) => {
                sum.error.get_or_insert(e);
            }
        }
        sum.parts_left -= 1;
        if sum.parts_left == 0 {
            let sum = st.sums.remove(&i).unwrap();
            let read = match sum.error {
                Some(e) => Err(e),
                None => Ok((sum.rows, sum.digest)),
            };
            self.record(&mut st, i, read);
        }
    }

    /// The checks in manifest order, their problems added to `problems`, and the seconds from
    /// the first table taken to the last one done.
    pub(super) fn finish(self, problems: &mut Vec<String>) -> Result<(Vec<TableCheck>, f64)> {
        let st = self.state.into_inner().unwrap();
        if let Some(e) = st.errors.into_iter().next() {
            return Err(e);
        }
        let secs = match (st.first_start, st.last_end) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let mut results = st.results;
        results.sort_by_key(|(i, _, _)| *i);
        let mut checks = Vec::new();
        for (_, check, problem) in results {
            problems.extend(problem);
            checks.push(check);
        }
        let mut w = st.warnings;
        w.sort();
        w.dedup();
        if checks.iter().any(|c| !c.ok()) {
            problems.extend(w);
        }
        Ok((checks, secs))
    }
}

/// A table's rows and digest as read back, against the manifest.
fn judge(
    t: &TableRecord,
    read: std::result::Result<(u64, u128), String>,
) -> (TableCheck, Option<String>) {
    let mut check = TableCheck {
        schema: t.schema.clone(),
        name: t.name.clone(),
        expected_rows: t.rows,
        restored_rows: None,
        digest_ok: None,
    };
    let (rows, digest) = match read {
        Ok(v) => v,
        Err(e) => {
            return (
                check,
                Some(format!(
                    "table {} could not be read back after the restore: {e}",
                    t.qualified()
                )),
            );
        }
    };
    check.restored_rows = Some(rows);
    if let Some(want) = &t.digest {
        check.digest_ok = Some(dump::digest_hex(digest) == *want);
    }
    let problem = if check.ok() {
        None
    } else if rows != t.rows {
        Some(format!(
            "table {}: expected {} rows, found {}",
            t.qualified(),
            t.rows,
            rows
        ))
    } else {
        Some(format!(
            "table {}: {} rows as expected, but their content differs from the dump (digest {}, expected {})",
            t.qualified(),
            rows,
            dump::digest_hex(digest),
            t.digest.as_deref().unwrap_or("")
        ))
    };
    (check, problem)
}
