/*!
The report's fingerprint: a keyed digest (HMAC-SHA-256 under a key derived from the repository's
master key) of the report's JSON with the fingerprint field empty. Every format carries that JSON
(the JSON file is it; the HTML embeds it; the PDF attaches it as `report.json`), so
`offsitedb report verify FILE` recomputes the digest from the carried JSON and compares.

What it proves: the carried content was produced by someone holding the repository's key, and no
byte of it changed since. What it does not prove: that the visible pages of a PDF or HTML say the
same as the carried JSON (an editor can change a drawn number and leave the attachment alone:
`verify` prints the carried figures to compare with), nor that the repository held everything
(a snapshot deleted from the bucket before the report was written is not in it).
*/

use super::model::Report;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};

const PURPOSE: &[u8] = b"offsitedb v1 report fingerprint";
/// Hex digits shown: 128 bits, in groups of four for reading aloud.
const SHOWN: usize = 32;

/// Sets `report.fingerprint`.
pub fn sign(report: &mut Report, key: &MasterKey) -> Result<()> {
    report.fingerprint = compute(report, key)?;
    Ok(())
}

/// Whether `report.fingerprint` is the one a key of the keyring `key` gives its content (a
/// report written before a key rotation carries the older key's fingerprint).
pub fn check(report: &Report, key: &MasterKey) -> Result<bool> {
    // A plain comparison: `verify` is a local command, not an oracle anyone can time.
    for id in key.ids() {
        if compute_by(report, key, &id)? == report.fingerprint {
            return Ok(true);
        }
    }
    Ok(false)
}

fn compute(report: &Report, key: &MasterKey) -> Result<String> {
    compute_by(report, key, &key.id())
}

fn compute_by(report: &Report, key: &MasterKey, id: &crate::crypto::KeyId) -> Result<String> {
    let mut unsigned = report.clone();
    unsigned.fingerprint.clear();
    let json = serde_json::to_vec(&unsigned)
        .map_err(|e| Error::internal(format!("cannot serialize the report: {e}")))?;
    let mac = key.mac_by(id, PURPOSE, &json).expect("an id of the ring");
    let hex = crate::units::hex(&mac);
    Ok(hex.as_bytes()[..SHOWN]
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("hex is ASCII"))
        .collect::<Vec<_>>()
        .join("-"))
}
