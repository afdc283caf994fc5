//! Inspects a pg_dump custom-format archive (a file, or `-` for stdin) and prints its summary
//! and the inspector's speed: `cargo run --release --example inspect_dump -- FILE`.

use std::io::Read;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: inspect_dump FILE|-")?;
    let input: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&path)?)
    };
    let t = Instant::now();
    let s = offsitedb::dump::inspect(input)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "archive {} from pg_dump {} (server {}), database {}, encoding {:?}",
        s.archive_version, s.pg_dump_version, s.server_version, s.dbname, s.encoding
    );
    for t in s.tables.iter().chain(&s.large_objects) {
        println!(
            "{:>6} {}.{}: {} rows, digest {:032x}",
            t.dump_id, t.schema, t.name, t.rows, t.digest
        );
    }
    println!("owners {:?}, extensions {:?}", s.owners, s.extensions);
    println!(
        "{} bytes in {secs:.3} s: {:.0} MB/s",
        s.bytes,
        s.bytes as f64 / secs / 1e6
    );
    Ok(())
}
