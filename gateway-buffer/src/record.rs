//! Byte layouts of everything the buffer keeps in sled, and their codecs.
//! Pure: no I/O. The layouts are documented in the parent module
//! (`buffer/mod.rs`, "On-disk format"); this file is the one place that
//! writes and reads them.
//!
//! Every value ends in a CRC-32 (IEEE, little-endian) of the bytes before it;
//! [`unseal`] checks it before any field is read. All integers are
//! little-endian except keys, which are big-endian so that sled's byte order
//! is numeric order.

use super::FrameKey;
use mrv_shared::ids::DeviceId;
use std::borrow::Cow;

/// Key prefix of data batches: `b'd'` + batch id (u64 BE).
pub const DATA_PREFIX: u8 = b'd';
/// Key prefix of events: `b'e'` + event id (u64 BE).
pub const EVENT_PREFIX: u8 = b'e';
/// Key prefix of device records: `b'v'` + device id bytes.
pub const DEVICE_PREFIX: u8 = b'v';
/// Key of the totals record.
pub const TOTALS_KEY: &[u8] = b"m/totals";
/// Key of the "reported" cursor.
pub const REPORTED_KEY: &[u8] = b"m/cursor/reported";
/// Key of the "delivered" cursor.
pub const DELIVERED_KEY: &[u8] = b"m/cursor/delivered";
/// Key of the "events delivered" cursor.
pub const EVENTS_DELIVERED_KEY: &[u8] = b"m/cursor/events_delivered";
/// Length of a batch or event key.
pub const ID_KEY_LEN: usize = 9;

/// Batch value magic.
pub const BATCH_MAGIC: [u8; 2] = *b"MB";
/// Version of every record layout in this file.
pub const RECORD_VERSION: u8 = 1;
/// Length of the batch header.
pub const BATCH_HEADER_LEN: usize = 48;
/// Length of an entry header (receipt time + frame length).
pub const ENTRY_HEADER_LEN: usize = 12;
/// Length of the trailing CRC.
pub const CRC_LEN: usize = 4;
/// Batch flag: the payload is `raw length (u32)` + raw deflate of the entries.
pub const FLAG_DEFLATE: u8 = 0x01;
/// Largest inflated payload accepted (batches are split near 64 KiB, one
/// frame is at most 64 KiB).
const MAX_RAW_PAYLOAD: usize = 16 << 20;

/// Why a stored value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than its fixed part.
    #[error("record is {0} bytes, too short")]
    TooShort(usize),
    /// Trailing CRC does not match.
    #[error("record checksum {stored:#010x} does not match computed {computed:#010x}")]
    BadChecksum {
        /// CRC in the record.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// Not a batch (magic) or an unknown layout version.
    #[error("unknown record layout (magic or version)")]
    UnknownLayout,
    /// Lengths inside the record disagree with its size.
    #[error("record lengths are inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Appends the CRC of `v` to it.
pub fn seal(mut v: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Checks the trailing CRC and returns the bytes before it.
pub fn unseal(v: &[u8]) -> Result<&[u8], RecordError> {
    if v.len() < CRC_LEN {
        return Err(RecordError::TooShort(v.len()));
    }
    let (body, crc) = v.split_at(v.len() - CRC_LEN);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(RecordError::BadChecksum { stored, computed });
    }
    Ok(body)
}

/// Key of a data batch.
pub fn batch_key(id: u64) -> [u8; ID_KEY_LEN] {
    id_key(DATA_PREFIX, id)
}

/// Key of an event.
pub fn event_key(id: u64) -> [u8; ID_KEY_LEN] {
    id_key(EVENT_PREFIX, id)
}

fn id_key(prefix: u8, id: u64) -> [u8; ID_KEY_LEN] {
    let mut k = [0u8; ID_KEY_LEN];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The id in a batch or event key.
pub fn id_of_key(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(1..ID_KEY_LEN)?.try_into().ok()?;
    (key.len() == ID_KEY_LEN).then_some(u64::from_be_bytes(b))
}

/// Key of a device record.
pub fn device_key(device: &DeviceId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + device.as_str().len());
    k.push(DEVICE_PREFIX);
    k.extend_from_slice(device.as_str().as_bytes());
    k
}

/// A little-endian field reader over a checked record body.
struct Fields<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(b: &'a [u8]) -> Self {
        Fields { b, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or(RecordError::TooShort(self.b.len()))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn version(&mut self) -> Result<(), RecordError> {
        if self.u8()? != RECORD_VERSION {
            return Err(RecordError::UnknownLayout);
        }
        Ok(())
    }
    fn end(&self) -> Result<(), RecordError> {
        if self.pos != self.b.len() {
            return Err(RecordError::Inconsistent("bytes after the last field"));
        }
        Ok(())
    }
}

/// The fixed header of a batch value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Frames in the batch.
    pub count: u32,
    /// Readings (samples) in the batch.
    pub readings: u32,
    /// Frames appended to the buffer before this batch, since it was created.
    pub cum_frames_before: u64,
    /// Readings appended before this batch, since the buffer was created.
    pub cum_readings_before: u64,
    /// Lowest receipt time in the batch.
    pub min_received_ms: u64,
    /// Highest receipt time in the batch.
    pub max_received_ms: u64,
}

/// Builds one batch value.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    header: BatchHeader,
}

impl BatchWriter {
    /// An empty batch that continues the cumulative counters.
    pub fn new(cum_frames_before: u64, cum_readings_before: u64) -> Self {
        let mut buf = Vec::with_capacity(16 * 1024);
        buf.resize(BATCH_HEADER_LEN, 0);
        BatchWriter {
            buf,
            header: BatchHeader {
                count: 0,
                readings: 0,
                cum_frames_before,
                cum_readings_before,
                min_received_ms: u64::MAX,
                max_received_ms: 0,
            },
        }
    }

    /// Adds one frame in its canonical binary form.
    pub fn push(&mut self, received_ms: u64, frame: &[u8], readings: u32) {
        self.buf.extend_from_slice(&received_ms.to_le_bytes());
        let len = u32::try_from(frame.len()).expect("frames are at most MAX_FRAME_BYTES");
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(frame);
        let h = &mut self.header;
        h.count += 1;
        h.readings += readings;
        h.min_received_ms = h.min_received_ms.min(received_ms);
        h.max_received_ms = h.max_received_ms.max(received_ms);
    }

    /// Frames so far.
    pub fn count(&self) -> u32 {
        self.header.count
    }

    /// Length of the finished value before deflating (an upper bound).
    pub fn value_len(&self) -> usize {
        self.buf.len() + CRC_LEN
    }

    /// The finished value: header, entries (deflated when that is smaller),
    /// CRC.
    pub fn finish(mut self) -> Vec<u8> {
        let h = self.header;
        let raw = &self.buf[BATCH_HEADER_LEN..];
        let deflated = deflate(raw);
        let mut flags = 0;
        if let Some(d) = deflated.filter(|d| d.len() + 4 < raw.len()) {
            let raw_len = u32::try_from(raw.len()).expect("batches are split well below 4 GiB");
            self.buf.truncate(BATCH_HEADER_LEN);
            self.buf.extend_from_slice(&raw_len.to_le_bytes());
            self.buf.extend_from_slice(&d);
            flags |= FLAG_DEFLATE;
        }
        let payload = u32::try_from(self.buf.len() - BATCH_HEADER_LEN)
            .expect("batches are split well below 4 GiB");
        let mut head = Vec::with_capacity(BATCH_HEADER_LEN);
        head.extend_from_slice(&BATCH_MAGIC);
        head.push(RECORD_VERSION);
        head.push(flags);
        head.extend_from_slice(&h.count.to_le_bytes());
        head.extend_from_slice(&h.readings.to_le_bytes());
        head.extend_from_slice(&h.cum_frames_before.to_le_bytes());
        head.extend_from_slice(&h.cum_readings_before.to_le_bytes());
        head.extend_from_slice(&h.min_received_ms.to_le_bytes());
        head.extend_from_slice(&h.max_received_ms.to_le_bytes());
        head.extend_from_slice(&payload.to_le_bytes());
        debug_assert_eq!(head.len(), BATCH_HEADER_LEN);
        self.buf[..BATCH_HEADER_LEN].copy_from_slice(&head);
        seal(self.buf)
    }
}

fn deflate(raw: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(raw.len() / 2),
        flate2::Compression::fast(),
    );
    e.write_all(raw).ok()?;
    e.finish().ok()
}

/// A checked batch value (header read, payload not yet inflated).
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    /// Its header.
    pub header: BatchHeader,
    flags: u8,
    payload: &'a [u8],
}

/// Checks a batch value (CRC, magic, version, flags, lengths) and returns a view.
pub fn parse_batch(value: &[u8]) -> Result<BatchView<'_>, RecordError> {
    let body = unseal(value)?;
    if body.len() < BATCH_HEADER_LEN {
        return Err(RecordError::TooShort(value.len()));
    }
    if body[..2] != BATCH_MAGIC || body[2] != RECORD_VERSION || body[3] & !FLAG_DEFLATE != 0 {
        return Err(RecordError::UnknownLayout);
    }
    let mut f = Fields::new(&body[4..BATCH_HEADER_LEN]);
    let header = BatchHeader {
        count: f.u32()?,
        readings: f.u32()?,
        cum_frames_before: f.u64()?,
        cum_readings_before: f.u64()?,
        min_received_ms: f.u64()?,
        max_received_ms: f.u64()?,
    };
    let payload = f.u32()? as usize;
    if payload != body.len() - BATCH_HEADER_LEN {
        return Err(RecordError::Inconsistent("payload length"));
    }
    Ok(BatchView {
        header,
        flags: body[3],
        payload: &body[BATCH_HEADER_LEN..],
    })
}

impl<'a> BatchView<'a> {
    /// The entry bytes, inflated if the batch is deflated.
    pub fn payload(&self) -> Result<Payload<'a>, RecordError> {
        let bytes = if self.flags & FLAG_DEFLATE == 0 {
            Cow::Borrowed(self.payload)
        } else {
            use std::io::Read;
            let mut f = Fields::new(self.payload);
            let raw_len = f.u32()? as usize;
            if raw_len > MAX_RAW_PAYLOAD {
                return Err(RecordError::Inconsistent("inflated length"));
            }
            let mut out = Vec::with_capacity(raw_len);
            flate2::read::DeflateDecoder::new(&self.payload[4..])
                .take(raw_len as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|_| RecordError::Inconsistent("deflated payload does not inflate"))?;
            if out.len() != raw_len {
                return Err(RecordError::Inconsistent("inflated length"));
            }
            Cow::Owned(out)
        };
        Ok(Payload {
            bytes,
            count: self.header.count,
        })
    }
}

/// A batch's entry bytes.
#[derive(Debug)]
pub struct Payload<'a> {
    bytes: Cow<'a, [u8]>,
    count: u32,
}

impl Payload<'_> {
    /// The entries: `(received_ms, frame bytes)`, in order.
    pub fn entries(&self) -> EntryIter<'_> {
        EntryIter {
            rest: &self.bytes,
            left: self.count,
        }
    }
}

/// Iterator over a batch's entries; an inconsistent length ends it with an error.
#[derive(Debug)]
pub struct EntryIter<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> Iterator for EntryIter<'a> {
    type Item = Result<(u64, &'a [u8]), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            if self.rest.is_empty() {
                return None;
            }
            self.rest = &[];
            return Some(Err(RecordError::Inconsistent("bytes after the last entry")));
        }
        self.left -= 1;
        let mut f = Fields::new(self.rest);
        let parsed = (|| -> Result<(u64, &'a [u8]), RecordError> {
            let rx = f.u64()?;
            let len = f.u32()? as usize;
            let frame = f.take(len)?;
            Ok((rx, frame))
        })();
        match parsed {
            Ok(item) => {
                self.rest = &self.rest[f.pos..];
                Some(Ok(item))
            }
            Err(_) => {
                self.left = 0;
                self.rest = &[];
                Some(Err(RecordError::Inconsistent("entry runs past the batch")))
            }
        }
    }
}

/// The totals record: counters that make start-up and `stats()` free of scans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Id the next data batch gets (ids start at 1).
    pub next_batch_id: u64,
    /// Frames ever appended.
    pub cum_frames: u64,
    /// Readings ever appended.
    pub cum_readings: u64,
    /// Frames kept (appended minus pruned).
    pub kept_frames: u64,
    /// Readings kept.
    pub kept_readings: u64,
    /// Bytes kept: batch values plus their keys.
    pub kept_bytes: u64,
    /// Id the next event gets (ids start at 1).
    pub next_event_id: u64,
}

impl Totals {
    /// Totals of a new, empty buffer.
    pub fn empty() -> Self {
        Totals {
            next_batch_id: 1,
            next_event_id: 1,
            ..Totals::default()
        }
    }

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![RECORD_VERSION];
        for x in [
            self.next_batch_id,
            self.cum_frames,
            self.cum_readings,
            self.kept_frames,
            self.kept_readings,
            self.kept_bytes,
            self.next_event_id,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        seal(v)
    }

    /// Decodes the record.
    pub fn decode(value: &[u8]) -> Result<Self, RecordError> {
        let mut f = Fields::new(unseal(value)?);
        f.version()?;
        let t = Totals {
            next_batch_id: f.u64()?,
            cum_frames: f.u64()?,
            cum_readings: f.u64()?,
            kept_frames: f.u64()?,
            kept_readings: f.u64()?,
            kept_bytes: f.u64()?,
            next_event_id: f.u64()?,
        };
        f.end()?;
        Ok(t)
    }
}

/// A frame cursor with the cumulative counts up to and including its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorRecord {
    /// The frame it points at.
    pub key: FrameKey,
    /// Frames appended up to and including that frame.
    pub cum_frames: u64,
    /// Readings appended up to and including that frame.
    pub cum_readings: u64,
}

impl CursorRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![RECORD_VERSION];
        v.extend_from_slice(&self.key.batch.to_le_bytes());
        v.extend_from_slice(&self.key.index.to_le_bytes());
        v.extend_from_slice(&self.cum_frames.to_le_bytes());
        v.extend_from_slice(&self.cum_readings.to_le_bytes());
        seal(v)
    }

    /// Decodes the record.
    pub fn decode(value: &[u8]) -> Result<Self, RecordError> {
        let mut f = Fields::new(unseal(value)?);
        f.version()?;
        let c = CursorRecord {
            key: FrameKey {
                batch: f.u64()?,
                index: f.u32()?,
            },
            cum_frames: f.u64()?,
            cum_readings: f.u64()?,
        };
        f.end()?;
        Ok(c)
    }
}

/// Encodes an id cursor (events delivered).
pub fn encode_id(id: u64) -> Vec<u8> {
    let mut v = vec![RECORD_VERSION];
    v.extend_from_slice(&id.to_le_bytes());
    seal(v)
}

/// Decodes an id cursor.
pub fn decode_id(value: &[u8]) -> Result<u64, RecordError> {
    let mut f = Fields::new(unseal(value)?);
    f.version()?;
    let id = f.u64()?;
    f.end()?;
    Ok(id)
}

/// A device's stored bookkeeping: sequence state plus counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Highest contiguous stored seq.
    pub contiguous: u64,
    /// Highest boot counter of a stored frame.
    pub boot: u32,
    /// Stored seqs above `contiguous`, as ascending inclusive ranges.
    pub above: Vec<(u64, u64)>,
    /// Frames stored since the device was first seen (pruning does not subtract).
    pub frames: u64,
    /// Readings stored since the device was first seen.
    pub readings: u64,
    /// First receipt time of a stored frame.
    pub first_received_ms: Option<u64>,
    /// Last receipt time of a stored frame.
    pub last_received_ms: Option<u64>,
}

impl DeviceRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(53 + 16 * self.above.len());
        v.push(RECORD_VERSION);
        v.extend_from_slice(&self.contiguous.to_le_bytes());
        v.extend_from_slice(&self.boot.to_le_bytes());
        v.extend_from_slice(&self.frames.to_le_bytes());
        v.extend_from_slice(&self.readings.to_le_bytes());
        v.extend_from_slice(&self.first_received_ms.unwrap_or(u64::MAX).to_le_bytes());
        v.extend_from_slice(&self.last_received_ms.unwrap_or(u64::MAX).to_le_bytes());
        let n = u32::try_from(self.above.len()).expect("fewer than 2^32 out-of-order ranges");
        v.extend_from_slice(&n.to_le_bytes());
        for (lo, hi) in &self.above {
            v.extend_from_slice(&lo.to_le_bytes());
            v.extend_from_slice(&hi.to_le_bytes());
        }
        seal(v)
    }

    /// Decodes the record.
    pub fn decode(value: &[u8]) -> Result<Self, RecordError> {
        let mut f = Fields::new(unseal(value)?);
        f.version()?;
        let opt = |x: u64| (x != u64::MAX).then_some(x);
        let mut r = DeviceRecord {
            contiguous: f.u64()?,
            boot: f.u32()?,
            frames: f.u64()?,
            readings: f.u64()?,
            first_received_ms: opt(f.u64()?),
            last_received_ms: opt(f.u64()?),
            above: Vec::new(),
        };
        let n = f.u32()? as usize;
        if n.checked_mul(16) != Some(f.b.len() - f.pos) {
            return Err(RecordError::Inconsistent("out-of-order range count"));
        }
        r.above = (0..n)
            .map(|_| Ok((f.u64()?, f.u64()?)))
            .collect::<Result<_, RecordError>>()?;
        f.end()?;
        Ok(r)
    }
}

/// Encodes an event record: version, JSON, CRC.
pub fn encode_event(json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + json.len() + CRC_LEN);
    v.push(RECORD_VERSION);
    v.extend_from_slice(json);
    seal(v)
}

/// Checks an event record and returns its JSON bytes.
pub fn decode_event(value: &[u8]) -> Result<&[u8], RecordError> {
    let body = unseal(value)?;
    match body.split_first() {
        Some((&RECORD_VERSION, json)) => Ok(json),
        Some(_) => Err(RecordError::UnknownLayout),
        None => Err(RecordError::TooShort(value.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_and_a_flipped_bit_is_caught() {
        let mut w = BatchWriter::new(10, 100);
        w.push(5, b"abc", 2);
        w.push(3, b"", 0);
        let len = w.value_len();
        let v = w.finish();
        assert_eq!(len, BATCH_HEADER_LEN + 2 * ENTRY_HEADER_LEN + 3 + CRC_LEN);
        assert!(v.len() <= len, "deflate is used only when it is smaller");
        let b = parse_batch(&v).expect("valid batch");
        assert_eq!(
            b.header,
            BatchHeader {
                count: 2,
                readings: 2,
                cum_frames_before: 10,
                cum_readings_before: 100,
                min_received_ms: 3,
                max_received_ms: 5
            }
        );
        let p = b.payload().expect("payload");
        let e: Vec<_> = p.entries().collect::<Result<_, _>>().expect("entries");
        assert_eq!(e, vec![(5, &b"abc"[..]), (3, &b""[..])]);
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x10;
            assert!(parse_batch(&bad).is_err(), "flip at byte {i} not caught");
        }
    }

    #[test]
    fn a_repetitive_batch_is_deflated_and_reads_back() {
        let mut w = BatchWriter::new(0, 0);
        let frame = b"MF same site same device same firmware".repeat(3);
        for i in 0..100 {
            w.push(i, &frame, 1);
        }
        let raw_len = w.value_len();
        let v = w.finish();
        assert!(v.len() * 4 < raw_len, "{} vs {raw_len}", v.len());
        assert_eq!(v[3], FLAG_DEFLATE);
        let b = parse_batch(&v).expect("valid batch");
        let p = b.payload().expect("inflates");
        let e: Vec<_> = p.entries().collect::<Result<_, _>>().expect("entries");
        assert_eq!(e.len(), 100);
        assert!(
            e.iter()
                .enumerate()
                .all(|(i, (rx, f))| *rx == i as u64 && *f == &frame[..])
        );
    }

    #[test]
    fn fixed_records_round_trip() {
        let t = Totals {
            next_batch_id: 7,
            cum_frames: 1,
            cum_readings: 2,
            kept_frames: 3,
            kept_readings: 4,
            kept_bytes: 5,
            next_event_id: 6,
        };
        assert_eq!(Totals::decode(&t.encode()), Ok(t));
        let c = CursorRecord {
            key: FrameKey { batch: 9, index: 3 },
            cum_frames: 11,
            cum_readings: 12,
        };
        assert_eq!(CursorRecord::decode(&c.encode()), Ok(c));
        let d = DeviceRecord {
            contiguous: 4,
            boot: 2,
            above: vec![(6, 6), (9, 12)],
            frames: 6,
            readings: 60,
            first_received_ms: Some(1),
            last_received_ms: None,
        };
        assert_eq!(DeviceRecord::decode(&d.encode()), Ok(d));
        assert_eq!(decode_id(&encode_id(42)), Ok(42));
        assert_eq!(decode_event(&encode_event(b"{}")), Ok(&b"{}"[..]));
    }

    #[test]
    fn keys_sort_numerically() {
        assert!(batch_key(255) < batch_key(256));
        assert_eq!(id_of_key(&batch_key(0x0102)), Some(0x0102));
        assert!(batch_key(u64::MAX) < event_key(0));
    }
}
