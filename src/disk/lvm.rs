//! LVM2 physical volumes: which bytes of a PV to read, from its label and its volume
//! group's text metadata, without LVM's tools or device mapper.
//!
//! Read: everything before the first extent (label, metadata areas), the extents of
//! every logical volume on this PV, and the metadata area at its end if there is one.
//! Not read: extents no logical volume uses. Inside a linear logical volume (segments of
//! type `striped` with one stripe, all on this PV) the filesystem is read through the
//! segment map by the readers of `disk::fs`, so only its used blocks are; thin pools,
//! RAID, mirrors, caches, snapshots, striped volumes and volumes on several PVs are read
//! whole. A restore writes the same bytes back, so the volume group needs no
//! `vgcfgrestore`.
//!
//! Checked first, and the PV is read in full otherwise: the label's CRC, the metadata
//! area header's CRC, the metadata text's CRC, and that this PV is one of its volume
//! group's (by its UUID). Of the copies in its metadata areas, the one with the highest
//! `seqno` counts.

use crate::disk::endian::{le32, le64};
use anyhow::{bail, ensure, Context, Result};

use super::fs::{self, crc::crc32_ieee, FsKind, Reader, Scan, Usage};
use crate::range::{self, ByteRange};
use crate::ui::bytes;

const LABEL_ID: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
const MDA_MAGIC: &[u8; 16] = b"\x20\x4c\x56\x4d\x32\x20\x78\x5b\x35\x41\x25\x72\x30\x4e\x2a\x3e";
const INITIAL_CRC: u32 = 0xf597_a6cf;
const SECTOR: u64 = 512;
const MDA_HEADER: usize = 512;
/// The most metadata text read (LVM's own default area is 1 MiB).
const MAX_TEXT: u64 = 16 << 20;
/// The deepest nesting of sections the text parser follows.
const MAX_DEPTH: usize = 16;

/// A PV's label: its UUID, where its data begins, and its metadata areas.
#[derive(Debug)]
struct Label {
    uuid: String,
    /// (offset, size) of each metadata area.
    mdas: Vec<(u64, u64)>,
    data_start: u64,
}

/// Find and check the label in the first four sectors.
fn read_label(r: &Reader) -> Result<Label> {
    let head = r.read(0, 4 * SECTOR as usize)?;
    for (i, sector) in head.chunks(SECTOR as usize).enumerate() {
        if &sector[..8] != LABEL_ID {
            continue;
        }
        ensure!(
            le64(sector, 8) == i as u64,
            "the label says it is in another sector"
        );
        ensure!(
            le32(sector, 16) == crc32_ieee(INITIAL_CRC, &sector[20..]),
            "the label's checksum does not match"
        );
        ensure!(&sector[24..32] == LABEL_TYPE, "not an LVM2 label");
        let at = le32(sector, 20) as usize;
        ensure!(
            (32..=SECTOR as usize - 40).contains(&at),
            "pv header at {at}"
        );
        let pv = &sector[at..];
        let uuid = String::from_utf8_lossy(&pv[..32]).into_owned();
        // Data areas, then metadata areas: lists of (offset, size) ended by zeros.
        let mut lists = [Vec::new(), Vec::new()];
        let mut o = 40;
        for list in &mut lists {
            loop {
                ensure!(
                    o + 16 <= pv.len(),
                    "the label's area lists run past its sector"
                );
                let (off, size) = (le64(pv, o), le64(pv, o + 8));
                o += 16;
                if off == 0 && size == 0 {
                    break;
                }
                list.push((off, size));
            }
        }
        let data_start = lists[0]
            .first()
            .map(|d| d.0)
            .context("the label lists no data area")?;
        return Ok(Label {
            uuid,
            mdas: lists[1].clone(),
            data_start,
        });
    }
    bail!("no LVM2 label in its first four sectors")
}

/// The newest metadata text of the PV's metadata areas, with its seqno.
fn read_metadata(r: &Reader, label: &Label) -> Result<(Section, u64)> {
    let mut best: Option<(Section, u64)> = None;
    let mut errors = Vec::new();
    for &(off, size) in &label.mdas {
        match read_area(r, off, size).and_then(|text| {
            let vg = parse(&text)?;
            let seq = vg.int("seqno")?;
            Ok((vg, seq))
        }) {
            Ok((vg, seq)) => {
                if best.as_ref().is_none_or(|b| seq > b.1) {
                    best = Some((vg, seq));
                }
            }
            Err(e) => errors.push(format!("metadata area at {off}: {e:#}")),
        }
    }
    best.with_context(|| {
        if errors.is_empty() {
            "no metadata area".to_string()
        } else {
            errors.join("; ")
        }
    })
}

/// The text one metadata area points to, its checksums checked.
fn read_area(r: &Reader, off: u64, size: u64) -> Result<String> {
    ensure!(size > MDA_HEADER as u64, "a metadata area of {size} bytes");
    let h = r.read(off, MDA_HEADER)?;
    ensure!(
        le32(&h, 0) == crc32_ieee(INITIAL_CRC, &h[4..]),
        "its header's checksum does not match"
    );
    ensure!(&h[4..20] == MDA_MAGIC, "bad magic");
    ensure!(
        le64(&h, 24) == off,
        "its header says it is at {}",
        le64(&h, 24)
    );
    let (text_off, text_len, crc) = (le64(&h, 40), le64(&h, 48), le32(&h, 56));
    ensure!(
        text_len > 0 && text_len <= MAX_TEXT && text_len < size && text_off < size,
        "{text_len} bytes of text at {text_off}"
    );
    ensure!(text_off >= MDA_HEADER as u64, "text inside the header");
    // A circular buffer after the header: the text may wrap to its start.
    let first = text_len.min(size - text_off);
    let mut text = r.read(off + text_off, first as usize)?;
    if first < text_len {
        text.extend(r.read(off + MDA_HEADER as u64, (text_len - first) as usize)?);
    }
    ensure!(
        crc32_ieee(INITIAL_CRC, &text) == crc,
        "its text's checksum does not match"
    );
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    String::from_utf8(text[..end].to_vec()).context("its text is not UTF-8")
}

/// A value of LVM's text format.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Section(Section),
}

/// A section: its items in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section(Vec<(String, Value)>);

impl Section {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn int(&self, key: &str) -> Result<u64> {
        match self.get(key) {
            Some(Value::Int(n)) if *n >= 0 => Ok(*n as u64),
            _ => bail!("{key} is not a number"),
        }
    }

    fn str(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Ok(s),
            _ => bail!("{key} is not a string"),
        }
    }

    fn section(&self, key: &str) -> Result<&Section> {
        match self.get(key) {
            Some(Value::Section(s)) => Ok(s),
            _ => bail!("no section {key}"),
        }
    }

    fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.0.iter().filter_map(|(k, v)| match v {
            Value::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }
}

/// Parse a metadata text and return the volume group's section (the one top-level
/// section).
pub fn parse(text: &str) -> Result<Section> {
    let tokens = tokens(text)?;
    let mut p = Parser { tokens, at: 0 };
    let top = p.items(0)?;
    ensure!(
        p.at == p.tokens.len(),
        "unexpected {:?}",
        p.tokens.get(p.at)
    );
    let mut vgs = top.sections();
    let (_, vg) = vgs.next().context("no volume group in the metadata")?;
    ensure!(
        vgs.next().is_none(),
        "two volume groups in one metadata text"
    );
    Ok(vg.clone())
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Int(i64),
    Punct(char),
}

fn tokens(text: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '{' | '}' | '[' | ']' | '=' | ',' => out.push(Token::Punct(c)),
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, e)) => s.push(e),
                            None => bail!("a string without its end at {i}"),
                        },
                        Some((_, c)) => s.push(c),
                        None => bail!("a string without its end at {i}"),
                    }
                }
                out.push(Token::Str(s));
            }
            c if c.is_ascii_alphanumeric() || "_.+-".contains(c) => {
                let mut w = String::from(c);
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_ascii_alphanumeric() || "_.+-".contains(c) {
                        w.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(match w.parse::<i64>() {
                    Ok(n) => Token::Int(n),
                    Err(_) => Token::Word(w),
                });
            }
            c => bail!("unexpected {c:?} at byte {i}"),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    /// Items until a closing brace (not taken) or the end.
    fn items(&mut self, depth: usize) -> Result<Section> {
        ensure!(depth <= MAX_DEPTH, "sections nested too deep");
        let mut items = Vec::new();
        while let Some(t) = self.peek() {
            if *t == Token::Punct('}') {
                break;
            }
            let key = match self.next() {
                Some(Token::Word(w)) => w,
                Some(Token::Int(n)) => n.to_string(),
                other => bail!("expected a name, found {other:?}"),
            };
            match self.next() {
                Some(Token::Punct('{')) => {
                    let s = self.items(depth + 1)?;
                    ensure!(
                        self.next() == Some(Token::Punct('}')),
                        "section {key} not closed"
                    );
                    items.push((key, Value::Section(s)));
                }
                Some(Token::Punct('=')) => {
                    let v = self.value()?;
                    items.push((key, v));
                }
                other => bail!("expected = or {{ after {key}, found {other:?}"),
            }
        }
        Ok(Section(items))
    }

    fn value(&mut self) -> Result<Value> {
        match self.next() {
            Some(Token::Int(n)) => Ok(Value::Int(n)),
            Some(Token::Str(s)) => Ok(Value::Str(s)),
            Some(Token::Word(w)) => Ok(Value::Str(w)),
            Some(Token::Punct('[')) => {
                let mut list = Vec::new();
                loop {
                    match self.peek() {
                        Some(Token::Punct(']')) => {
                            self.next();
                            return Ok(Value::List(list));
                        }
                        Some(Token::Punct(',')) => {
                            self.next();
                        }
                        Some(_) => {
                            let v = self.value()?;
                            ensure!(!matches!(v, Value::List(_)), "a list inside a list");
                            list.push(v);
                        }
                        None => bail!("a list without its end"),
                    }
                }
            }
            other => bail!("expected a value, found {other:?}"),
        }
    }
}

/// One segment of a logical volume as far as this PV is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    /// First extent in the LV, and how many.
    start: u64,
    count: u64,
    /// Where it lies on this PV (first extent), if it does and is linear.
    on_this_pv: Option<u64>,
    /// Why it cannot be read through (not linear, on another PV), if so.
    whole: Option<String>,
    /// Every extent it occupies on this PV (the whole-read fallback).
    extents_here: Vec<(u64, u64)>,
}

/// A logical volume: its name and segments.
#[derive(Debug, Clone)]
struct Volume {
    name: String,
    segments: Vec<Segment>,
}

/// The volume group as this PV sees it.
#[derive(Debug)]
struct Group {
    extent: u64,
    /// pe_start in bytes and the extent count of this PV.
    pe_start: u64,
    pe_count: u64,
    volumes: Vec<Volume>,
}

fn group(vg: &Section, uuid: &str) -> Result<Group> {
    let extent = vg
        .int("extent_size")?
        .checked_mul(SECTOR)
        .filter(|&e| e >= 4096)
        .context("extent size")?;
    // This PV's name in the metadata (pv0, pv1...), by its UUID.
    let pvs = vg.section("physical_volumes")?;
    let (pv_name, pv) = pvs
        .sections()
        .find(|(_, pv)| pv.str("id").is_ok_and(|id| id.replace('-', "") == uuid))
        .context("this PV is not one of its volume group's")?;
    let pe_start = pv
        .int("pe_start")?
        .checked_mul(SECTOR)
        .context("pe_start")?;
    let pe_count = pv.int("pe_count")?;
    let mut volumes = Vec::new();
    if let Ok(lvs) = vg.section("logical_volumes") {
        for (name, lv) in lvs.sections() {
            volumes.push(Volume {
                name: name.to_string(),
                segments: segments(lv, pv_name, pe_count)
                    .with_context(|| format!("logical volume {name}"))?,
            });
        }
    }
    Ok(Group {
        extent,
        pe_start,
        pe_count,
        volumes,
    })
}

fn segments(lv: &Section, pv_name: &str, pe_count: u64) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    for (_, seg) in lv.sections().filter(|(k, _)| k.starts_with("segment")) {
        let start = seg.int("start_extent")?;
        let count = seg.int("extent_count")?;
        let kind = seg.str("type")?;
        let stripes = match seg.get("stripes") {
            Some(Value::List(l)) => l.clone(),
            _ => Vec::new(),
        };
        // [pv, first extent, pv, first extent, ...]
        let pairs: Vec<(String, u64)> = stripes
            .chunks(2)
            .filter_map(|p| match p {
                [Value::Str(pv), Value::Int(e)] if *e >= 0 => Some((pv.clone(), *e as u64)),
                _ => None,
            })
            .collect();
        let n = pairs.len().max(1) as u64;
        let per_stripe = count.div_ceil(n);
        let mut here = Vec::new();
        for (pv, first) in &pairs {
            if pv == pv_name {
                ensure!(
                    first.checked_add(per_stripe).is_some_and(|e| e <= pe_count),
                    "extents {first}+{per_stripe} beyond the PV's {pe_count}"
                );
                here.push((*first, per_stripe));
            }
        }
        let whole = match (kind, pairs.as_slice()) {
            ("striped", [(pv, _)]) if pv == pv_name && stripes.len() == 2 => None,
            ("striped", [_]) => Some("it lies on another physical volume".to_string()),
            ("striped", _) => Some(format!("it is striped over {} devices", pairs.len())),
            (k, _) => Some(format!("it is a {k} volume")),
        };
        out.push(Segment {
            start,
            count,
            on_this_pv: if whole.is_none() {
                here.first().map(|h| h.0)
            } else {
                None
            },
            whole,
            extents_here: here,
        });
    }
    out.sort_by_key(|s| s.start);
    Ok(out)
}

/// Where a physical volume's logical volumes lie on it.
#[derive(Debug, Clone)]
pub struct PvLayout {
    /// Bytes before the first extent: the label and metadata area.
    pub pe_start: u64,
    /// Each logical volume with extents on this PV.
    pub volumes: Vec<LvOnPv>,
}

/// A logical volume's pieces on one PV.
#[derive(Debug, Clone)]
pub struct LvOnPv {
    pub name: String,
    pub pieces: Vec<LvPiece>,
}

/// `len` bytes of a logical volume from `lv_offset`, at `pv_offset` of the PV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LvPiece {
    pub lv_offset: u64,
    pub pv_offset: u64,
    pub len: u64,
}

/// The logical volumes of a PV, from its metadata.
pub fn layout(r: &Reader) -> Result<PvLayout> {
    let label = read_label(r)?;
    let (vg, _) = read_metadata(r, &label)?;
    let g = group(&vg, &label.uuid)?;
    let volumes = g
        .volumes
        .iter()
        .map(|v| {
            let pieces = v
                .segments
                .iter()
                .flat_map(|s| {
                    s.extents_here.iter().map(move |&(first, n)| LvPiece {
                        lv_offset: s.start * g.extent,
                        pv_offset: g.pe_start + first * g.extent,
                        len: n * g.extent,
                    })
                })
                .collect();
            LvOnPv {
                name: v.name.clone(),
                pieces,
            }
        })
        .collect();
    Ok(PvLayout {
        pe_start: g.pe_start,
        volumes,
    })
}

/// Find which bytes of an LVM2 physical volume are in use.
///
/// `contents` looks into each linear logical volume (the filesystem reader of
/// `disk::scan`, which knows what a volume may hold).
pub fn scan(r: &Reader, len: u64, contents: &dyn Fn(&Reader) -> Scan) -> Result<Usage> {
    let label = read_label(r)?;
    let (vg, _) = read_metadata(r, &label)?;
    let g = group(&vg, &label.uuid)?;
    let data_end = g
        .pe_count
        .checked_mul(g.extent)
        .and_then(|b| b.checked_add(g.pe_start))
        .filter(|&e| e <= len)
        .context("its extents run past the device")?;
    ensure!(
        g.pe_start == label.data_start,
        "the metadata's pe_start {} is not the label's data area at {}",
        g.pe_start,
        label.data_start
    );
    let mut used = vec![ByteRange::new(0, g.pe_start)];
    // A metadata area at the end, and anything past the last extent.
    used.push(ByteRange::between(data_end, len));
    for &(off, size) in &label.mdas {
        if off >= data_end {
            used.push(ByteRange::new(off, size.min(len - off)));
        }
    }
    let mut notes = Vec::new();
    for v in &g.volumes {
        let (ranges, note) = volume_usage(r, &g, v, contents);
        used.extend(ranges);
        notes.push(format!("LV {}: {note}", v.name));
    }
    used.sort_unstable();
    let mut merged = Vec::with_capacity(used.len());
    for u in used.into_iter().filter(|u| !u.is_empty()) {
        range::append_merged(&mut merged, u);
    }
    Ok(Usage {
        kind: FsKind::Lvm,
        block_size: g.extent.min(u32::MAX as u64) as u32,
        used: merged,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

/// The bytes of this PV a logical volume needs, and what was found in it.
fn volume_usage(
    r: &Reader,
    g: &Group,
    v: &Volume,
    contents: &dyn Fn(&Reader) -> Scan,
) -> (Vec<ByteRange>, String) {
    let whole_extents = |v: &Volume| -> Vec<ByteRange> {
        v.segments
            .iter()
            .flat_map(|s| &s.extents_here)
            .map(|&(first, n)| ByteRange::new(g.pe_start + first * g.extent, n * g.extent))
            .collect()
    };
    let size = v.segments.iter().map(|s| s.count).sum::<u64>() * g.extent;
    if let Some(why) = v.segments.iter().find_map(|s| s.whole.clone()) {
        return (whole_extents(v), format!("read whole ({why})"));
    }
    // A linear volume: its extents in order, contiguous from extent 0.
    let mut pieces = Vec::new();
    let mut next = 0;
    for s in &v.segments {
        let (Some(first), true) = (s.on_this_pv, s.start == next) else {
            return (
                whole_extents(v),
                "read whole (its segments leave gaps)".into(),
            );
        };
        pieces.push((g.pe_start + first * g.extent, s.count * g.extent));
        next = s.start + s.count;
    }
    let lv = r.sub(&pieces);
    match contents(&lv) {
        Scan::Used(u) => {
            let note = format!(
                "{}, {} of {} in use",
                u.kind,
                bytes(u.used_bytes()),
                bytes(size)
            );
            (fs::map_ranges(&pieces, &u.used), note)
        }
        Scan::Whole(why) => (whole_extents(v), format!("{why}; read whole")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"vg0 {
id = "abc"
seqno = 7
extent_size = 8192 # 4 MiB
physical_volumes {
pv0 {
id = "PVID-0000"
pe_start = 2048
pe_count = 100
}
}
logical_volumes {
root {
segment_count = 2
segment1 {
start_extent = 0
extent_count = 10
type = "striped"
stripe_count = 1 # linear
stripes = [
"pv0", 20
]
}
segment2 {
start_extent = 10
extent_count = 5
type = "striped"
stripe_count = 1
stripes = ["pv0", 50]
}
}
pool {
segment1 {
start_extent = 0
extent_count = 8
type = "thin-pool"
}
}
}
}
contents = "Text Format Volume Group"
version = 1
"#;

    #[test]
    fn metadata_text_gives_segments_on_this_pv() {
        let vg = parse(TEXT).unwrap();
        assert_eq!(vg.int("seqno").unwrap(), 7);
        let g = group(&vg, "PVID0000").unwrap();
        assert_eq!((g.extent, g.pe_start, g.pe_count), (4 << 20, 1 << 20, 100));
        let root = &g.volumes[0];
        assert_eq!(root.segments.len(), 2);
        assert_eq!(root.segments[1].on_this_pv, Some(50));
        assert!(root.segments.iter().all(|s| s.whole.is_none()));
        assert!(g.volumes[1].segments[0].whole.as_deref() == Some("it is a thin-pool volume"));
        assert!(group(&vg, "OTHER").is_err());
    }

    #[test]
    fn bad_text_is_an_error() {
        for t in [
            "vg {",
            "vg { a = [1, }",
            "vg { a = \"x }",
            "a = 1",
            "vg { } vg2 { }",
        ] {
            assert!(parse(t).is_err(), "{t}");
        }
        let deep = "a {".repeat(40) + &"}".repeat(40);
        assert!(parse(&deep).is_err());
    }
}
