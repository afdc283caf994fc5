/*!
Load tracking for the streamed restore: the loading connections and the feed report, table by
table, how many parts of a table were handed out and how each part loaded. A table whose every
part is in goes to the verifiers at once, unless it is the latest table: the last ones wait for
post-data, whose `ALTER TABLE … ADD CONSTRAINT` needs the table to itself (and would queue the
reads of a split table behind it).
*/

use std::collections::HashMap;

use crate::catalog::Manifest;

use super::load::Report;
use super::verify::Pool;

/// One table of the archive as its parts load.
struct Load {
    name: Option<(String, String)>,
    parts: Option<usize>,
    done: usize,
    error: Option<String>,
}

/// Which tables have loaded, and which of them the verifiers have been given.
pub(super) struct Tracker<'p, 'a> {
    pool: &'p Pool<'a>,
    /// The manifest's tables by name (the archive counts tables in its own order).
    by_name: HashMap<(&'a str, &'a str), usize>,
    loads: HashMap<usize, Load>,
    /// The latest archive table any report spoke of.
    latest: usize,
    /// Loaded tables that wait for a later table (or for post-data).
    held: Vec<usize>,
    pushed: Vec<bool>,
}

impl<'p, 'a> Tracker<'p, 'a> {
    pub(super) fn new(m: &'a Manifest, pool: &'p Pool<'a>) -> Self {
        let by_name = m
            .verification
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.schema.as_str(), t.name.as_str()), i))
            .collect();
        Tracker {
            pool,
            by_name,
            loads: HashMap::new(),
            latest: 0,
            held: Vec::new(),
            pushed: vec![false; m.verification.tables.len()],
        }
    }

    /// One report; a table that did not load is a problem.
    pub(super) fn report(&mut self, report: Report, problems: &mut Vec<String>) {
        let table = match &report {
            Report::Expect { table, .. } | Report::Loaded { table, .. } => *table,
        };
        if table > self.latest {
            self.latest = table;
            for i in std::mem::take(&mut self.held) {
                self.push(i);
            }
        }
        let l = self.loads.entry(table).or_insert(Load {
            name: None,
            parts: None,
            done: 0,
            error: None,
        });
        match report {
            Report::Expect {
                schema,
                name,
                parts,
                ..
            } => {
                l.name = Some((schema, name));
                l.parts = Some(parts);
            }
            Report::Loaded { result, .. } => {
                l.done += 1;
                if let Err(e) = result {
                    l.error.get_or_insert(e);
                }
            }
        }
        if l.parts == Some(l.done) {
            let l = self.loads.remove(&table).expect("just seen");
            let (schema, name) = l.name.unwrap_or_default();
            if let Some(e) = l.error {
                problems.push(format!("table {schema}.{name} did not load: {e}"));
            }
            if let Some(&i) = self.by_name.get(&(schema.as_str(), name.as_str())) {
                if table < self.latest {
                    self.push(i);
                } else {
                    self.held.push(i);
                }
            }
        }
    }

    /// After post-data: every table not given yet goes to the verifiers (the held ones first).
    pub(super) fn release_all(mut self) {
        for i in std::mem::take(&mut self.held)
            .into_iter()
            .chain(0..self.pushed.len())
        {
            self.push(i);
        }
    }

    fn push(&mut self, i: usize) {
        if !self.pushed[i] {
            self.pushed[i] = true;
            self.pool.push(i);
        }
    }
}
