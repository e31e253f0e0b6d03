//! [`RamFlash`]: NOR flash simulated in RAM, with power-loss injection.
//!
//! Semantics follow real NOR flash: erase sets a whole sector to `0xFF`;
//! a write can only clear bits (the stored byte becomes `old & new`);
//! writes must be aligned to [`RamFlash::WRITE_SIZE`].
//!
//! Power loss: [`RamFlash::cut_power_after`] gives a budget of bytes that
//! may still be programmed or erased. The operation that exhausts it is
//! torn: a write stores only its first bytes, an erase resets only the
//! first bytes of the sector and scrambles the next few (bits in the
//! middle of an erase are indeterminate). From then on every operation
//! fails with [`RamFlashError::PowerLost`] until [`RamFlash::power_on`].
//!
//! Wear: erases are counted per sector, and bytes programmed over an
//! already programmed byte (a journal bug: it only writes erased space)
//! are counted in [`RamFlash::overwrites`].

use alloc::vec;
use alloc::vec::Vec;
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Errors of the simulated flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamFlashError {
    /// Power was cut; nothing works until `power_on`.
    PowerLost,
    /// Misaligned or out of bounds.
    Bounds,
}

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            RamFlashError::PowerLost => NorFlashErrorKind::Other,
            RamFlashError::Bounds => NorFlashErrorKind::OutOfBounds,
        }
    }
}

/// NOR flash in RAM with 4 KiB sectors.
pub type RamFlash = SizedRamFlash<4096>;

/// NOR flash in RAM with `SECTOR`-byte sectors. Memory for a sector is
/// allocated on its first write, so a large, mostly erased flash is cheap.
#[derive(Debug, Clone)]
pub struct SizedRamFlash<const SECTOR: usize> {
    /// `None` = erased (all 0xFF).
    mem: Vec<Option<Vec<u8>>>,
    budget: Option<usize>,
    dead: bool,
    erases: Vec<u32>,
    overwrites: u64,
    bytes_written: u64,
}

impl<const SECTOR: usize> SizedRamFlash<SECTOR> {
    /// Sector size, bytes.
    pub const SECTOR: usize = SECTOR;

    /// An erased flash of `sectors` sectors.
    pub fn new(sectors: usize) -> Self {
        Self {
            mem: vec![None; sectors],
            budget: None,
            dead: false,
            erases: vec![0; sectors],
            overwrites: 0,
            bytes_written: 0,
        }
    }

    /// Power dies after `bytes` more bytes are programmed or erased.
    pub fn cut_power_after(&mut self, bytes: usize) {
        self.budget = Some(bytes);
    }

    /// Restores power (the contents stay as the cut left them).
    pub fn power_on(&mut self) {
        self.dead = false;
        self.budget = None;
    }

    /// True once a power cut happened (and before `power_on`).
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Erase count of each sector.
    pub fn erase_counts(&self) -> &[u32] {
        &self.erases
    }

    /// Bytes programmed (to a value other than 0xFF) over a byte that was
    /// not erased.
    pub fn overwrites(&self) -> u64 {
        self.overwrites
    }

    /// Bytes programmed so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Consumes budget; returns how many of `n` bytes happen before the cut.
    fn spend(&mut self, n: usize) -> usize {
        match &mut self.budget {
            None => n,
            Some(b) if *b >= n => {
                *b -= n;
                n
            }
            Some(b) => {
                let done = *b;
                *b = 0;
                self.dead = true;
                done
            }
        }
    }
}

impl<const SECTOR: usize> ErrorType for SizedRamFlash<SECTOR> {
    type Error = RamFlashError;
}

impl<const SECTOR: usize> ReadNorFlash for SizedRamFlash<SECTOR> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if self.dead {
            return Err(RamFlashError::PowerLost);
        }
        let o = offset as usize;
        if o + bytes.len() > self.capacity() {
            return Err(RamFlashError::Bounds);
        }
        let mut done = 0;
        while done < bytes.len() {
            let at = o + done;
            let (sec, off) = (at / SECTOR, at % SECTOR);
            let n = (SECTOR - off).min(bytes.len() - done);
            match &self.mem[sec] {
                Some(m) => bytes[done..done + n].copy_from_slice(&m[off..off + n]),
                None => bytes[done..done + n].fill(0xFF),
            }
            done += n;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len() * SECTOR
    }
}

impl<const SECTOR: usize> NorFlash for SizedRamFlash<SECTOR> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = Self::SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if self.dead {
            return Err(RamFlashError::PowerLost);
        }
        let (f, t) = (from as usize, to as usize);
        if f % SECTOR != 0 || t % SECTOR != 0 || t > self.capacity() || f > t {
            return Err(RamFlashError::Bounds);
        }
        for s in (f..t).step_by(SECTOR) {
            let sec = s / SECTOR;
            let done = self.spend(SECTOR);
            self.erases[sec] += 1;
            if done == SECTOR {
                self.mem[sec] = None;
                continue;
            }
            let m = self.mem[sec].get_or_insert_with(|| vec![0xFF; SECTOR]);
            m[..done].fill(0xFF);
            // Indeterminate bits where the erase stopped.
            let end = (done + 16).min(SECTOR);
            for (i, b) in m[done..end].iter_mut().enumerate() {
                *b ^= 0x5A ^ (i as u8);
            }
            return Err(RamFlashError::PowerLost);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        if self.dead {
            return Err(RamFlashError::PowerLost);
        }
        let o = offset as usize;
        if !o.is_multiple_of(Self::WRITE_SIZE)
            || !bytes.len().is_multiple_of(Self::WRITE_SIZE)
            || o + bytes.len() > self.capacity()
        {
            return Err(RamFlashError::Bounds);
        }
        let done = self.spend(bytes.len());
        for (i, b) in bytes[..done].iter().enumerate() {
            let at = o + i;
            let m = self.mem[at / SECTOR].get_or_insert_with(|| vec![0xFF; SECTOR]);
            let m = &mut m[at % SECTOR];
            if *m != 0xFF && *b != 0xFF {
                self.overwrites += 1;
            }
            *m &= *b;
        }
        self.bytes_written += done as u64;
        if done < bytes.len() {
            return Err(RamFlashError::PowerLost);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_clear_bits_and_a_cut_tears_the_write() {
        let mut f = RamFlash::new(2);
        f.write(0, &[0x0F, 0xF0, 0xFF, 0x00]).unwrap();
        f.write(0, &[0xFF, 0xFF, 0x0F, 0xFF]).unwrap();
        let mut b = [0u8; 4];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0x0F, 0xF0, 0x0F, 0x00]);
        assert_eq!(f.overwrites(), 0);
        f.cut_power_after(2);
        assert_eq!(f.write(4, &[1, 2, 3, 4]), Err(RamFlashError::PowerLost));
        assert_eq!(f.read(4, &mut b), Err(RamFlashError::PowerLost));
        f.power_on();
        f.read(4, &mut b).unwrap();
        assert_eq!(b, [1, 2, 0xFF, 0xFF]);
    }
}
