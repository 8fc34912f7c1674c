//! The WebSocket view of a link's downstream (server → client) bytes, for the `frame_*`
//! toxics: it recognises the HTTP upgrade, then follows RFC 6455 frames.
//!
//! ```text
//!  bytes ─▶ Head: HTTP response head (passed on as it comes)
//!             101 + `Upgrade: websocket` ─▶ Frames      anything else ─▶ Opaque (passed)
//!           Frames, no frame toxic acting: headers parsed, payload skipped, bytes passed
//!           Frames, a frame toxic acting:  each data message (its fragments) held until
//!             complete, then one Chunk with `frame: Some(Frame)`; control frames held
//!             until complete, then passed (a control frame inside a fragmented message
//!             goes out before the message, which RFC 6455 §5.4 allows)
//! ```
//!
//! Boundaries are followed for the whole connection even while no frame toxic acts, so a
//! toxic added later finds the next frame start. Bytes already passed are never held: a
//! message in progress when a toxic arrives passes untouched, and held bytes go out at
//! once when the last frame toxic goes ([`Framer::release`]). Server frames are unmasked;
//! a masked one is unmasked for inspection and passed on as it came. With
//! permessage-deflate the payload of a message with RSV1 is compressed: it is never
//! decompressed, so it matches no JSON pointer (`nth`/`every` without `match` still count
//! it). Messages over [`MAX_HELD`] pass untouched.

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::Chunk;

/// Largest HTTP response head inspected; a longer one makes the connection opaque.
const MAX_HEAD: usize = 16 * 1024;
/// Largest message held whole for a frame toxic; bigger ones pass (bounded memory).
pub(crate) const MAX_HELD: u64 = 16 * 1024 * 1024;

/// Where a held message's payload lies in its chunk (one span per fragment).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    mask: Option<[u8; 4]>,
}

/// A complete data message in a chunk: its frames' bytes, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// 1 text, 2 binary.
    pub opcode: u8,
    /// RSV1 on its first frame: compressed by permessage-deflate.
    pub compressed: bool,
    spans: Vec<Span>,
}

impl Frame {
    /// The (unmasked) payload, or `None` when compressed.
    pub(crate) fn payload(&self, data: &Bytes) -> Option<Vec<u8>> {
        if self.compressed {
            return None;
        }
        let mut p = Vec::with_capacity(self.spans.iter().map(|s| s.end - s.start).sum());
        for s in &self.spans {
            let bytes = &data[s.start..s.end];
            match s.mask {
                None => p.extend_from_slice(bytes),
                Some(m) => p.extend(bytes.iter().enumerate().map(|(i, b)| b ^ m[i % 4])),
            }
        }
        Some(p)
    }

    /// Position in the chunk of the payload's `offset`-th byte (the last byte when the
    /// payload is shorter); `None` for an empty payload.
    pub(crate) fn payload_index(&self, offset: u64) -> Option<usize> {
        let mut left = offset;
        let mut last = None;
        for s in self.spans.iter().filter(|s| s.end > s.start) {
            let len = (s.end - s.start) as u64;
            if left < len {
                return Some(s.start + left as usize);
            }
            left -= len;
            last = Some(s.end - 1);
        }
        last
    }
}

#[derive(Debug)]
enum State {
    /// Reading the HTTP response head (a copy; the bytes themselves pass).
    Head(Vec<u8>),
    /// After a 101 upgrade to websocket.
    Frames,
    /// Not a WebSocket connection: bytes pass, nothing is parsed.
    Opaque,
}

/// The frame being read.
#[derive(Debug, Default)]
struct Cur {
    /// Header bytes so far (at most 14).
    hdr: [u8; 14],
    hdr_len: usize,
    /// Header complete; `left` payload bytes to come.
    in_payload: bool,
    left: u64,
    /// Its bytes are held (for a frame toxic) rather than passed.
    held: bool,
}

/// Per-connection WebSocket parser of the downstream direction. See the module doc.
#[derive(Debug)]
pub(crate) struct Framer {
    state: State,
    cur: Cur,
    /// Inside a fragmented data message (its first frame had no FIN).
    in_message: bool,
    /// The message being read is held (it started while a frame toxic acted).
    msg_held: bool,
    msg: BytesMut,
    msg_opcode: u8,
    msg_compressed: bool,
    spans: Vec<Span>,
    /// A held control frame.
    ctl: BytesMut,
    /// The upgrade negotiated permessage-deflate.
    pub deflate: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Framer {
            state: State::Head(Vec::new()),
            cur: Cur::default(),
            in_message: false,
            msg_held: false,
            msg: BytesMut::new(),
            msg_opcode: 0,
            msg_compressed: false,
            spans: Vec::new(),
            ctl: BytesMut::new(),
            deflate: false,
        }
    }
}

/// What a finished HTTP response head says: (websocket upgrade, permessage-deflate).
fn read_head(head: &[u8]) -> (bool, bool) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_101 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .is_some_and(|code| code == "101");
    let (mut upgrade, mut deflate) = (false, false);
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim().to_ascii_lowercase());
        if name.eq_ignore_ascii_case("upgrade") && value == "websocket" {
            upgrade = true;
        }
        if name.eq_ignore_ascii_case("sec-websocket-extensions")
            && value.contains("permessage-deflate")
        {
            deflate = true;
        }
    }
    (status_101 && upgrade, deflate)
}

/// Header length once its first two bytes are known.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

impl Framer {
    /// Whether the connection is known not to be a WebSocket (its bytes may bypass the
    /// framer, e.g. by splice).
    pub(crate) fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    /// Whether bytes are held.
    pub(crate) fn holds(&self) -> bool {
        !self.msg.is_empty() || !self.ctl.is_empty()
    }

    /// Give up holding: what is held goes to `out` as plain bytes (control frame first,
    /// as it would have gone out before the message), and the frames in progress pass.
    pub(crate) fn release(&mut self, due: Instant, out: &mut Vec<Chunk>) {
        for buf in [&mut self.ctl, &mut self.msg] {
            if !buf.is_empty() {
                out.push(Chunk::plain(buf.split().freeze(), due));
            }
        }
        self.msg_held = false;
        self.cur.held = false;
        self.spans.clear();
    }

    /// Feed one chunk; `assemble`: a frame toxic acts, so hold and emit whole messages.
    /// Everything that may go on now is pushed to `out`, in stream order.
    pub(crate) fn feed(&mut self, chunk: Chunk, assemble: bool, out: &mut Vec<Chunk>) {
        let due = chunk.due;
        if !assemble && self.holds() {
            self.release(due, out);
        }
        let data = chunk.data;
        let mut pos = 0;
        if let State::Head(head) = &mut self.state {
            let before = head.len();
            let room = MAX_HEAD.saturating_sub(before);
            head.extend_from_slice(&data[..data.len().min(room)]);
            let prefix = &head[..head.len().min(7)];
            if !b"HTTP/1.".starts_with(prefix) {
                self.state = State::Opaque;
            } else if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let (ws, deflate) = read_head(&head[..end]);
                pos = end + 4 - before;
                self.deflate = deflate;
                self.state = if ws { State::Frames } else { State::Opaque };
            } else if head.len() >= MAX_HEAD {
                self.state = State::Opaque;
            } else {
                out.push(Chunk::plain(data, due));
                return;
            }
        }
        if matches!(self.state, State::Opaque) {
            out.push(Chunk::plain(data, due));
            return;
        }
        let mut pass_from = 0;
        while pos < data.len() {
            if !self.cur.in_payload && self.cur.hdr_len == 0 {
                self.start_frame(data[pos], assemble);
            }
            let take = if self.cur.in_payload {
                (data.len() - pos).min(usize::try_from(self.cur.left).unwrap_or(usize::MAX))
            } else {
                let need = if self.cur.hdr_len < 2 {
                    2 - self.cur.hdr_len
                } else {
                    header_len(self.cur.hdr[1]) - self.cur.hdr_len
                };
                let n = need.min(data.len() - pos);
                let at = self.cur.hdr_len;
                self.cur.hdr[at..at + n].copy_from_slice(&data[pos..pos + n]);
                self.cur.hdr_len += n;
                n
            };
            let bytes = &data[pos..pos + take];
            if self.cur.held {
                if pass_from < pos {
                    out.push(Chunk::plain(data.slice(pass_from..pos), due));
                }
                self.held_buf().extend_from_slice(bytes);
                pass_from = pos + take;
            }
            pos += take;
            if self.cur.in_payload {
                self.cur.left -= take as u64;
            } else if self.cur.hdr_len >= 2 && self.cur.hdr_len == header_len(self.cur.hdr[1]) {
                self.end_header(due, out);
            } else {
                continue;
            }
            if self.cur.in_payload && self.cur.left == 0 {
                self.end_frame(due, out);
            }
        }
        if pass_from < data.len() {
            out.push(Chunk::plain(data.slice(pass_from..), due));
        }
    }

    /// The buffer the current (held) frame goes to.
    fn held_buf(&mut self) -> &mut BytesMut {
        if self.cur.hdr[0] & 0x08 != 0 {
            &mut self.ctl
        } else {
            &mut self.msg
        }
    }

    /// A frame starts with byte `b0`: decide whether it is held.
    fn start_frame(&mut self, b0: u8, assemble: bool) {
        let opcode = b0 & 0x0F;
        self.cur.held = if opcode & 0x08 != 0 {
            assemble
        } else if opcode == 0 {
            self.in_message && self.msg_held
        } else {
            // A new data message (a server that starts one inside another is broken;
            // what was held of the old one is given up).
            self.msg_held = assemble;
            self.msg_opcode = opcode;
            self.msg_compressed = b0 & 0x40 != 0;
            self.spans.clear();
            assemble
        };
    }

    /// The header of the current frame is complete.
    fn end_header(&mut self, due: Instant, out: &mut Vec<Chunk>) {
        let h = &self.cur.hdr;
        let b1 = h[1];
        let (len, at) = match b1 & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                10,
            ),
            n => (u64::from(n), 2),
        };
        let mask = (b1 & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        self.cur.in_payload = true;
        self.cur.left = len;
        let data_frame = h[0] & 0x08 == 0;
        if self.cur.held && data_frame {
            if self.msg.len() as u64 + len > MAX_HELD {
                // Too big to hold: what is held (ending in this header) goes out now.
                out.push(Chunk::plain(self.msg.split().freeze(), due));
                self.msg_held = false;
                self.cur.held = false;
                self.spans.clear();
                return;
            }
            let start = self.msg.len();
            self.spans.push(Span {
                start,
                end: start + len as usize,
                mask,
            });
        }
    }

    /// The current frame is complete.
    fn end_frame(&mut self, due: Instant, out: &mut Vec<Chunk>) {
        let fin = self.cur.hdr[0] & 0x80 != 0;
        let control = self.cur.hdr[0] & 0x08 != 0;
        let held = self.cur.held;
        self.cur = Cur::default();
        if control {
            if held {
                out.push(Chunk::plain(self.ctl.split().freeze(), due));
            }
            return;
        }
        self.in_message = !fin;
        if fin && held {
            out.push(Chunk {
                data: self.msg.split().freeze(),
                due,
                frame: Some(Box::new(Frame {
                    opcode: self.msg_opcode,
                    compressed: self.msg_compressed,
                    spans: std::mem::take(&mut self.spans),
                })),
            });
        }
        if fin {
            self.msg_held = false;
        }
    }
}

/// Test helpers: server frames as bytes.
#[cfg(test)]
pub(crate) mod testing {
    /// One unmasked server frame.
    pub(crate) fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n < 65536 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// A server's upgrade response head.
    pub(crate) const UPGRADE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
}

#[cfg(test)]
mod tests {
    use super::testing::{UPGRADE, frame};
    use super::*;

    /// Feed `stream` in pieces of `step` bytes; return the chunks out.
    fn run(f: &mut Framer, stream: &[u8], step: usize, assemble: bool) -> Vec<Chunk> {
        let now = Instant::now();
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            f.feed(
                Chunk::plain(Bytes::copy_from_slice(piece), now),
                assemble,
                &mut out,
            );
        }
        out
    }

    fn joined(out: &[Chunk]) -> Vec<u8> {
        out.iter().flat_map(|c| c.data.iter().copied()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn whole_messages_come_out_at_every_split() {
        let big = vec![b'x'; 70_000];
        let mut stream = UPGRADE.to_vec();
        stream.extend(frame(true, 1, br#"{"a":1}"#));
        stream.extend(frame(false, 1, br#"{"b":"#)); // fragmented, a ping inside
        stream.extend(frame(true, 9, b"ping"));
        stream.extend(frame(true, 0, b"2}"));
        stream.extend(frame(true, 2, &vec![7u8; 300])); // 16-bit length
        stream.extend(frame(true, 2, &big)); // 64-bit length
        for step in [1, 2, 3, 7, 64, 1000, 200_000] {
            let mut f = Framer::default();
            let out = run(&mut f, &stream, step, true);
            let msgs: Vec<Vec<u8>> = out
                .iter()
                .filter_map(|c| c.frame.as_ref().map(|fr| fr.payload(&c.data).unwrap()))
                .collect();
            assert_eq!(msgs.len(), 4, "step {step}");
            assert_eq!(msgs[0], br#"{"a":1}"#);
            assert_eq!(msgs[1], br#"{"b":2}"#);
            assert_eq!(msgs[2].len(), 300);
            assert_eq!(msgs[3], big);
            // The ping goes out whole, before the message it interrupted.
            let ping = frame(true, 9, b"ping");
            let i = out.iter().position(|c| c.data[..] == ping[..]).unwrap();
            let j = out.iter().position(|c| c.frame.is_some()).unwrap();
            assert!(i > j, "after the first message");
            assert!(out[i + 1].frame.is_some(), "right before the second");
            assert!(!f.holds());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tracking_passes_bytes_as_they_come_and_keeps_boundaries() {
        let mut stream = UPGRADE.to_vec();
        stream.extend(frame(true, 1, b"one"));
        let mut f = Framer::default();
        // Not assembling: each piece passes at once, unchanged.
        let out = run(&mut f, &stream[..stream.len() - 2], 5, false);
        assert!(out.iter().all(|c| c.frame.is_none()));
        // A toxic arrives mid-frame: the rest of that frame passes, the next is whole.
        let mut rest = stream[stream.len() - 2..].to_vec();
        rest.extend(frame(true, 1, b"two"));
        let out2 = run(&mut f, &rest, 3, true);
        assert_eq!(out2.iter().filter(|c| c.frame.is_some()).count(), 1);
        let mut all = joined(&out);
        all.extend(joined(&out2));
        let mut want = stream.clone();
        want.extend(frame(true, 1, b"two"));
        assert_eq!(all, want);
    }

    #[tokio::test(start_paused = true)]
    async fn release_gives_back_held_bytes_in_order() {
        let mut stream = UPGRADE.to_vec();
        stream.extend(frame(true, 1, b"hello world"));
        let mut f = Framer::default();
        let mut out = run(&mut f, &stream[..stream.len() - 4], 4, true);
        assert!(f.holds());
        out.extend(run(&mut f, &stream[stream.len() - 4..], 4, false));
        assert!(out.iter().all(|c| c.frame.is_none()));
        assert_eq!(joined(&out), stream);
    }

    #[tokio::test(start_paused = true)]
    async fn other_protocols_and_refused_upgrades_are_opaque() {
        for head in [
            &b"+OK\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n\x81\x01a",
        ] {
            let mut f = Framer::default();
            let out = run(&mut f, head, 3, true);
            assert!(f.is_opaque());
            assert_eq!(joined(&out), head);
            assert!(out.iter().all(|c| c.frame.is_none()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deflate_and_masks_are_understood() {
        let mut stream =
            b"HTTP/1.1 101 Switching\r\nupgrade: WebSocket\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
                .to_vec();
        let mut compressed = frame(true, 1, b"zz");
        compressed[0] |= 0x40;
        stream.extend(&compressed);
        // A masked frame (a broken server, or a client's): payload "hi" under mask 1,2,3,4.
        stream.extend([0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
        let mut f = Framer::default();
        let out = run(&mut f, &stream, 6, true);
        assert!(f.deflate);
        let msgs: Vec<_> = out
            .iter()
            .filter_map(|c| c.frame.as_ref().map(|f| (f, &c.data)))
            .collect();
        assert!(msgs[0].0.compressed);
        assert_eq!(msgs[0].0.payload(msgs[0].1), None);
        assert_eq!(msgs[1].0.payload(msgs[1].1).unwrap(), b"hi");
        assert_eq!(joined(&out), stream);
    }
}
