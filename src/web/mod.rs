/*!
The dashboard and its JSON API, served by `offsitedb serve` on the same listener as `/metrics`
and `/healthz` ([`server`]). What they show is computed once ([`data`]) and drawn twice: HTML
pages ([`pages`], with [`style`]) and JSON ([`api`]), so both always say the same. Read-only for
anyone who can reach it; "back up now" and "drill now" exist only with a token ([`auth`]), and
queue a job in the daemon's scheduler ([`crate::daemon::control`]).
*/

pub mod api;
pub mod auth;
pub mod data;
pub mod pages;
pub mod server;
pub mod style;

pub use server::{Context, start};
