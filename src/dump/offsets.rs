//! Giving a spooled archive the data offsets pg_dump writes when its output is seekable.
//!
//! pg_dump writing to a pipe cannot go back to fill in its table of contents, so every entry
//! with data says "position not set". pg_restore then finds a block by reading forward from
//! wherever it is; with `-j N` each worker does that for each table, which is slow on a big
//! archive. The inspector saw where every block starts: writing those positions in place (flag
//! 2, then `offSize` bytes little-endian, the same length as before) makes the file what pg_dump
//! would have written to a file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::DumpSummary;

const OFFSET_POS_NOT_SET: u8 = 1;
const OFFSET_POS_SET: u8 = 2;

/// Writes the position of every data block the inspector saw into its TOC entry. `f` must hold
/// exactly the archive that produced `s` (an entry whose flag says "no data" is refused as a
/// sign of the wrong file).
pub fn rewrite_offsets(f: &mut File, s: &DumpSummary) -> io::Result<()> {
    let width = usize::from(s.off_size);
    let len = f.metadata()?.len();
    let mismatch = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the file is not the inspected archive: {what}"),
        )
    };
    let mut field = vec![0u8; 1 + width];
    for o in &s.data_offsets {
        if o.block_pos >= len || o.field_pos + field.len() as u64 > len {
            return Err(mismatch(format!("it ends before byte {}", o.block_pos)));
        }
        let mut flag = [0u8];
        f.read_exact_at(&mut flag, o.field_pos)?;
        if flag[0] != OFFSET_POS_NOT_SET && flag[0] != OFFSET_POS_SET {
            return Err(mismatch(format!(
                "dump id {} has offset flag {} at byte {}",
                o.dump_id, flag[0], o.field_pos
            )));
        }
        let pos = o.block_pos.to_le_bytes();
        if width < 8 && pos[width..].iter().any(|&b| b != 0) {
            return Err(mismatch(format!(
                "byte {} does not fit in {width} offset bytes",
                o.block_pos
            )));
        }
        field.fill(0);
        field[0] = OFFSET_POS_SET;
        let n = width.min(8);
        field[1..1 + n].copy_from_slice(&pos[..n]);
        f.write_all_at(&field, o.field_pos)?;
    }
    Ok(())
}
