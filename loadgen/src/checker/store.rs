//! The chat checker's input as it arrives — the workers' sends and receive events, from
//! their `history` lines (or from `done` lines that carry them) — and how the checker
//! reads it back: in groups of whole channels, each small enough to check in memory.
//!
//! ```text
//! sends, receives ─▶ refused / unanswered sends: kept in memory (few; looked up by nonce)
//!                 └▶ acked sends, receive events ─▶ bucket of the channel
//!                      memory: one bucket · spilled: BUCKETS files a kind, appended in order
//! check: bucket by bucket ─▶ over `max_group` receive events and more than one channel?
//!          split by another hash of the channel into FANOUT files, again (≤ MAX_LEVELS)
//!        ─▶ group (whole channels) ─▶ the checker
//! ```
//!
//! All events of a channel land in one bucket in the order they were appended, so each
//! receiver's events keep their arrival order (one receiver's lines come, in order, from
//! its one worker). The check holds one group at a time: its memory is bounded by
//! `max_group`, not by the run's length (one channel with more events than that is
//! checked whole). Spilled files live in the run folder's `history/` while the run goes
//! on and are removed with the store.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use flowline_protocol::ChannelId;

use crate::error::{LoadgenError, Result};
use crate::wire::{Outcome, RecvKind, RecvRecord, SendRecord};

/// Bucket files per kind when spilled.
const BUCKETS: u32 = 64;
/// Sub-buckets a bucket over `max_group` splits into.
const FANOUT: u32 = 16;
/// How many times a bucket splits at most (64 · 16³ groups).
const MAX_LEVELS: usize = 4;
/// Bytes of a spilled acked send.
const SEND_SIZE: usize = 37;
/// Bytes of a spilled receive event.
const RECV_SIZE: usize = 53;

/// One group of whole channels: every acked send and receive event of them.
#[derive(Debug, Default)]
pub struct Group {
    /// Acked sends.
    pub acked: Vec<SendRecord>,
    /// Receive events, each receiver's in arrival order.
    pub receives: Vec<RecvRecord>,
    /// Bucket at each level; empty: every channel.
    path: Vec<u32>,
}

impl Group {
    /// Whether `channel` belongs to this group (whether it has events or not).
    pub fn holds(&self, channel: ChannelId) -> bool {
        self.path
            .iter()
            .enumerate()
            .all(|(level, &b)| bucket(channel, level) == b)
    }
}

/// The bucket of `channel` at split `level` (0: the top-level files).
fn bucket(channel: ChannelId, level: usize) -> u32 {
    // splitmix64, seeded by the level: channel ids are often consecutive.
    let mut x = (channel as u64) ^ (level as u64).wrapping_mul(0xA076_1D64_78BD_642F);
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let n = if level == 0 { BUCKETS } else { FANOUT };
    (x % u64::from(n)) as u32
}

/// Where a run's chat history is kept until the check.
#[derive(Debug, Default)]
pub struct HistoryStore {
    /// Sends that were refused or got no answer.
    failed: Vec<SendRecord>,
    acked: u64,
    receives: u64,
    spill: Option<Spill>,
    /// In memory (no spill directory).
    mem_acked: Vec<SendRecord>,
    mem_receives: Vec<RecvRecord>,
    /// The first spill error: the history is incomplete.
    error: Option<String>,
}

/// The bucket files.
#[derive(Debug)]
struct Spill {
    dir: PathBuf,
    acked: Vec<BufWriter<File>>,
    receives: Vec<BufWriter<File>>,
}

impl Drop for Spill {
    fn drop(&mut self) {
        self.acked.clear();
        self.receives.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> LoadgenError {
    move |e| LoadgenError::io(what, e)
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    let f = File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    Ok(BufWriter::with_capacity(64 * 1024, f))
}

impl HistoryStore {
    /// A store keeping everything in memory (tests, small tools).
    pub fn in_memory() -> Self {
        HistoryStore::default()
    }

    /// A store spilling to bucket files in `dir` (created; removed with the store). It
    /// must not exist yet: a run folder's history is its own.
    pub fn spilled(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut spill = Spill {
            dir: dir.to_path_buf(),
            acked: Vec::new(),
            receives: Vec::new(),
        };
        for b in 0..BUCKETS {
            spill
                .acked
                .push(create(&dir.join(format!("acked-{b}.bin")))?);
            spill
                .receives
                .push(create(&dir.join(format!("receives-{b}.bin")))?);
        }
        Ok(HistoryStore {
            spill: Some(spill),
            ..HistoryStore::default()
        })
    }

    /// Take sends (any outcome) and receive events (each receiver's in arrival order,
    /// after its earlier ones).
    pub fn append(&mut self, sends: Vec<SendRecord>, receives: Vec<RecvRecord>) {
        let (acked, failed): (Vec<SendRecord>, Vec<SendRecord>) =
            sends.into_iter().partition(|s| s.outcome == Outcome::Ok);
        self.failed.extend(failed);
        self.acked += acked.len() as u64;
        self.receives += receives.len() as u64;
        let Some(spill) = self.spill.as_mut() else {
            self.mem_acked.extend(acked);
            self.mem_receives.extend(receives);
            return;
        };
        if self.error.is_some() {
            return;
        }
        if let Err(e) = spill.write(&acked, &receives) {
            self.error = Some(format!("spilling the history: {e}"));
        }
    }

    /// Sends that were refused or got no answer.
    pub fn failed(&self) -> &[SendRecord] {
        &self.failed
    }

    /// Acked sends and receive events taken so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.acked, self.receives)
    }

    /// Hand every group of whole channels to `f`, each with at most `max_group` receive
    /// events unless a single channel has more. Every channel belongs to exactly one group
    /// (some groups may be empty). An error when the spilled history is incomplete or
    /// unreadable.
    pub fn for_each_group(&self, max_group: usize, mut f: impl FnMut(Group)) -> Result<()> {
        if let Some(e) = &self.error {
            return Err(LoadgenError::Invalid(e.clone()));
        }
        let Some(spill) = &self.spill else {
            f(Group {
                acked: self.mem_acked.clone(),
                receives: self.mem_receives.clone(),
                path: Vec::new(),
            });
            return Ok(());
        };
        for b in 0..BUCKETS {
            let files = (
                spill.dir.join(format!("acked-{b}.bin")),
                spill.dir.join(format!("receives-{b}.bin")),
            );
            visit(&spill.dir, vec![b], files, max_group, &mut f)?;
        }
        Ok(())
    }
}

impl Spill {
    fn write(&mut self, acked: &[SendRecord], receives: &[RecvRecord]) -> std::io::Result<()> {
        let mut touched = [0u64; 2];
        for s in acked {
            let b = bucket(s.channel, 0);
            touched[0] |= 1 << b;
            self.acked[b as usize].write_all(&encode_send(s))?;
        }
        for r in receives {
            let b = bucket(r.channel, 0);
            touched[1] |= 1 << b;
            self.receives[b as usize].write_all(&encode_recv(r))?;
        }
        // Flushed at once: the check reads the files through other handles.
        for b in 0..BUCKETS as usize {
            if touched[0] & (1 << b) != 0 {
                self.acked[b].flush()?;
            }
            if touched[1] & (1 << b) != 0 {
                self.receives[b].flush()?;
            }
        }
        Ok(())
    }
}

/// Check the group in `files` (acked, receives), splitting it first if it is too big.
fn visit(
    dir: &Path,
    path: Vec<u32>,
    files: (PathBuf, PathBuf),
    max_group: usize,
    f: &mut impl FnMut(Group),
) -> Result<()> {
    let events = file_len(&files.1)? / RECV_SIZE as u64;
    if events <= max_group as u64 || path.len() >= MAX_LEVELS {
        f(Group {
            acked: read_all(&files.0, SEND_SIZE, decode_send)?,
            receives: read_all(&files.1, RECV_SIZE, decode_recv)?,
            path,
        });
        return Ok(());
    }
    let level = path.len();
    let name = path
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("-");
    let sub = |kind: &str, i: u32| dir.join(format!("split-{name}-{i}.{kind}"));
    let first_channel = |b: &[u8]| ChannelId::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let acked = split(
        &files.0,
        SEND_SIZE,
        level,
        |i| sub("acked", i),
        first_channel,
    )?;
    let receives = split(
        &files.1,
        RECV_SIZE,
        level,
        |i| sub("receives", i),
        first_channel,
    )?;
    // One channel alone: splitting again would not shrink it.
    let single = match (acked, receives) {
        (Seen::Many, _) | (_, Seen::Many) => false,
        (Seen::One(a), Seen::One(r)) => a == r,
        _ => true,
    };
    let mut result = Ok(());
    for i in 0..FANOUT {
        let (a, r) = (sub("acked", i), sub("receives", i));
        if result.is_ok() {
            let mut deeper = path.clone();
            deeper.push(i);
            let limit = if single { usize::MAX } else { max_group };
            result = visit(dir, deeper, (a.clone(), r.clone()), limit, f);
        }
        let _ = std::fs::remove_file(a);
        let _ = std::fs::remove_file(r);
    }
    result
}

/// The channels a file held.
#[derive(Clone, Copy)]
enum Seen {
    None,
    One(ChannelId),
    Many,
}

/// Copy the records of `from` into FANOUT files by their channel's bucket at `level` (the
/// index, in a group's path, of the bucket they go to).
fn split(
    from: &Path,
    size: usize,
    level: usize,
    to: impl Fn(u32) -> PathBuf,
    channel: impl Fn(&[u8]) -> ChannelId,
) -> Result<Seen> {
    let mut outs = Vec::new();
    for i in 0..FANOUT {
        outs.push(create(&to(i))?);
    }
    let mut seen = Seen::None;
    for_each_record(from, size, |b| {
        let c = channel(b);
        seen = match seen {
            Seen::None => Seen::One(c),
            Seen::One(x) if x == c => seen,
            _ => Seen::Many,
        };
        let i = bucket(c, level) as usize;
        outs[i].write_all(b)
    })?;
    for (i, mut o) in outs.into_iter().enumerate() {
        o.flush()
            .map_err(io_err(format!("writing {}", to(i as u32).display())))?;
    }
    Ok(seen)
}

fn file_len(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(io_err(format!("reading {}", path.display())))
}

fn for_each_record(
    path: &Path,
    size: usize,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<()> {
    let what = || format!("reading {}", path.display());
    let file = File::open(path).map_err(io_err(what()))?;
    let mut r = BufReader::with_capacity(256 * 1024, file);
    let mut buf = [0u8; RECV_SIZE];
    loop {
        match r.read_exact(&mut buf[..size]) {
            Ok(()) => f(&buf[..size]).map_err(io_err(what()))?,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(LoadgenError::io(what(), e)),
        }
    }
}

fn read_all<T>(path: &Path, size: usize, decode: fn(&[u8]) -> Option<T>) -> Result<Vec<T>> {
    let n = file_len(path)? / size as u64;
    let mut out = Vec::with_capacity(n as usize);
    let mut bad = false;
    for_each_record(path, size, |b| {
        match decode(b) {
            Some(x) => out.push(x),
            None => bad = true,
        }
        Ok(())
    })?;
    if bad {
        return Err(LoadgenError::Invalid(format!(
            "{}: a record is not one this build wrote",
            path.display()
        )));
    }
    Ok(out)
}

/// Little-endian fixed fields: channel, seq, id, sender, n, at_ms (outcome is `ok`).
fn encode_send(s: &SendRecord) -> [u8; SEND_SIZE] {
    let mut b = [0u8; SEND_SIZE];
    b[0..8].copy_from_slice(&s.channel.to_le_bytes());
    b[8..16].copy_from_slice(&s.seq.to_le_bytes());
    b[16..24].copy_from_slice(&s.id.to_le_bytes());
    b[24..28].copy_from_slice(&s.sender.to_le_bytes());
    b[28..32].copy_from_slice(&s.n.to_le_bytes());
    b[32..36].copy_from_slice(&s.at_ms.to_le_bytes());
    b[36] = outcome_byte(s.outcome);
    b
}

fn decode_send(b: &[u8]) -> Option<SendRecord> {
    Some(SendRecord {
        channel: i64::from_le_bytes(b.get(0..8)?.try_into().ok()?),
        seq: i64::from_le_bytes(b.get(8..16)?.try_into().ok()?),
        id: i64::from_le_bytes(b.get(16..24)?.try_into().ok()?),
        sender: u32::from_le_bytes(b.get(24..28)?.try_into().ok()?),
        n: u32::from_le_bytes(b.get(28..32)?.try_into().ok()?),
        at_ms: u32::from_le_bytes(b.get(32..36)?.try_into().ok()?),
        outcome: match b.get(36)? {
            0 => Outcome::Ok,
            1 => Outcome::Error,
            2 => Outcome::Unknown,
            _ => return None,
        },
    })
}

fn outcome_byte(o: Outcome) -> u8 {
    match o {
        Outcome::Ok => 0,
        Outcome::Error => 1,
        Outcome::Unknown => 2,
    }
}

/// Little-endian fixed fields: channel, seq, id, reference, receiver, epoch, sender, n,
/// at_ms, kind.
fn encode_recv(r: &RecvRecord) -> [u8; RECV_SIZE] {
    let mut b = [0u8; RECV_SIZE];
    b[0..8].copy_from_slice(&r.channel.to_le_bytes());
    b[8..16].copy_from_slice(&r.seq.to_le_bytes());
    b[16..24].copy_from_slice(&r.id.to_le_bytes());
    b[24..32].copy_from_slice(&r.reference.to_le_bytes());
    b[32..36].copy_from_slice(&r.receiver.to_le_bytes());
    b[36..40].copy_from_slice(&r.epoch.to_le_bytes());
    b[40..44].copy_from_slice(&r.sender.to_le_bytes());
    b[44..48].copy_from_slice(&r.n.to_le_bytes());
    b[48..52].copy_from_slice(&r.at_ms.to_le_bytes());
    b[52] = match r.kind {
        RecvKind::Start => 0,
        RecvKind::Resume => 1,
        RecvKind::Message => 2,
        RecvKind::Edit => 3,
        RecvKind::Delete => 4,
    };
    b
}

fn decode_recv(b: &[u8]) -> Option<RecvRecord> {
    let u =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    let l =
        |i: usize| -> Option<i64> { Some(i64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    Some(RecvRecord {
        channel: l(0)?,
        seq: l(8)?,
        id: l(16)?,
        reference: l(24)?,
        receiver: u(32)?,
        epoch: u(36)?,
        sender: u(40)?,
        n: u(44)?,
        at_ms: u(48)?,
        kind: match b.get(52)? {
            0 => RecvKind::Start,
            1 => RecvKind::Resume,
            2 => RecvKind::Message,
            3 => RecvKind::Edit,
            4 => RecvKind::Delete,
            _ => return None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_bytes() {
        for (i, outcome) in [Outcome::Ok, Outcome::Error, Outcome::Unknown]
            .into_iter()
            .enumerate()
        {
            let s = SendRecord {
                channel: -5 - i as i64,
                seq: i64::MAX - i as i64,
                id: 1 << 40,
                sender: u32::MAX,
                n: 7,
                at_ms: 123_456,
                outcome,
            };
            assert_eq!(decode_send(&encode_send(&s)), Some(s));
        }
        for (i, kind) in [
            RecvKind::Start,
            RecvKind::Resume,
            RecvKind::Message,
            RecvKind::Edit,
            RecvKind::Delete,
        ]
        .into_iter()
        .enumerate()
        {
            let r = RecvRecord {
                channel: 3,
                seq: 40 + i as i64,
                id: -1,
                reference: 99,
                receiver: 12,
                epoch: 2,
                sender: u32::MAX,
                n: 5,
                at_ms: u32::MAX,
                kind,
            };
            assert_eq!(decode_recv(&encode_recv(&r)), Some(r));
        }
        let mut bad = encode_recv(&RecvRecord {
            channel: 1,
            seq: 1,
            id: 1,
            reference: 0,
            receiver: 1,
            epoch: 1,
            sender: 0,
            n: 1,
            at_ms: 0,
            kind: RecvKind::Message,
        });
        bad[52] = 9;
        assert_eq!(decode_recv(&bad), None);
    }

    #[test]
    fn a_damaged_spill_file_is_an_error_not_a_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HistoryStore::spilled(&dir.path().join("h")).unwrap();
        let r = RecvRecord {
            channel: 1,
            seq: 1,
            id: 1,
            reference: 0,
            receiver: 1,
            epoch: 1,
            sender: 0,
            n: 1,
            at_ms: 0,
            kind: RecvKind::Message,
        };
        store.append(Vec::new(), vec![r]);
        let file = dir
            .path()
            .join("h")
            .join(format!("receives-{}.bin", bucket(1, 0)));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[52] = 200;
        std::fs::write(&file, bytes).unwrap();
        let e = store.for_each_group(1000, |_| {}).unwrap_err();
        assert!(e.to_string().contains("not one this build wrote"), "{e}");
    }
}
