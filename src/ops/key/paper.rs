/*!
A paper copy of a master key: what a person can print, keep in a safe, and type back on the bad
day. The key's 32 bytes in hex (no letters to confuse: a typed `O` reads as `0`, `I` and `L` as
`1`), four lines of four 4-digit groups, each line followed by a 4-digit checksum of that line
that folds in the line number (so a typo names its line, and two lines typed in each other's
place fail too), and the key id, which checks the whole key once more:

```text
OffsiteDB master key, key id 5f0c1e2d3c4b5a69788796a5b4c3d2e1
1: 3f2a 91bc 0d4e 77aa  c1d2
2: …
```

Reading back ([`parse`]) ignores case, spaces and dashes, and any line that is not a key line
(the title, notes a person added).
*/

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::MasterKey;
use crate::crypto::key::KEY_LEN;
use crate::error::{Error, Result};

const LINES: usize = 4;
const PER_LINE: usize = KEY_LEN / LINES;
const CHECK_INFO: &[u8] = b"offsitedb paper key line";

/// The 2-byte checksum of line `n` (1-based) holding `bytes`.
fn checksum(n: usize, bytes: &[u8]) -> [u8; 2] {
    let mut h = Sha256::new();
    h.update(CHECK_INFO);
    h.update([n as u8]);
    h.update(bytes);
    let d = h.finalize();
    [d[0], d[1]]
}

fn groups(hex: &str) -> String {
    hex.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("hex is ASCII"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The paper copy of the current key of `key`.
pub fn render(key: &MasterKey) -> Zeroizing<String> {
    let bytes = key.bytes();
    let mut t = Zeroizing::new(format!("OffsiteDB master key, key id {}\n", key.id()));
    for (i, line) in bytes.chunks(PER_LINE).enumerate() {
        let n = i + 1;
        let hex = Zeroizing::new(crate::units::hex(line));
        t.push_str(&format!(
            "{n}: {}  {}\n",
            groups(&hex),
            crate::units::hex(&checksum(n, line))
        ));
    }
    t
}

fn bad(msg: String) -> Error {
    Error::key(msg).with_hint(
        "compare that line with the paper copy (4 groups of 4 hex digits, then its 4-digit checksum)",
    )
}

/// Reads a paper copy back (see the module comment for what it tolerates).
pub fn parse(text: &str) -> Result<MasterKey> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_LEN));
    let mut paper_id: Option<String> = None;
    let mut n = 0;
    for raw in text.lines() {
        let line = raw.trim();
        let lower = line.to_ascii_lowercase();
        if let Some(at) = lower.find("key id") {
            let id: String = lower[at + 6..]
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect();
            paper_id = Some(id);
            continue;
        }
        // An optional "N:" (or "N." or "N)") numbers the line.
        let (number, rest) = match line.find([':', '.', ')']) {
            Some(at)
                if !line[..at].is_empty()
                    && line[..at].trim().bytes().all(|b| b.is_ascii_digit()) =>
            {
                (line[..at].trim().parse::<usize>().ok(), &line[at + 1..])
            }
            _ => (None, line),
        };
        let digits: Zeroizing<String> = Zeroizing::new(
            rest.chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .map(|c| match c.to_ascii_lowercase() {
                    'o' => '0',
                    'i' | 'l' => '1',
                    c => c,
                })
                .collect(),
        );
        if digits.is_empty() {
            continue;
        }
        // Prose (a title, a note) is not a key line unless it is numbered.
        let hexish = digits.chars().all(|c| c.is_ascii_hexdigit());
        if number.is_none() && !hexish {
            continue;
        }
        n += 1;
        if n > LINES {
            return Err(bad(format!(
                "the paper copy has more than {LINES} key lines (line {n})"
            )));
        }
        if let Some(k) = number
            && k != n
        {
            return Err(bad(format!(
                "key line {n} is numbered {k}: the lines are out of order or one is missing"
            )));
        }
        let want = PER_LINE * 2 + 4;
        if !hexish || digits.len() != want {
            return Err(bad(format!(
                "key line {n} does not read: expected {want} hex digits ({} of the key, 4 of its checksum), found {}{}",
                PER_LINE * 2,
                digits.len(),
                if hexish {
                    ""
                } else {
                    " characters, not all of them hex digits"
                }
            )));
        }
        let decoded = Zeroizing::new(
            (0..want / 2)
                .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).expect("hex"))
                .collect::<Vec<u8>>(),
        );
        let (line_bytes, check) = decoded.split_at(PER_LINE);
        if checksum(n, line_bytes) != check {
            return Err(bad(format!(
                "key line {n} has a typo: its checksum does not match"
            )));
        }
        bytes.extend_from_slice(line_bytes);
    }
    if n < LINES {
        return Err(Error::key(format!(
            "the paper copy has {n} key line{} of {LINES}",
            if n == 1 { "" } else { "s" }
        ))
        .with_hint("type every numbered line of the paper copy"));
    }
    let key = MasterKey::from_bytes(bytes.as_slice().try_into().expect("4 lines of 8 bytes"));
    if let Some(id) = paper_id
        && id != key.id().to_string()
    {
        return Err(Error::key(format!(
            "the key typed has key id {}, but the paper copy says key id {id}",
            key.id()
        ))
        .with_hint("check the key id line, then each key line against the paper"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn round_trips_and_tolerates_how_people_type() {
        let k = MasterKey::generate().unwrap();
        let paper = render(&k);
        assert_eq!(parse(&paper).unwrap().id(), k.id());
        // Upper case, dashes instead of spaces, no numbers, O for 0, and a note.
        let typed: String = paper
            .lines()
            .map(|l| {
                let l = l.split_once(": ").map_or(l, |(_, r)| r);
                format!("{}\n", l.to_uppercase().replace(' ', "-").replace('0', "O"))
            })
            .collect();
        let typed = format!("my note: from the safe\n{typed}");
        assert_eq!(parse(&typed).unwrap().id(), k.id());
    }

    #[test]
    fn a_typo_or_swapped_lines_are_named() {
        let k = MasterKey::from_bytes([0x5a; 32]);
        let paper = render(&k);
        let lines: Vec<&str> = paper.lines().collect();
        // One digit changed on key line 3.
        let mut typo: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let l3 = typo[3].replacen("5a5a", "5a5b", 1);
        typo[3] = l3;
        let e = parse(&typo.join("\n")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Key);
        assert!(e.message().contains("key line 3 has a typo"), "{e}");
        // Lines 1 and 2 typed in each other's place, without their numbers.
        let paper = render(&MasterKey::generate().unwrap());
        let lines: Vec<&str> = paper.lines().collect();
        let strip = |l: &str| l.split_once(": ").unwrap().1.to_string();
        let swapped = [
            strip(lines[2]),
            strip(lines[1]),
            strip(lines[3]),
            strip(lines[4]),
        ];
        let e = parse(&swapped.join("\n")).unwrap_err();
        assert!(e.message().contains("key line 1 has a typo"), "{e}");
        let e = parse(&lines[..3].join("\n")).unwrap_err();
        assert!(e.message().contains("2 key lines of 4"), "{e}");
    }
}
