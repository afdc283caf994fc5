/*!
Following a paged listing (ListObjectsV2, ListMultipartUploads) to its end under a rule that
cannot loop: a page that says "more" must carry a continuation token never seen before in this
listing, and a listing stops with an error after [`MAX_PAGES`] pages. A store that repeats a token
(a bug, or a hostile endpoint) would otherwise keep OffsiteDB listing, and growing, forever.
*/

use std::collections::HashSet;

use crate::error::{Error, Result};

/// 10,000 pages hold 10 million objects at S3's 1,000 keys a page: a repository holds about four
/// objects per snapshot and one per 16 MiB WAL segment kept, so a real listing stays far below;
/// a runaway one stops after minutes and about a gigabyte of keys, not never.
pub const MAX_PAGES: u32 = 10_000;

pub struct Pages {
    /// What is listed, for messages: "objects under PREFIX in LOCATION".
    what: String,
    max: u32,
    count: u32,
    seen: HashSet<String>,
}

impl Pages {
    pub fn new(what: String) -> Self {
        Self::with_max(what, MAX_PAGES)
    }

    pub fn with_max(what: String, max: u32) -> Self {
        Pages {
            what,
            max,
            count: 0,
            seen: HashSet::new(),
        }
    }

    /// After one page: `None` when the listing is complete, else the token for the next page.
    pub fn next(&mut self, truncated: bool, token: &str) -> Result<Option<String>> {
        self.count += 1;
        if !truncated {
            return Ok(None);
        }
        let fault = |m: String| {
            Error::storage(m).with_hint(
                "this is a fault of the storage service (or of a proxy in front of it); \
                 report it to its operator",
            )
        };
        if token.is_empty() {
            return Err(fault(format!(
                "the storage service said the listing of {} goes on, but gave no continuation token (page {})",
                self.what, self.count
            )));
        }
        if !self.seen.insert(token.to_string()) {
            return Err(fault(format!(
                "the storage service repeated a continuation token in the listing of {} (page {}): it would list forever",
                self.what, self.count
            )));
        }
        if self.count >= self.max {
            return Err(fault(format!(
                "the listing of {} goes on past {} pages; stopped there",
                self.what, self.max
            )));
        }
        Ok(Some(token.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_ends_when_a_page_is_not_truncated() {
        let mut p = Pages::new("x".into());
        assert_eq!(p.next(true, "a").unwrap().as_deref(), Some("a"));
        assert_eq!(p.next(true, "b").unwrap().as_deref(), Some("b"));
        assert_eq!(p.next(false, "").unwrap(), None);
        // A complete page may carry a stale token: it is not followed.
        assert_eq!(Pages::new("x".into()).next(false, "z").unwrap(), None);
    }

    #[test]
    fn a_repeated_or_missing_token_is_an_error() {
        let mut p = Pages::new("objects under snapshots/".into());
        p.next(true, "a").unwrap();
        let e = p.next(true, "a").unwrap_err();
        assert!(
            e.message().contains("repeated a continuation token"),
            "{e:?}"
        );
        assert!(e.message().contains("page 2"), "{e:?}");
        // Not only the one just before: any token seen in this listing.
        let mut p = Pages::new("x".into());
        for t in ["a", "b", "c"] {
            p.next(true, t).unwrap();
        }
        assert!(p.next(true, "b").is_err());
        let e = Pages::new("x".into()).next(true, "").unwrap_err();
        assert!(e.message().contains("no continuation token"), "{e:?}");
    }

    #[test]
    fn pages_are_capped() {
        let mut p = Pages::with_max("x".into(), 3);
        p.next(true, "1").unwrap();
        p.next(true, "2").unwrap();
        let e = p.next(true, "3").unwrap_err();
        assert!(e.message().contains("past 3 pages"), "{e:?}");
        // The last allowed page may end the listing.
        let mut p = Pages::with_max("x".into(), 3);
        p.next(true, "1").unwrap();
        p.next(true, "2").unwrap();
        assert_eq!(p.next(false, "").unwrap(), None);
        assert_eq!(MAX_PAGES, 10_000);
    }
}
